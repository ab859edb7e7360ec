"""The vmdev-block plugin: disks and persistent memory for the sandbox VM.

Claims ``type b`` device requests (and regular files given as disks, major -1) that no more
specific plugin claimed, and turns OCI mounts into devices: a bind mount of a block device, a file
marked as a block file, or persistent memory (a mount on a loop device whose backing file carries
a PFN info block). Renders virtio-blk, virtio-scsi, virtio-mmio, virtio-blk-ccw and nvdimm for
QEMU (cold and hot plug), Cloud Hypervisor and Firecracker.

This module only wires the hooks; the work is in the sibling modules. It is imported on every
``vmdev`` run (issue 13, cold start), so at import it loads only the light ``constants`` and
``settings`` (no class, no backend): each hook first decides from the request alone (``dev_type``,
the mount's type and options, the saved or the device's ``kind``, the target's ``hypervisor``)
whether the call can be the family's, and only then imports the module doing the work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from vmdev import hookimpl
from vmdev_block.constants import DEVICE_BLOCK, PLUGIN_NAME
from vmdev_block.settings import SETTINGS, check_rules, may_be_a_disk

if TYPE_CHECKING:
    from vmdev.backends.qemu import QemuTarget
    from vmdev.declared import Setting
    from vmdev.host import HostContext
    from vmdev.models import Device, DeviceInfo
    from vmdev.oci import OciMount
    from vmdev.resources import Allocator
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget
    from vmdev_block.device import BlockDevice


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
    if not may_be_a_disk(mount, settings):  # a plan of ordinary mounts imports nothing more
        return None
    from vmdev_block import mounts

    return mounts.device_from_mount(mount, host, settings)


@hookimpl
def build_device(
    info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator
) -> Device | None:
    if info.dev_type != "b":  # every request reaches this hook: a character device is never a disk
        return None
    from vmdev_block.device import build_block_device

    return build_block_device(info, host, settings, alloc)


@hookimpl
def device_from_state(kind: str, data: Mapping[str, object], plugin: str) -> Device | None:
    if kind != DEVICE_BLOCK or plugin != PLUGIN_NAME:
        return None
    from vmdev_block.device import device_from_state as rebuild_device

    return rebuild_device(kind, data, plugin)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    """A loop device's backing file, a probed read-only flag, an nvdimm's size, a pmem image's
    PFN info block: what the device's options were decided from (see vmdev_block.host)."""
    disk = _as_block_device(device)
    if disk is None:
        return None
    from vmdev_block.host import host_facts as probe_host_facts

    return probe_host_facts(disk, host)


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    """QEMU, Cloud Hypervisor and Firecracker (by the target's ``hypervisor``, so no backend module
    is imported for another backend); another backend's target is declined (None)."""
    if target.hypervisor not in ("qemu", "cloud-hypervisor", "firecracker"):
        return None
    disk = _as_block_device(device)
    if disk is None:
        return None
    from vmdev_block.options import block_settings

    config = block_settings(target.settings)
    if target.hypervisor == "qemu":
        from vmdev_block.render_qemu import render_qemu

        return render_qemu(disk, disk.drive, cast("QemuTarget", target), hotplug, config)
    if target.hypervisor == "cloud-hypervisor":
        from vmdev_block.render_clh import render_clh

        return render_clh(disk, disk.drive, hotplug, config)
    from vmdev_block.render_firecracker import render_firecracker

    return render_firecracker(disk, disk.drive, config)


def _as_block_device(device: Device) -> BlockDevice | None:
    """``device`` if it is this family's: its kind first (no import for other families' devices),
    then its class (another plugin's device may reuse the kind name)."""
    if device.kind != DEVICE_BLOCK:
        return None
    from vmdev_block.device import BlockDevice

    return device if isinstance(device, BlockDevice) else None
