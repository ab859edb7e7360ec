"""What the block plugin reads from the host: loop devices, sizes, read-only flags, mounts.

Everything goes through the :class:`~vmdev.host.HostContext` (sysfs, ``/dev``, ``/proc`` roots and
its ``stat``) so tests can point it at a fake tree; only the ``BLKROGET`` ioctl needs a real device
node (a fake node is a regular file: the probe fails and counts as "not read-only", as in Kata).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from typing import Final

from vmdev.host import HostContext

log = logging.getLogger("vmdev.block")

#: ``_IO(0x12, 94)``: get the read-only flag of a block device (an int)
BLKROGET: Final = 0x125E
SECTOR_SIZE: Final = 512


def sysfs_block_dir(major: int, minor: int) -> str:
    """``dev/block/MAJ:MIN`` below the sysfs root."""
    return f"dev/block/{major}:{minor}"


def loop_backing_file(host: HostContext, major: int, minor: int) -> str | None:
    """The backing file of loop device MAJ:MIN (Kata's ``getBackingFile``), or None.

    None when the device is not a loop device (no ``loop/backing_file``) or has no backing file.
    """
    value = host.sysfs.read_line(f"{sysfs_block_dir(major, minor)}/loop/backing_file")
    return value or None


def block_size(host: HostContext, major: int, minor: int) -> int | None:
    """Size in bytes of block device MAJ:MIN from sysfs ``size`` (512-byte sectors), or None."""
    text = host.sysfs.read_line(f"{sysfs_block_dir(major, minor)}/size")
    if text is None or not text.isdigit():
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
        log.info("%s: cannot read the read-only flag of %s (BLKROGET): %s", device, node, exc.strerror)
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
    or has no such mount point.
    """
    try:
        text = host.proc_path("mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = [fstype for _, point, fstype in parse_mounts(text) if point == mount_point]
    return found[-1] if found else None

