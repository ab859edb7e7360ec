"""The vmdev-vfio plugin: VFIO passthrough of PCI functions, mediated and AP devices.

* Claims ``/dev/vfio/<group>`` (every function of the IOMMU group) and
  ``/dev/vfio/devices/vfio<N>`` (one function, IOMMUFD); ``/dev/vfio/vfio`` is declined and
  stays a plain container device.
* Settings: ``hot_plug_vfio``, ``cold_plug_vfio``, ``pcie_root_port``, ``pcie_switch_port``,
  ``vfio_mode``, ``enable_iommu`` (see :mod:`vmdev_vfio.config`).
* Renders QEMU (``vfio-pci`` on root ports, switch ports, PCI bridges or the root bus; QMP hot
  plug), Cloud Hypervisor (``devices`` / ``vm.add-device``); Firecracker has no VFIO.
* Adds ``vmdev doctor``: is this host ready to pass a given ``/dev/vfio`` path?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmdev import hookimpl
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, ClhTarget, FirecrackerTarget, QemuTarget, RenderTarget
from vmdev_vfio import device as vfio_device
from vmdev_vfio import ports, render_api, render_qemu
from vmdev_vfio.config import read_config

if TYPE_CHECKING:
    import click


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    read_config(settings)


@hookimpl
def build_device(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> Device | None:
    if not vfio_device.claims(info.host_path):
        return None
    return vfio_device.build(info, host, read_config(settings))


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    return ports.reservation(settings, read_config(settings))


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if isinstance(device, ports.PortReservation):
        return ports.render(device, target) if isinstance(target, QemuTarget) else target.attach_type()
    if not isinstance(device, vfio_device.VFIODevice):
        return None
    if isinstance(target, FirecrackerTarget):
        raise render_api.refuse_firecracker(device)
    render_qemu.check_plan_rules(device, target)
    if isinstance(target, QemuTarget):
        return render_qemu.render(device, target, hotplug)
    if isinstance(target, ClhTarget):
        return render_api.render_clh(device, hotplug, read_config(target.settings).iommu)
    return None


@hookimpl
def register_commands(cli: click.Group) -> None:
    from vmdev_vfio.doctor import doctor_command

    cli.add_command(doctor_command)
