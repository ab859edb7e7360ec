"""What the block plugin reads from the host: loop devices, sizes, read-only flags, mounts, pmem.

Everything goes through the :class:`~vmdev.host.HostContext` (sysfs, ``/dev``, ``/proc`` roots and
its ``stat``) so tests can point it at a fake tree; only the ``BLKROGET`` ioctl needs a real device
node (a fake node is a regular file: the probe fails and counts as "not read-only", as in Kata).

Persistent memory (:func:`pmem_device_info`, Kata's ``PmemDeviceInfo(source, destination)``): the
file system at ``source`` lives on a loop device (``st_dev`` of ``source``, not ``st_rdev``); its
backing file, given to the guest as an NVDIMM, must carry a PFN info block (:mod:`vmdev_block.pmem`)
at byte 4096. The file-system type comes from ``/proc/mounts`` (``ext4`` when it cannot be found).
A block whose checksum is wrong is accepted with a warning: the guest kernel then sees a raw
namespace whose ``/dev/pmem0`` starts at byte 0 of the file instead of at ``dataoff``.

:func:`host_facts` says which of these facts decided a built device's options, so that the device
manager can tell when the host changed under a saved sandbox.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from typing import TYPE_CHECKING, Final

import attrs

from vmdev.errors import DeviceError, HostReadError
from vmdev.host import HostContext, decode_text, read_regular
from vmdev.models import DeviceInfo
from vmdev_block.constants import FS_TYPE_OPT, PMEM_DRIVERS
from vmdev_block.pmem import PFN_INFO_OFFSET, PfnInfo, read_pfn_info

if TYPE_CHECKING:
    from vmdev_block.device import BlockDevice

log = logging.getLogger("vmdev.block")

#: ``_IO(0x12, 94)``: get the read-only flag of a block device (an int)
BLKROGET: Final = 0x125E
SECTOR_SIZE: Final = 512
DEFAULT_FSTYPE: Final = "ext4"


class NotPersistentMemoryError(DeviceError):
    """The mount is not a persistent-memory image (not on a loop device, or no PFN signature)."""


def sysfs_block_dir(major: int, minor: int) -> str:
    """``dev/block/MAJ:MIN`` below the sysfs root."""
    return f"dev/block/{major}:{minor}"


def loop_backing_file(host: HostContext, major: int, minor: int) -> str | None:
    """The backing file of loop device MAJ:MIN (Kata's ``getBackingFile``), or None.

    None when the device is not a loop device (no ``loop/backing_file``) or has no backing file.
    """
    text = host.sysfs.read_text(f"{sysfs_block_dir(major, minor)}/loop/backing_file")
    # the kernel ends the path with one newline; anything else is the path, byte for byte (a file
    # called "img " is another file than "img": stripping would attach the wrong one)
    value = text[:-1] if text and text.endswith("\n") else text
    return value or None


def block_size(host: HostContext, major: int, minor: int) -> int | None:
    """Size in bytes of block device MAJ:MIN from sysfs ``size`` (512-byte sectors), or None."""
    text = host.sysfs.read_line(f"{sysfs_block_dir(major, minor)}/size")
    # ASCII digits only (str.isdigit takes '²', which int() refuses) and no more than a u64 holds
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 20:
        return None
    return int(text) * SECTOR_SIZE


def blkroget(path: str | os.PathLike[str]) -> bool:
    """The block device's read-only flag (Kata's ``BlockDeviceIsReadOnly``); OSError on failure."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        answer = fcntl.ioctl(fd, BLKROGET, struct.pack("i", 0))
    finally:
        os.close(fd)
    flag: int = struct.unpack("i", answer)[0]
    return flag != 0


def probe_read_only(host: HostContext, host_path: str, *, device: str) -> bool:
    """BLKROGET on ``host_path`` (through the host context's ``/dev`` root).

    A probe error counts as "not read-only" and is logged, as Kata does.
    """
    node = host.dev_path(host_path)
    try:
        return blkroget(node)
    except OSError as exc:
        log.info("%r: cannot read the read-only flag of %r (BLKROGET): %s", device, os.fspath(node),
                 exc.strerror)
        return False


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """``(source, mount point, fstype)`` of each well-formed ``/proc/mounts`` line.

    Octal escapes (``\\040`` for a space) are decoded; malformed lines are skipped.
    """
    entries: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6:
            continue
        entries.append((_unescape(fields[0]), _unescape(fields[1]), _unescape(fields[2])))
    return entries


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        chunk = value[i + 1 : i + 4]
        if value[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def mount_fstype(host: HostContext, mount_point: str) -> str | None:
    """The file-system type mounted at ``mount_point`` per ``<proc>/mounts``, or None.

    The last matching line wins (it is the mount on top). None when the table cannot be read
    (read as every host file is, :func:`vmdev.host.read_regular`: a FIFO there would block a plain
    ``open``, which the fuzz's hosts found) or has no such mount point.
    """
    try:
        data = read_regular(host.proc_path("mounts"), limit=MOUNTINFO_LIMIT)
    except HostReadError:
        return None
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace")
    found = [fstype for _, point, fstype in parse_mounts(text) if point == mount_point]
    return found[-1] if found else None


# --- block devices the host has mounted -------------------------------------------------------
#: ``/proc/self/mountinfo`` of a host with many containers is large; read at most this much
MOUNTINFO_LIMIT: Final = 64 << 20
#: the most devices followed from one disk through partitions and holders (a guard, not a limit)
MAX_STACKED: Final = 4096


@attrs.frozen
class HostMount:
    """One line of ``/proc/self/mountinfo``: which device, where, and whether it is writable."""

    major: int
    minor: int
    mount_point: str
    source: str
    #: the file system itself is writable (its super options say ``rw``): the host kernel may write it
    writable: bool


def parse_mountinfo(text: str) -> list[HostMount]:
    """The mounts of a ``mountinfo`` table (``proc(5)``); malformed lines are skipped.

    ``36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue``: field 3
    is the device, field 5 the mount point, and after the ``-`` come the type, the source and the
    super options, whose ``rw`` says the file system is writable whatever this mount's own flags.
    """
    mounts: list[HostMount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1 :]
        major, _, minor = fields[2].partition(":")
        if len(tail) < 3 or not (major.isdigit() and minor.isdigit()):
            continue
        mounts.append(HostMount(major=int(major), minor=int(minor), mount_point=_unescape(fields[4]),
                                source=_unescape(tail[1]), writable="rw" in tail[2].split(",")))
    return mounts


def host_mounts(host: HostContext) -> list[HostMount]:
    """The mounts of ``<proc>/self/mountinfo``; none when the table does not exist."""
    path = host.proc_path("self/mountinfo")
    data = read_regular(path, limit=MOUNTINFO_LIMIT)
    return [] if data is None else parse_mountinfo(decode_text(data, path))


def stacked_devices(host: HostContext, major: int, minor: int) -> list[tuple[int, int]]:
    """MAJ:MIN and every block device built on it: its partitions and their holders (LVM,
    device-mapper, md), read from sysfs, in the order found, each once."""
    found = [(major, minor)]
    for device in found:
        if len(found) > MAX_STACKED:
            break
        base = sysfs_block_dir(*device)
        for name in host.sysfs.list_dir(base):
            if host.sysfs.exists(f"{base}/{name}/partition"):
                _add_device(host, f"{base}/{name}/dev", found)
        for name in host.sysfs.list_dir(f"{base}/holders"):
            _add_device(host, f"{base}/holders/{name}/dev", found)
    return found


def _add_device(host: HostContext, dev_file: str, found: list[tuple[int, int]]) -> None:
    text = host.sysfs.read_line(dev_file) or ""
    major, _, minor = text.partition(":")
    if major.isdigit() and minor.isdigit() and (int(major), int(minor)) not in found:
        found.append((int(major), int(minor)))


def writable_host_mount(host: HostContext, major: int, minor: int) -> HostMount | None:
    """The first mount of a writable file system on MAJ:MIN, one of its partitions or a device
    built on it (``/proc/self/mountinfo`` through the host context), or None."""
    mounts = [m for m in host_mounts(host) if m.writable]
    if not mounts:
        return None
    stack = stacked_devices(host, major, minor)
    return next((m for m in mounts if (m.major, m.minor) in stack), None)


# --- persistent memory -----------------------------------------------------------------------
def pmem_device_info(
    source: str, destination: str, host: HostContext, *, read_only: bool = False
) -> DeviceInfo:
    """The persistent-memory request for a mount of ``source`` at ``destination``.

    Raises :class:`NotPersistentMemoryError` when ``source`` is not on a loop device or the
    backing file has no PFN signature (Kata: ``backing file %v has not PFN signature``), and
    :class:`DeviceError` when ``source`` cannot be stat'ed.
    """
    try:
        st_dev = host.stat(source).st_dev
    except OSError as exc:
        raise DeviceError(
            f"stat {source} failed: {exc.strerror}", device=destination, field="source"
        ) from None
    major, minor = os.major(st_dev), os.minor(st_dev)
    backing = loop_backing_file(host, major, minor)
    if backing is None:
        raise NotPersistentMemoryError(
            f"{source} is not on a loop device ({major}:{minor} has no loop/backing_file)",
            device=destination,
            field="source",
        )
    info = read_pfn_info(backing)
    if info is None:
        raise NotPersistentMemoryError(
            f"backing file {backing} has not PFN signature (no NVDIMM_PFN_INFO at byte {PFN_INFO_OFFSET})",
            device=destination,
            field="source",
        )
    if not info.checksum_ok:
        log.warning(
            "%s: the PFN info block of %s has a bad checksum: the guest kernel will ignore it and "
            "see a raw namespace (no DAX page map, data from byte 0)",
            destination,
            backing,
        )
    return DeviceInfo(
        container_path=destination,
        dev_type="b",
        major=major,
        minor=minor,
        host_path=backing,
        pmem=True,
        read_only=read_only,
        driver_options={FS_TYPE_OPT: _fstype(host, source, destination)},
    )


def _fstype(host: HostContext, source: str, destination: str) -> str:
    fstype = mount_fstype(host, source)
    if fstype is None:
        log.warning("%r: mount %r not found in %s; assuming %s", destination, source,
                    host.proc_path("mounts"), DEFAULT_FSTYPE)
        return DEFAULT_FSTYPE
    return fstype


# --- host facts ----------------------------------------------------------------------------------
#: ``pfn_info`` fact values
PFN_VALID: Final = "valid"
PFN_BAD_CHECKSUM: Final = "bad checksum"
PFN_MISSING: Final = "missing"


def pfn_state(info: PfnInfo | None) -> str:
    if info is None:
        return PFN_MISSING
    return PFN_VALID if info.checksum_ok else PFN_BAD_CHECKSUM


def current_size(device: BlockDevice, host: HostContext) -> int | None:
    """What the device's host side measures now: sysfs ``size`` of a node, ``st_size`` of a file."""
    if device.host_device:
        return block_size(host, device.major, device.minor)
    try:
        return host.stat(str(host.dev_path(device.host_path))).st_size
    except OSError:
        return None


def host_facts(device: BlockDevice, host: HostContext) -> dict[str, str]:
    """The host facts that decided ``device``'s options, beyond its node's type and major:minor.

    * ``backing_file``: a loop device's backing file (the plan shows it; another file behind the
      same loop node is another disk);
    * ``read_only``: the ``BLKROGET`` flag of a node, when the request did not ask for read-only
      itself (``"true"``/``"false"``; a failing probe counts as writable, as when it was built);
    * ``size``: the bytes an nvdimm or virtio-pmem maps (QEMU's ``size`` and ``maxmem``, Cloud
      Hypervisor's pmem ``size``), ``""`` when it cannot be measured;
    * ``pfn_info``: the PFN info block of a persistent-memory image (``valid``, ``bad checksum``
      or ``missing``), which made a mount persistent memory.
    """
    facts: dict[str, str] = {}
    if device.backing_file:
        facts["backing_file"] = loop_backing_file(host, device.major, device.minor) or ""
    requested_read_only = device.read_only and not device.read_only_detected
    if device.host_device and not requested_read_only:
        probed = probe_read_only(host, device.host_path, device=device.container_path)
        facts["read_only"] = "true" if probed else "false"
    if device.driver in PMEM_DRIVERS:
        size = current_size(device, host)
        facts["size"] = "" if size is None else str(size)
    if device.pmem:
        facts["pfn_info"] = pfn_state(read_pfn_info(device.host_path))
    return facts
