"""The PFN info block of a persistent-memory image: read it, check it, write one.

A persistent-memory image carries the Linux kernel's ``NVDIMM_PFN_INFO`` block at byte 4096 (the
info block the guest kernel reads to set up DAX; ``struct nd_pfn_sb``). The pmem probe
(:func:`vmdev_block.host.pmem_device_info`, Kata's ``PmemDeviceInfo``) reads it with
:func:`read_pfn_info`; image builders (tests, Kata's ``nsdax``) write one with
:func:`pfn_info_block`. Nothing here looks at the host beyond the file it is given.

Beyond Kata: the whole 16-byte kernel signature (with its NUL) is required, and the info block's
Fletcher-64 checksum is verified (:attr:`PfnInfo.checksum_ok`).
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from typing import Final

import attrs

log = logging.getLogger("vmdev.block")

PFN_INFO_OFFSET: Final = 4096
PFN_SIGNATURE: Final = b"NVDIMM_PFN_INFO\0"
PFN_INFO_SIZE: Final = 4096
#: ``struct nd_pfn_sb`` up to ``align`` (little endian), see Linux drivers/nvdimm/pfn.h
_PFN_HEAD: Final = struct.Struct("<16s16s16sIHHQQIIII")
_CHECKSUM_OFFSET: Final = PFN_INFO_SIZE - 8


@attrs.frozen(kw_only=True)
class PfnInfo:
    """The fields of a PFN info block the plan cares about."""

    version_major: int
    version_minor: int
    dataoff: int
    npfns: int
    mode: int
    align: int
    checksum_ok: bool


def fletcher64(data: bytes) -> int:
    """The kernel's ``nd_fletcher64(data, len, le=true)`` over 32-bit little-endian words."""
    lo, hi = 0, 0
    for (word,) in struct.iter_unpack("<I", data[: len(data) - len(data) % 4]):
        lo = (lo + word) & 0xFFFFFFFF
        hi = (hi + lo) & 0xFFFFFFFFFFFFFFFF
    return ((hi << 32) | lo) & 0xFFFFFFFFFFFFFFFF


def pfn_checksum(block: bytes) -> int:
    """The checksum of a 4096-byte info block, computed with its checksum field zeroed."""
    return fletcher64(block[:_CHECKSUM_OFFSET] + b"\0" * 8)


#: ``PFN_MODE_RAM``: the guest keeps the page map in RAM (no room reserved in the image)
PFN_MODE_RAM: Final = 1
PAGE_SIZE: Final = 4096
DEFAULT_DATAOFF: Final = 2 * 1024 * 1024


def pfn_info_block(
    size: int,
    *,
    dataoff: int = DEFAULT_DATAOFF,
    align: int = DEFAULT_DATAOFF,
    uuid: bytes = b"vmdev-pmem-image",
) -> bytes:
    """A valid 4096-byte PFN info block for an image of ``size`` bytes (the image builder's side,
    Kata's ``nsdax``): version 1.4, ``PFN_MODE_RAM``, data from ``dataoff``; write it at byte 4096.

    The parent uuid is zero: QEMU's label-less nvdimm namespace has no uuid. The guest kernel then
    exposes ``/dev/pmem<N>`` of ``size - dataoff`` bytes starting at ``dataoff`` of the image.
    """
    if len(uuid) != 16 or not 2 * PAGE_SIZE <= dataoff < size or dataoff % align or align % PAGE_SIZE:
        raise ValueError(f"bad PFN layout: size={size} dataoff={dataoff} align={align} uuid={uuid!r}")
    npfns = (size - dataoff) // PAGE_SIZE
    head = _PFN_HEAD.pack(PFN_SIGNATURE, uuid, b"\0" * 16, 0, 1, 4, dataoff, npfns, PFN_MODE_RAM, 0, 0, align)
    block = bytearray(PFN_INFO_SIZE)
    block[: len(head)] = head
    struct.pack_into("<IH", block, len(head), PAGE_SIZE, 64)  # page_size, page_struct_size
    struct.pack_into("<Q", block, _CHECKSUM_OFFSET, pfn_checksum(bytes(block)))
    return bytes(block)


def read_pfn_info(path: str | os.PathLike[str]) -> PfnInfo | None:
    """The PFN info block at byte 4096 of ``path``, or None without the signature.

    Like Kata, a file that cannot be opened or is too short has no signature.
    """
    try:
        # a FIFO or device named as the backing file must not block the plan: open non-blocking and
        # read regular files only
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with os.fdopen(fd, "rb") as image:
            if not stat.S_ISREG(os.fstat(image.fileno()).st_mode):
                log.info("the PFN info block of %r is not read: not a regular file", os.fspath(path))
                return None
            image.seek(PFN_INFO_OFFSET)
            block = image.read(PFN_INFO_SIZE)
    except OSError as exc:
        log.info("cannot read the PFN info block of %r: %s", os.fspath(path), exc.strerror)
        return None
    except ValueError:  # a NUL byte in the path sysfs gave (found by the long fuzz run): no such file
        log.info("cannot read the PFN info block of %r: a path holds no NUL byte", os.fspath(path))
        return None
    if not block.startswith(PFN_SIGNATURE):
        return None
    if len(block) < PFN_INFO_SIZE:
        return PfnInfo(version_major=0, version_minor=0, dataoff=0, npfns=0, mode=0, align=0,
                       checksum_ok=False)
    fields = _PFN_HEAD.unpack_from(block)
    (stored,) = struct.unpack_from("<Q", block, _CHECKSUM_OFFSET)
    return PfnInfo(
        version_major=fields[4],
        version_minor=fields[5],
        dataoff=fields[6],
        npfns=fields[7],
        mode=fields[8],
        align=fields[11],
        checksum_ok=stored == pfn_checksum(block),
    )
