"""A container's ``/dev/watchdog`` (char 10:130) becomes a watchdog device of the sandbox VM.

The hooks of a device family: ``build_device`` (claim the request), ``device_from_state`` (rebuild
a saved device without looking at the host), ``attach_options`` (render it for the backends this
vendor knows). For a backend it does not know it declines, so that backend's own plugin may
render the watchdog; if none does, the core reports it.

``vmdev plan`` imports every installed plugin's entry module, for every container, with or without
a watchdog. So this module imports only ``hookimpl`` and its constants: each hook first decides
from the request's node, the saved kind, ``device.kind`` or ``target.hypervisor`` whether the call
is the watchdog's, and only then imports the model (:mod:`~acme_vmdev_watchdog.device`) or the
backend's renderer (:mod:`~acme_vmdev_watchdog.render_qemu`, ``render_clh``); a renderer imports
that backend's classes (``vmdev.backends.qemu``), never this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from acme_vmdev_watchdog.constants import (
    CLOUD_HYPERVISOR,
    FIRECRACKER,
    KIND,
    QEMU,
    WATCHDOG_MAJOR,
    WATCHDOG_MINOR,
)
from vmdev import hookimpl

if TYPE_CHECKING:
    from vmdev.host import HostContext
    from vmdev.models import Device, DeviceInfo
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget


@hookimpl
def build_device(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> Device | None:
    if (info.dev_type, info.major, info.minor) != ("c", WATCHDOG_MAJOR, WATCHDOG_MINOR):
        return None
    from acme_vmdev_watchdog.device import WatchdogDev
    from vmdev.qemu import make_id

    return WatchdogDev(id=make_id("watchdog", info.container_path), container_path=info.container_path)


@hookimpl
def device_from_state(kind: str, data: Mapping[str, Any]) -> Device | None:
    if kind != KIND:
        return None
    from acme_vmdev_watchdog.device import WatchdogDev
    from vmdev.serialize import from_json

    return from_json(WatchdogDev, data)


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if device.kind != KIND:
        return None
    from acme_vmdev_watchdog.device import WatchdogDev

    if not isinstance(device, WatchdogDev):  # another plugin's device of the same kind name
        return None
    if target.hypervisor == QEMU:
        from acme_vmdev_watchdog import render_qemu

        return render_qemu.render(device, target, hotplug)
    if target.hypervisor == CLOUD_HYPERVISOR:
        from acme_vmdev_watchdog import render_clh

        return render_clh.render(device, target, hotplug)
    if target.hypervisor == FIRECRACKER:
        from vmdev.errors import UnsupportedError

        raise UnsupportedError(
            f"{target.hypervisor} has no watchdog device", device=device.container_path, field="hypervisor"
        )
    return None
