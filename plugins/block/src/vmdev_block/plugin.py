"""The vmdev-block plugin: disks and persistent memory for the sandbox VM.

Claims ``type b`` device requests (and regular files given as disks, major -1) that no more
specific plugin claimed, and turns OCI mounts into devices: a bind mount of a block device, a file
marked as a block file, or persistent memory (a mount on a loop device whose backing file carries
a PFN info block). Renders virtio-blk, virtio-scsi, virtio-mmio, virtio-blk-ccw and nvdimm for
QEMU (cold and hot plug), Cloud Hypervisor and Firecracker.

This module only wires the hooks; the work is in the sibling modules, imported here (they import
nothing beyond the standard library and vmdev, and touch the host only when a hook runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vmdev import hookimpl
from vmdev.backends.clh import ClhTarget
from vmdev.backends.firecracker import FirecrackerTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.declared import Setting
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.oci import OciMount
from vmdev.resources import Allocator
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget
from vmdev_block import mounts
from vmdev_block.device import BlockDevice, build_block_device
from vmdev_block.device import device_from_state as rebuild_device
from vmdev_block.host import host_facts as probe_host_facts
from vmdev_block.render_clh import render_clh
from vmdev_block.render_firecracker import render_firecracker
from vmdev_block.render_qemu import render_qemu
from vmdev_block.settings import SETTINGS, block_settings, check_rules


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    check_rules(settings)


@hookimpl
def resolve_host_path(info: DeviceInfo, host: HostContext) -> str | None:
    """Block requests that already name their host file keep it.

    That is a block device mounted into the container (its source is the node) and persistent
    memory (its backing file); the core's default would look the numbers up in sysfs and, for a
    device without a uevent file, fall back to the container path, which for a mount is a
    directory in the container.
    """
    if info.dev_type == "b" and info.host_path and info.major != -1:
        return info.host_path
    return None


@hookimpl
def device_from_mount(mount: OciMount, host: HostContext, settings: SandboxSettings) -> DeviceInfo | None:
    return mounts.device_from_mount(mount, host, settings)


@hookimpl
def build_device(
    info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator
) -> Device | None:
    return build_block_device(info, host, settings, alloc)


@hookimpl
def device_from_state(kind: str, data: Mapping[str, object], plugin: str) -> Device | None:
    return rebuild_device(kind, data, plugin)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    """A loop device's backing file, a probed read-only flag, an nvdimm's size, a pmem image's
    PFN info block: what the device's options were decided from (see vmdev_block.host)."""
    if not isinstance(device, BlockDevice):
        return None
    return probe_host_facts(device, host)


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    """QEMU, Cloud Hypervisor and Firecracker; another backend's target is declined (None)."""
    if not isinstance(device, BlockDevice):
        return None
    if isinstance(target, QemuTarget):
        return render_qemu(device, device.drive, target, hotplug, block_settings(target.settings))
    if isinstance(target, ClhTarget):
        return render_clh(device, device.drive, hotplug, block_settings(target.settings))
    if isinstance(target, FirecrackerTarget):
        return render_firecracker(device, device.drive, block_settings(target.settings))
    return None
