"""Test builders for block devices on a fake host (:class:`vmdev.testing.FakeHost`).

The core's ``FakeHost`` builds what every family needs (uevents, ``/dev`` nodes, ``stat`` answers);
the block family's own kinds of host objects are built here: loop devices with their backing
file, disks with a size, and persistent-memory images. Nothing here needs root: device nodes are
regular files that the fake ``stat`` reports as block devices.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from vmdev.fakehost import FakeHost
from vmdev_block.pmem import PFN_INFO_OFFSET, pfn_info_block

SECTOR: Final = 512
#: the mode a fake block node reports through the stat seam
BLOCK_NODE_MODE: Final = stat.S_IFBLK | 0o660
LOOP_MAJOR: Final = 7


def loop_device(
    fake: FakeHost,
    major: int,
    minor: int,
    backing_file: str | os.PathLike[str],
    *,
    devname: str | None = None,
) -> Path:
    """A loop block device: uevent, ``/dev`` node, ``loop/backing_file`` (as the kernel writes it,
    with a newline) and ``size`` in 512-byte sectors when the backing file exists.
    Returns the sysfs device directory (``sys/dev/block/MAJ:MIN``)."""
    name = devname or f"loop{minor}"
    fake.block_device(major, minor, name)
    directory = f"dev/block/{major}:{minor}"
    fake.write(f"{directory}/loop/backing_file", f"{os.fspath(backing_file)}\n")
    backing = Path(backing_file)
    if backing.is_file():
        fake.write(f"{directory}/size", f"{backing.stat().st_size // SECTOR}\n")
    return fake.sysfs / directory


def block_node(fake: FakeHost, major: int, minor: int, name: str, *, size: int | None = None) -> str:
    """``/dev/<name>``, a block device node MAJ:MIN (``S_ISBLK`` through the stat seam), with its
    sysfs ``size`` when given (bytes). Returns the host path (``/dev/<name>``)."""
    fake.block_device(major, minor, name)
    if size is not None:
        fake.write(f"dev/block/{major}:{minor}/size", f"{size // SECTOR}\n")
    fake.fake_stat(str(fake.dev / name), mode=BLOCK_NODE_MODE, rdev=(major, minor))
    return f"/dev/{name}"


def image_file(path: Path, size: int, *, pfn: bool = False) -> Path:
    """A sparse file of ``size`` bytes; with ``pfn``, a persistent-memory image (a valid PFN info
    block at byte 4096, as Kata's image builder writes it)."""
    with open(path, "wb") as image:
        image.truncate(size)
        if pfn:
            image.seek(PFN_INFO_OFFSET)
            image.write(pfn_info_block(size))
    return path


def loop_mount(
    fake: FakeHost, minor: int, backing_file: Path, source: Path, *, fstype: str | None = "ext2"
) -> Path:
    """``source``, a directory whose file system lives on ``/dev/loop<minor>`` backed by
    ``backing_file`` (``st_dev`` through the stat seam), listed in ``/proc/mounts`` with
    ``fstype`` unless it is None. Returns ``source``."""
    loop_device(fake, LOOP_MAJOR, minor, backing_file)
    source.mkdir(parents=True, exist_ok=True)
    fake.fake_stat(str(source), mode=stat.S_IFDIR | 0o755, dev=(LOOP_MAJOR, minor))
    if fstype is not None:
        fake.proc_file("mounts", f"/dev/loop{minor} {source} {fstype} rw,relatime 0 0\n")
    return source


__all__ = ["block_node", "image_file", "loop_device", "loop_mount"]
