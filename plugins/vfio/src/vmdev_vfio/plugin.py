"""The vmdev-vfio plugin: VFIO passthrough of PCI functions, mediated and AP devices.

Hook implementations only; each delegates to one module of the family's template:

* ``settings.py``: the declared keys (``hot_plug_vfio``, ``cold_plug_vfio``, ``pcie_root_port``,
  ``pcie_switch_port``, ``vfio_mode`` from ``[runtime]``) and the rules across them (the QEMU
  backend's ``enable_iommu`` and ``confidential_guest`` are read, not declared); ``config.py``:
  the typed ``VfioConfig`` of one sandbox;
* ``kinds.py``: the kinds and ``/dev/vfio`` paths the hooks test before importing anything else;
* ``device.py``: the models (``VFIODev``, ``VFIODevice``), building a device from
  ``/dev/vfio/<group>`` (every function of the IOMMU group) or ``/dev/vfio/devices/vfio<N>`` (one
  function, IOMMUFD), rebuilding it from saved state, the rules across a plan's VFIO devices;
  ``/dev/vfio/vfio`` is declined and stays a plain container device;
* ``host.py``: what sysfs says (groups, functions, mdevs, AP queues, cdevs) and the host facts;
* ``ports.py``: the spare ports ``pcie_root_port``/``pcie_switch_port`` keep (a sandbox device);
* ``render_qemu.py``, ``render_clh.py``, ``render_firecracker.py`` (which refuses: no VFIO there);
* ``doctor.py``: ``vmdev doctor``, is this host ready to pass a given ``/dev/vfio`` path?

This module is imported on every ``vmdev`` run (issue 13, cold start), so at import it loads only
``kinds.py`` and ``settings.py`` (no class, no backend): each hook first decides from the request
(its ``/dev/vfio`` path, the kind, the port counts, the target's ``hypervisor``) whether the call
is the family's, and only then imports the module doing the work.

For another backend ``attach_options`` declines, so that backend's own plugin may render VFIO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from vmdev import hookimpl
from vmdev_vfio import settings as vfio_settings
from vmdev_vfio.kinds import DEVICE_VFIO, PORTS_KIND, claims

if TYPE_CHECKING:
    from vmdev.backends.clh import ClhTarget
    from vmdev.backends.firecracker import FirecrackerTarget
    from vmdev.backends.qemu import QemuTarget
    from vmdev.commands import CommandSpec
    from vmdev.declared import Setting
    from vmdev.host import HostContext
    from vmdev.models import Device, DeviceInfo
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget
    from vmdev_vfio.device import VFIODevice
    from vmdev_vfio.ports import PortReservation


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    vfio_settings.register(register)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    vfio_settings.check_rules(settings)


@hookimpl
def build_device(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> Device | None:
    if not claims(info.host_path):
        return None
    from vmdev_vfio.config import read_config
    from vmdev_vfio.device import build

    return build(info, host, read_config(settings))


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    # spare ports are QEMU's and need a count: without one, nothing to import
    if settings.hypervisor != "qemu" or not (
            settings.value(vfio_settings.ROOT_PORTS_KEY) or settings.value(vfio_settings.SWITCH_PORTS_KEY)):
        return []
    from vmdev_vfio.config import read_config
    from vmdev_vfio.ports import reservation

    return reservation(settings, read_config(settings))


@hookimpl
def device_from_state(kind: str, data: Mapping[str, Any]) -> Device | None:
    if kind == DEVICE_VFIO:
        from vmdev_vfio.device import from_state

        return from_state(data)
    if kind == PORTS_KIND:
        from vmdev_vfio import ports

        return ports.from_state(data)
    return None


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    vfio = _as_vfio_device(device)
    if vfio is not None:
        from vmdev_vfio.host import host_facts as probe_host_facts

        return probe_host_facts(vfio, host)
    # the spare ports have nothing on the host behind them
    return {} if _as_ports(device) is not None else None


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    """By the target's ``hypervisor`` name, so no backend module is imported for another backend."""
    if target.hypervisor not in ("qemu", "cloud-hypervisor", "firecracker"):
        return None
    spare = _as_ports(device)
    if spare is not None:
        if target.hypervisor != "qemu":
            return None
        from vmdev_vfio.render_qemu import render_ports

        return render_ports(spare, cast("QemuTarget", target))
    vfio = _as_vfio_device(device)
    if vfio is None:
        return None
    from vmdev_vfio.device import check_plan_rules

    check_plan_rules(vfio, target)
    if target.hypervisor == "qemu":
        from vmdev_vfio import render_qemu

        return render_qemu.render(vfio, cast("QemuTarget", target), hotplug)
    if target.hypervisor == "cloud-hypervisor":
        from vmdev_vfio import render_clh

        return render_clh.render(vfio, cast("ClhTarget", target), hotplug)
    from vmdev_vfio import render_firecracker

    return render_firecracker.render(vfio, cast("FirecrackerTarget", target), hotplug)


#: ``vmdev doctor``'s line in ``vmdev --help``: the first sentence of its help
DOCTOR_SUMMARY: Final = (
    "Check that the host is ready to pass VFIO devices (/dev/vfio/<group>, /dev/vfio/devices/vfioN)."
)


@hookimpl
def register_lazy_commands(register: Callable[[CommandSpec], None]) -> None:
    # the command's module (the family's host probing and models) loads only when vmdev doctor runs
    from vmdev.commands import CommandSpec

    register(CommandSpec(name="doctor", target="vmdev_vfio.doctor:doctor_command", summary=DOCTOR_SUMMARY))


def _as_vfio_device(device: Device) -> VFIODevice | None:
    """``device`` if it is one of this family's requests: its kind first (no import for other
    families' devices), then its class (another plugin's device may reuse the kind name)."""
    if device.kind != DEVICE_VFIO:
        return None
    from vmdev_vfio.device import VFIODevice

    return device if isinstance(device, VFIODevice) else None


def _as_ports(device: Device) -> PortReservation | None:
    """``device`` if it is this family's spare-port reservation (kind first, then class)."""
    if device.kind != PORTS_KIND:
        return None
    from vmdev_vfio.ports import PortReservation

    return device if isinstance(device, PortReservation) else None
