"""The block plugin's device: a disk or persistent-memory request, checked against the host.

:class:`BlockDevice` is Kata's ``BlockDevice`` before ``Attach``: everything known about the host
side. Where the drive sits in the guest (its index, SCSI address, ``/dev/vdX``, nvdimm number) is
taken from the plan's allocator when the device is built (:mod:`vmdev_block.drive`) and kept
in ``drive``, a :class:`~vmdev_block.drive.BlockDrive`.

Loop devices are passed to the hypervisor as the ``/dev/loopN`` node, as Kata does, not as their
backing file: the node is what the container asked for, it honours the loop device's offset, size
limit and read-only flag, and it stays valid when the backing file is renamed or deleted. The
backing file is shown in the plan (``backing_file``) for information.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.qemu import make_id
from vmdev.resources import Allocator
from vmdev.serialize import from_json
from vmdev.settings import SandboxSettings
from vmdev_block.constants import (
    BLOCK_DRIVER_OPT,
    DEVICE_BLOCK,
    DRIVER_ALIASES,
    FS_TYPE_OPT,
    NVDIMM,
    PLUGIN_NAME,
    PMEM_DRIVERS,
    SUPPORTED_DRIVERS,
    VIRTIO_PMEM,
)
from vmdev_block.drive import BlockDrive, DriveRequest, allocate_drive
from vmdev_block.host import block_size, loop_backing_file, probe_read_only, writable_host_mount
from vmdev_block.options import BlockSettings, block_settings
from vmdev_block.settings import KEY_ALLOW_HOST_MOUNTED, KEY_DRIVER

log = logging.getLogger("vmdev.block")

#: ``drive-`` + 14 hex digits = 20 characters: the whole id fits virtio-blk's 20-byte serial
DRIVE_ID_DIGITS: Final = 14
#: QEMU maps memory in pages: an nvdimm's or virtio-pmem's backing size must be a multiple of this
NVDIMM_SIZE_ALIGN: Final = 4096
#: Kata's pseudo majors of vhost-user-blk and vhost-user-scsi nodes in the vhost-user store
VHOST_USER_MAJORS: Final = (241, 242)
#: the vhost-user family's settings key (declared by vmdev-vhostuser, which may not be installed)
VHOST_USER_STORE_KEY: Final = "enable_vhost_user_store"


def _a_driver(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in SUPPORTED_DRIVERS:
        raise DeviceError(
            f"{value!r} is not a block driver (one of {', '.join(SUPPORTED_DRIVERS)})",
            device=inst.container_path,
            field=attribute.name,
        )


@attrs.frozen(kw_only=True)
class BlockDevice:
    """A disk or persistent-memory device for the guest, as requested and found on the host."""

    kind: ClassVar[str] = DEVICE_BLOCK
    #: also the drive's id, QEMU node name and serial
    id: str
    container_path: str
    #: what the hypervisor opens: a device node, an image file or a pmem backing file
    host_path: str
    #: the block driver (``virtio-scsi``, ``virtio-blk``, ``virtio-mmio``, ``nvdimm``, ``virtio-blk-ccw``)
    driver: str = attrs.field(validator=_a_driver)
    major: int
    minor: int
    #: ``host_path`` is a block device node (QEMU's ``host_device`` driver) rather than a file
    host_device: bool
    format: str = "raw"
    #: the file system in a persistent-memory image (``/proc/mounts``, ``ext4`` when unknown)
    fstype: str = ""
    #: the loop device's backing file (informational: ``host_path`` stays the loop node)
    backing_file: str = ""
    #: bytes, when known (required for nvdimm and pmem)
    size: int | None = None
    read_only: bool = False
    #: the read-only flag came from the device itself (BLKROGET), not from the request
    read_only_detected: bool = False
    discard_unmap: bool = False
    pmem: bool = False
    cold_plug: bool = False
    #: where the drive sits in the guest: index, SCSI address, /dev/vdX, nvdimm number ...
    drive: BlockDrive


def unsupported_driver(device: BlockDevice, hypervisor: str, only: str) -> UnsupportedError:
    """A driver the hypervisor cannot attach: the error names ``block_device_driver``."""
    return UnsupportedError(
        f"{hypervisor} cannot attach a {device.driver} disk (it supports {only}; set {KEY_DRIVER})",
        device=device.container_path,
        field=KEY_DRIVER,
    )


def vhost_user_store_enabled(settings: SandboxSettings) -> bool:
    """Kata's ``enable_vhost_user_store``: its typed value when the vhost-user plugin declares
    it, else what the settings file says (a store device must not become a disk just because
    the plugin that understands it is not installed)."""
    value = settings.values.get(VHOST_USER_STORE_KEY, settings.option(VHOST_USER_STORE_KEY, False))
    return value is True


def claims(info: DeviceInfo, settings: SandboxSettings) -> bool:
    """``type b`` requests, except vhost-user pseudo devices when the vhost-user store is on."""
    if info.dev_type != "b":
        return False
    vhost_user = info.major in VHOST_USER_MAJORS
    return not (vhost_user and not info.pmem and vhost_user_store_enabled(settings))


def requested_driver(info: DeviceInfo, config: BlockSettings) -> str:
    """The device's ``block-driver`` option, else the sandbox's. Persistent memory is an nvdimm
    (Kata Go), or virtio-pmem when that is the sandbox's driver (runtime-rs' pmem driver)."""
    if info.pmem:
        return VIRTIO_PMEM if config.driver == VIRTIO_PMEM else NVDIMM
    given = info.driver_options.get(BLOCK_DRIVER_OPT, "")
    value = DRIVER_ALIASES.get(given, given)
    if not value:
        return config.driver
    if value not in SUPPORTED_DRIVERS:
        raise DeviceError(
            f"{given!r} is not a block driver (one of {', '.join(SUPPORTED_DRIVERS)})",
            device=info.name,
            field=BLOCK_DRIVER_OPT,
        )
    return value


def build_block_device(
    info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator
) -> BlockDevice | None:
    """The :class:`BlockDevice` for ``info`` (its host path resolved), or None if not ours."""
    if not claims(info, settings):
        return None
    name = info.name
    config = block_settings(settings)
    driver = requested_driver(info, config)
    if not info.host_path:
        raise DeviceError("no host path for this block device", device=name, field="path")
    node = str(host.dev_path(info.host_path))
    found = _stat(host, node, name)
    host_device = stat.S_ISBLK(found.st_mode) and not info.pmem
    if not host_device and not stat.S_ISREG(found.st_mode):
        raise DeviceError(
            f"{info.host_path} is neither a block device nor a regular file", device=name, field="path"
        )
    size = block_size(host, info.major, info.minor) if host_device else found.st_size
    detected = bool(host_device and not info.read_only and probe_read_only(host, info.host_path, device=name))
    key = f"{info.container_path}|{info.host_path}"
    drive_id = make_id("drive", key, length=DRIVE_ID_DIGITS)
    read_only = info.read_only or detected
    if host_device and not read_only:
        _check_host_mounts(info, host, config)
    request = DriveRequest(key=key, name=name, id=drive_id, file=info.host_path, driver=driver,
                           read_only=read_only, discard_unmap=info.discard_unmap, pmem=info.pmem)
    if driver in PMEM_DRIVERS:
        _check_nvdimm_size(info.host_path, size, name, driver)
    return BlockDevice(
        id=drive_id,
        container_path=info.container_path,
        host_path=info.host_path,
        driver=driver,
        major=info.major,
        minor=info.minor,
        host_device=host_device,
        fstype=info.driver_options.get(FS_TYPE_OPT, "") if info.pmem else "",
        backing_file=(loop_backing_file(host, info.major, info.minor) or "") if host_device else "",
        size=size,
        read_only=read_only,
        read_only_detected=detected,
        discard_unmap=info.discard_unmap,
        pmem=info.pmem,
        cold_plug=info.cold_plug,
        drive=allocate_drive(request, alloc),
    )


def _stat(host: HostContext, node: str, name: str) -> os.stat_result:
    try:
        return host.stat(node)
    except OSError as exc:
        raise DeviceError(f"cannot use {node}: {exc.strerror}", device=name, field="path") from None


def _check_host_mounts(info: DeviceInfo, host: HostContext, config: BlockSettings) -> None:
    """A writable disk must not be a file system the host has mounted read-write (Kata does not
    check: a privileged container's spec lists the host's own root disk, and two kernels writing
    one file system corrupt it). Persistent memory is not checked: its loop device stays mounted
    on the host by design (Kata's behaviour) and the guest maps the backing file."""
    mount = writable_host_mount(host, info.major, info.minor)
    if mount is None:
        return
    where = f"at {json.dumps(mount.mount_point)} (as {mount.major}:{mount.minor}, {json.dumps(mount.source)})"
    if config.allow_host_mounted:
        log.warning("%r: %r is mounted read-write on the host %s; passed writable because %s is set",
                    info.name, info.host_path, where, KEY_ALLOW_HOST_MOUNTED)
        return
    raise DeviceError(
        f"{json.dumps(info.host_path)} is mounted read-write on the host {where}: a guest writing it too "
        f"would corrupt the file system; ask for it read-only, or set {KEY_ALLOW_HOST_MOUNTED} = true",
        device=info.name,
        field="path",
    )


def _check_nvdimm_size(path: str, size: int | None, name: str, driver: str) -> None:
    what = "an nvdimm" if driver == NVDIMM else f"a {driver} device"
    if size is None or size <= 0:
        raise DeviceError(f"cannot tell the size of {path}, which {what} needs", device=name, field="size")
    if size % NVDIMM_SIZE_ALIGN:
        raise DeviceError(
            f"{path} is {size} bytes; {what} needs a multiple of {NVDIMM_SIZE_ALIGN} bytes",
            device=name,
            field="size",
        )


def device_from_state(kind: str, data: Mapping[str, object], plugin: str) -> BlockDevice | None:
    """The :class:`BlockDevice` this plugin built, rebuilt from its saved JSON without touching
    the host (its indexes and the host facts it was built from are in ``data``), or None when
    the saved device is not one of ours. A malformed record is a :class:`DeviceError` naming
    the device and what is wrong."""
    if kind != DEVICE_BLOCK or plugin != PLUGIN_NAME:
        return None
    try:
        return from_json(BlockDevice, data)
    except Exception as exc:
        name = data.get("container_path") or data.get("id") or "a saved block device"
        raise DeviceError(f"cannot be read back from the saved state: {_cause(exc)}", device=str(name),
                          field="state") from exc


def _cause(exc: BaseException) -> str:
    """What ``from_json`` found wrong, in one line: a model's own check (``index: must not be
    negative``) or where the JSON does not fit (``$.drive: required field missing``)."""
    from vmdev.typedjson import Invalid

    if isinstance(exc, DeviceError):
        return f"{exc.field}: {exc.message}"
    if isinstance(exc, Invalid):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"

