"""A container's ``/dev/watchdog`` (char 10:130) becomes a watchdog device of the sandbox VM.

Everything a device family needs, in one module: the model, ``build_device`` (claim the request),
``device_from_state`` (rebuild a saved device without looking at the host), ``attach_options``
(render it for the backends this vendor knows). For a backend it does not know it declines, so that
backend's own plugin may render the watchdog; if none does, the core reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from vmdev import hookimpl
from vmdev.backends.clh import ClhAttach, ClhTarget
from vmdev.backends.firecracker import FirecrackerTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.qemu import QemuAttach, QmpCommand, make_id, opts
from vmdev.serialize import from_json
from vmdev.settings import SandboxSettings
from vmdev.targets import MMIO, AttachOptions, RenderTarget

WATCHDOG_MAJOR: Final = 10
WATCHDOG_MINOR: Final = 130
QEMU_DRIVER: Final = "i6300esb"


@attrs.frozen(kw_only=True)
class WatchdogDev:
    """The sandbox's watchdog, requested by a container."""

    kind: ClassVar[str] = "watchdog"
    id: str
    container_path: str


@hookimpl
def build_device(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> Device | None:
    if (info.dev_type, info.major, info.minor) != ("c", WATCHDOG_MAJOR, WATCHDOG_MINOR):
        return None
    return WatchdogDev(id=make_id("watchdog", info.container_path), container_path=info.container_path)


@hookimpl
def device_from_state(kind: str, data: Mapping[str, Any]) -> Device | None:
    return from_json(WatchdogDev, data) if kind == WatchdogDev.kind else None


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(device, WatchdogDev):
        return None
    if isinstance(target, QemuTarget):
        return _qemu(device, target, hotplug)
    if isinstance(target, ClhTarget):
        return ClhAttach(vm_config={"watchdog": True})
    if isinstance(target, FirecrackerTarget):
        raise UnsupportedError(
            f"{target.hypervisor} has no watchdog device", device=device.container_path, field="hypervisor"
        )
    return None


def _qemu(device: WatchdogDev, target: QemuTarget, hotplug: bool) -> QemuAttach:
    if target.transport == MMIO:
        raise UnsupportedError(
            f"{QEMU_DRIVER} is a PCI device; machine {target.settings.machine_type} has no PCI bus",
            device=device.container_path,
            field="machine_type",
        )
    if not hotplug:
        return QemuAttach(args=["-device", opts(QEMU_DRIVER, {"id": device.id})])
    bus = target.hotplug_bus(device.container_path)
    add = {"driver": QEMU_DRIVER, "id": device.id, **({"bus": bus} if bus else {})}
    return QemuAttach(
        hotplug=[QmpCommand("device_add", add)],
        unplug=[QmpCommand("device_del", {"id": device.id})],
        hotplugged=True,
    )
