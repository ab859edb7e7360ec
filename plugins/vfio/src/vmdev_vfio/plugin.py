"""The vmdev-vfio plugin: VFIO passthrough of PCI functions, mediated and AP devices.

Hook implementations only; each delegates to one module of the family's template:

* ``settings.py``: the declared keys (``hot_plug_vfio``, ``cold_plug_vfio``, ``pcie_root_port``,
  ``pcie_switch_port``, ``vfio_mode`` from ``[runtime]``) and the rules across them (the QEMU
  backend's ``enable_iommu`` and ``confidential_guest`` are read, not declared);
* ``device.py``: the models (``VFIODev``, ``VFIODevice``), building a device from
  ``/dev/vfio/<group>`` (every function of the IOMMU group) or ``/dev/vfio/devices/vfio<N>`` (one
  function, IOMMUFD), rebuilding it from saved state, the rules across a plan's VFIO devices;
  ``/dev/vfio/vfio`` is declined and stays a plain container device;
* ``host.py``: what sysfs says (groups, functions, mdevs, AP queues, cdevs) and the host facts;
* ``ports.py``: the spare ports ``pcie_root_port``/``pcie_switch_port`` keep (a sandbox device);
* ``render_qemu.py``, ``render_clh.py``, ``render_firecracker.py`` (which refuses: no VFIO there);
* ``doctor.py``: ``vmdev doctor``, is this host ready to pass a given ``/dev/vfio`` path?

For another backend ``attach_options`` declines, so that backend's own plugin may render VFIO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from vmdev import hookimpl
from vmdev.backends.clh import ClhTarget
from vmdev.backends.firecracker import FirecrackerTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.declared import Setting
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget
from vmdev_vfio import device as vfio_device
from vmdev_vfio import host as vfio_host
from vmdev_vfio import ports, render_clh, render_firecracker, render_qemu
from vmdev_vfio import settings as vfio_settings
from vmdev_vfio.device import VFIODevice

if TYPE_CHECKING:
    import click

#: the target class of each backend this family renders for, and its renderer
RENDERERS: Final[Mapping[type[RenderTarget], Callable[[VFIODevice, Any, bool], AttachOptions]]] = {
    QemuTarget: render_qemu.render,
    ClhTarget: render_clh.render,
    FirecrackerTarget: render_firecracker.render,
}


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    vfio_settings.register(register)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    vfio_settings.check_rules(settings)


@hookimpl
def build_device(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> Device | None:
    if not vfio_device.claims(info.host_path):
        return None
    return vfio_device.build(info, host, vfio_settings.read_config(settings))


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    return ports.reservation(settings, vfio_settings.read_config(settings))


@hookimpl
def device_from_state(kind: str, data: Mapping[str, Any]) -> Device | None:
    if kind == vfio_device.DEVICE_VFIO:
        return vfio_device.from_state(data)
    if kind == ports.PORTS_KIND:
        return ports.from_state(data)
    return None


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    if isinstance(device, VFIODevice):
        return vfio_host.host_facts(device, host)
    # the spare ports have nothing on the host behind them
    return {} if isinstance(device, ports.PortReservation) else None


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if isinstance(device, ports.PortReservation):
        return render_qemu.render_ports(device, target) if isinstance(target, QemuTarget) else None
    if not isinstance(device, VFIODevice):
        return None
    for kind, render in RENDERERS.items():
        if isinstance(target, kind):
            vfio_device.check_plan_rules(device, target)
            return render(device, target, hotplug)
    return None


@hookimpl
def register_commands(cli: click.Group) -> None:
    from vmdev_vfio.doctor import doctor_command

    cli.add_command(doctor_command)

