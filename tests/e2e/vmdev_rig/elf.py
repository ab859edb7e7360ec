"""Just enough ELF64 little-endian parsing for kernel modules and the busybox binary."""

from __future__ import annotations

import struct

_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_PT_INTERP = 3


def _check_elf64(data: bytes, what: str) -> None:
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{what}: not a little-endian ELF64 file")


def section(data: bytes, name: str, what: str = "ELF file") -> bytes | None:
    """Contents of the section called ``name``, or None if there is none."""
    _check_elf64(data, what)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [_SECTION_HEADER.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[strtab_offset : strtab_offset + strtab_size]
    wanted = name.encode()
    for header in headers:
        name_offset = header[0]
        end = strtab.find(b"\0", name_offset)
        if strtab[name_offset:end] == wanted:
            offset, size = header[4], header[5]
            return data[offset : offset + size]
    return None


def modinfo(data: bytes, what: str = "module") -> dict[str, list[str]]:
    """The ``key=value`` strings of a kernel module's ``.modinfo`` section."""
    raw = section(data, ".modinfo", what)
    if raw is None:
        raise ValueError(f"{what}: no .modinfo section")
    info: dict[str, list[str]] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def is_static_executable(data: bytes, what: str = "executable") -> bool:
    """True if the ELF file has no program interpreter (i.e. it is statically linked)."""
    _check_elf64(data, what)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        if _PROGRAM_HEADER.unpack_from(data, phoff + i * phentsize)[0] == _PT_INTERP:
            return False
    return True
