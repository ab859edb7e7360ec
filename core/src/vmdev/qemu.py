"""Safe building blocks for QEMU command lines and QMP commands.

QEMU's keyval syntax splits ``-device``/``-object``/``-drive`` values at
commas, so a host path such as ``/img/disk,readonly`` would silently add an
option (Kata does not escape; see the reference). Everything that goes on a
command line is built by :func:`opts`, which validates every name and doubles
every comma in every value. QMP arguments are JSON and need no escaping, but
the ids they carry are validated all the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from vmdev._convert import any_dict, str_tuple
from vmdev.errors import InvalidIdError

try:  # hashlib's own BLAKE2, without hashlib (which loads OpenSSL for hashes vmdev never uses)
    from _blake2 import blake2b as blake2b
except ImportError:  # pragma: no cover - an interpreter without CPython's _blake2 module
    from hashlib import blake2b as blake2b

#: What QEMU accepts as an id (``id_wellformed``): a letter, then letters, digits, ``-._``.
_ID_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_ID_LENGTH: Final = 127

OptValue = str | int | bool


def _opt_dict(value: Mapping[str, OptValue]) -> dict[str, OptValue]:
    return dict(value)


def _args_dict(value: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    return {key: tuple(args) for key, args in value.items()}


def check_id(value: str, *, device: str = "", field: str = "id") -> str:
    """Return ``value`` if it is a well-formed QEMU id, else raise :class:`InvalidIdError`."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"{value!r} is not a valid QEMU id (a letter, then letters, digits, '-', '_', '.'; "
            f"at most {MAX_ID_LENGTH} characters)",
            device=device,
            field=field,
        )
    return value


def make_id(prefix: str, key: str, *, length: int = 16) -> str:
    """A stable id ``<prefix>-<hex>`` derived from ``key`` (the same request gives the same id).

    Kata draws 8 random bytes; a plan is better reproducible, so the hex part
    is a BLAKE2 digest of ``key`` instead.
    """
    digest = blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
    return check_id(f"{prefix}-{digest[:length]}")


def escape(value: str) -> str:
    """Escape one keyval value: commas are doubled. Control characters are refused."""
    if any(ord(ch) < 0x20 for ch in value):
        raise ValueError(f"control character in QEMU option value {value!r}")
    return value.replace(",", ",,")


def _render_value(value: OptValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return escape(value)


def opts(head: str, props: Mapping[str, OptValue | None] | None = None) -> str:
    """``head,key=value,...`` with every value escaped; ``None`` values are left out.

    ``head`` is the implied first value (the driver of ``-device``, the
    qom-type of ``-object``, the backend of ``-chardev``); it and every key must
    be plain names, so nothing a caller passes can start another option.
    """
    if not _NAME_RE.fullmatch(head):
        raise ValueError(f"invalid QEMU option head {head!r}")
    rest = keyvals(props or {})
    return f"{head},{rest}" if rest else head


def keyvals(props: Mapping[str, OptValue | None]) -> str:
    """``key=value,...`` without a head (for ``-machine``/``-m`` style options)."""
    rendered = []
    for key, value in props.items():
        if value is None:
            continue
        if not _NAME_RE.fullmatch(key):
            raise ValueError(f"invalid QEMU option key {key!r}")
        rendered.append(f"{key}={_render_value(value)}")
    return ",".join(rendered)


def split_opts(text: str) -> list[str]:
    """Split a keyval string the way QEMU does (``,,`` is a literal comma). For tests and tools."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if i + 1 < len(text) and text[i + 1] == ",":
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


@attrs.frozen
class QmpCommand:
    """One QMP command: ``{"execute": ..., "arguments": {...}}``."""

    execute: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"execute": self.execute}
        if self.arguments:
            out["arguments"] = dict(self.arguments)
        return out


def _cmd_tuple(value: Iterable[QmpCommand]) -> tuple[QmpCommand, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class MemoryNeeds:
    """Machine-level memory a device needs: hot-plug slots, extra maxmem, shared RAM."""

    slots: int = 0
    maxmem_extra_mib: int = 0
    shared: bool = False


@attrs.frozen(kw_only=True)
class QemuAttach:
    """What a plugin renders for one device on QEMU.

    ``args`` are the cold-plug options. ``hotplug``/``unplug`` are the QMP
    commands to attach/detach the device in a running VM (``hotplugged`` tells
    which of the two ways the plugin chose). ``shared_args`` are options that
    several devices may need but that must appear once (keyed, for example the
    SCSI controller); ``machine`` holds ``-machine`` properties; ``memory`` the
    memory layout the device needs.
    """

    args: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    hotplug: tuple[QmpCommand, ...] = attrs.field(default=(), converter=_cmd_tuple)
    unplug: tuple[QmpCommand, ...] = attrs.field(default=(), converter=_cmd_tuple)
    hotplugged: bool = False
    shared_args: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_args_dict)
    machine: Mapping[str, OptValue] = attrs.field(factory=dict, converter=_opt_dict)
    memory: MemoryNeeds = attrs.field(factory=MemoryNeeds)
    #: extra fields to show in the plan for this device (e.g. the guest bus)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)
