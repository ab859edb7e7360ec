"""StratoVirt's command-line options: ``kind,key=value,...`` without QEMU's escape.

StratoVirt splits every option at each ``,`` and then each ``=`` (``str_slip_to_clap`` in its
``machine_manager/src/config``) and knows no ``,,`` escape, so a value holding either character
cannot be passed at all: it is refused with a one-line error naming the device and field, never
escaped QEMU's way (StratoVirt would read another option). Hot-plugged devices go through the same
parser (``add_device_config`` joins the QMP arguments with commas), so QMP values are checked too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from vmdev.errors import UnsupportedError

_NAME_RE: Final = re.compile(r"[a-z][a-z0-9.-]*")
#: characters StratoVirt's option parser splits at (and control characters, which no option holds)
_FORBIDDEN: Final = re.compile(r"[,=\x00-\x1f]")

Value = str | int | bool


def check_value(value: str, *, device: str, field: str) -> str:
    """``value`` if StratoVirt can take it as one option value, else :class:`UnsupportedError`."""
    if _FORBIDDEN.search(value) or not value:
        raise UnsupportedError(
            f"StratoVirt cannot take {value!r}: it splits options at ',' and '=' and has no escape",
            device=device,
            field=field,
        )
    return value


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def options(
    kind: str, values: Mapping[str, Value], *, device: str, fields: Mapping[str, str] | None = None
) -> str:
    """``kind,key=value,...`` (``kind`` empty: no head, as ``-drive`` takes it).

    Booleans are ``on``/``off`` (StratoVirt's ``parse_bool`` takes both spellings). A bad value
    is reported under ``fields[key]`` (the settings key it came from) or the option's key.
    """
    parts = [kind] if kind else []
    for key, value in values.items():
        if not _NAME_RE.fullmatch(key):
            raise ValueError(f"invalid StratoVirt option key {key!r}")
        field = (fields or {}).get(key, key)
        parts.append(f"{key}={check_value(_text(value), device=device, field=field)}")
    return ",".join(parts)


def pci_addr(slot: int, function: int = 0) -> str:
    """``0x3`` (StratoVirt's ``addr``: slot, optionally ``.function``; slots 0..31)."""
    if not 0 <= slot <= 31 or not 0 <= function <= 7:
        raise ValueError(f"PCI slot {slot} function {function} out of range")
    return f"{slot:#x}" if function == 0 else f"{slot:#x}.{function:#x}"
