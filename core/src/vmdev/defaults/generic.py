"""Generic devices: character devices and FIFOs that no plugin claims stay in the container.

This is Kata's DeviceGeneric. Nothing is attached to the VM; the device is
listed in the plan so the runtime creates the node in the container. Block
devices are not claimed: passing a host block device's numbers into the guest
would name a different device there, so an unclaimed block device is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmdev.hookspecs import hookimpl
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo, GenericDevice
from vmdev.qemu import make_id
from vmdev.serialize import from_json
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget

GENERIC_TYPES = ("c", "u", "p")


@hookimpl(trylast=True)
def build_device(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> Device | None:
    if info.dev_type not in GENERIC_TYPES:
        return None
    return GenericDevice(
        id=make_id("generic", f"{info.container_path}|{info.major}:{info.minor}"),
        container_path=info.container_path,
        host_path=info.host_path,
        dev_type=info.dev_type,
        major=info.major,
        minor=info.minor,
        file_mode=info.file_mode,
        uid=info.uid,
        gid=info.gid,
    )


@hookimpl(trylast=True)
def device_from_state(kind: str, data: Mapping[str, Any]) -> Device | None:
    """A saved generic device comes back as it was (nothing on the host is read)."""
    if kind != GenericDevice.kind:
        return None
    return from_json(GenericDevice, data)


@hookimpl(trylast=True)
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(device, GenericDevice):
        return None
    empty: AttachOptions = target.attach_type()  # nothing reaches the hypervisor
    return empty
