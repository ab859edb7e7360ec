"""OCI mounts that become block devices (Kata's ``createBlockDevices`` / ``createDeviceInfo``).

Only ``bind`` mounts, and mounts marked with Kata's block-file option
(``io.katacontainers.fs-opt.block_device=file``), are considered; none when
``disable_block_device_use`` is set. For such a mount, ``stat(source)``:

* a block device node: a ``type b`` device with the node's major:minor (``st_rdev``), read-only
  when the mount is ``ro`` (the device's own flag is probed when the device is built);
* a regular file marked with the block-file option: a disk from the file (major -1);
* anything else: persistent memory if the source lives on a loop device whose backing file carries
  a PFN info block (:mod:`vmdev_block.pmem`), else an ordinary mount (declined, the reason logged,
  as Kata does: most bind mounts are not disks).
"""

from __future__ import annotations

import logging
import os
import stat

from vmdev.errors import DeviceError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.oci import OciMount
from vmdev.settings import SandboxSettings
from vmdev_block.constants import BLOCK_FILE_OPTION
from vmdev_block.host import NotPersistentMemoryError, pmem_device_info
from vmdev_block.settings import is_block_file_mount, may_be_a_disk

log = logging.getLogger("vmdev.block")

__all__ = ["BLOCK_FILE_OPTION", "device_from_mount", "is_block_file_mount", "may_be_a_disk"]


def device_from_mount(mount: OciMount, host: HostContext, settings: SandboxSettings) -> DeviceInfo | None:
    """The device request for ``mount``, or None when it stays a file-system mount."""
    if not may_be_a_disk(mount, settings):
        return None
    block_file = is_block_file_mount(mount)
    try:
        info = host.stat(mount.source)
    except OSError as exc:
        raise DeviceError(
            f"stat {mount.source} failed: {exc.strerror}", device=mount.destination, field="source"
        ) from None
    if stat.S_ISBLK(info.st_mode):
        return DeviceInfo(
            container_path=mount.destination,
            dev_type="b",
            major=os.major(info.st_rdev),
            minor=os.minor(info.st_rdev),
            host_path=mount.source,
            read_only=mount.read_only,
        )
    if block_file:
        if not stat.S_ISREG(info.st_mode):
            raise DeviceError(
                f"{mount.source} is marked {BLOCK_FILE_OPTION} but is neither a regular file nor a "
                "block device",
                device=mount.destination,
                field="source",
            )
        return DeviceInfo(
            container_path=mount.destination,
            dev_type="b",
            major=-1,
            minor=0,
            host_path=mount.source,
            read_only=mount.read_only,
        )
    try:
        return pmem_device_info(mount.source, mount.destination, host, read_only=mount.read_only)
    except NotPersistentMemoryError as exc:
        log.debug("%r: not persistent memory: %s", mount.destination, str(exc))
        return None
