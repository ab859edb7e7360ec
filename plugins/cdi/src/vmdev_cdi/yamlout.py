"""YAML as the Go library writes spec files (``go.yaml.in/yaml/v3``, four-space indent).

Only what spec documents hold: mappings in insertion order, sequences, strings, integers and
booleans. A sequence under a key is indented by four with its items' mappings two columns after
the dash; a string is plain unless it would read back as something else (``"0"``, ``"755"``,
``"true"``, ``"yes"``: double quotes) or cannot be plain (single quotes; double quotes when it
holds characters only they can escape). This is what makes ``nvidia-ctk cdi generate`` output
look the way it does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from vmdev_cdi.decode import BOOLS, SPECIAL_FLOATS, yaml_number

_INDENT: Final = 4
_FIRST_INDICATORS: Final = set("#,[]{}&*!|>'\"%@`")
_NULLS: Final = ("", "~", "null", "Null", "NULL")


def dump_yaml(value: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _mapping(value, lines, col=0, child=0 + _INDENT)
    return "".join(line + "\n" for line in lines)


def _is_block(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple)) and len(value) > 0


def _mapping(value: Mapping[str, Any], lines: list[str], *, col: int, child: int) -> None:
    pad = " " * col
    for key, item in value.items():
        if _is_block(item):
            lines.append(f"{pad}{scalar(str(key))}:")
            _block(item, lines, child)
        elif isinstance(item, str) and "\n" in item:
            lines.append(f"{pad}{scalar(str(key))}: {_literal_head(item)}")
            lines.extend(" " * child + part if part else "" for part in item.rstrip("\n").split("\n"))
        else:
            lines.append(f"{pad}{scalar(str(key))}: {_inline(item)}")


def _block(value: Any, lines: list[str], indent: int) -> None:
    if isinstance(value, Mapping):
        _mapping(value, lines, col=indent, child=indent + _INDENT)
    else:
        _sequence(value, lines, dash=indent)


def _sequence(value: Sequence[Any], lines: list[str], *, dash: int) -> None:
    for item in value:
        start = len(lines)
        if isinstance(item, Mapping) and item:
            _mapping(item, lines, col=dash + 2, child=dash + _INDENT)
        elif isinstance(item, (list, tuple)) and item:
            _sequence(item, lines, dash=dash + 2)
        else:
            lines.append(" " * (dash + 2) + _inline(item))
        lines[start] = " " * dash + "- " + lines[start][dash + 2:]


def _inline(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return scalar(str(value))


def _literal_head(text: str) -> str:
    return "|" if text.endswith("\n") else "|-"


def _reads_as_other(text: str) -> bool:
    """Would a plain ``text`` read back as a non-string (yaml.v3's rule, old booleans included)?"""
    if text in BOOLS or text in _NULLS or text in SPECIAL_FLOATS:
        return True
    if text[:1] in "-+.0123456789" and not isinstance(yaml_number(text), str):
        return True
    return ":" in text and all(part.isdigit() for part in text.lstrip("+-").replace(".", "").split(":"))


def _plain_allowed(text: str) -> bool:
    if not text or text[0] in " \t" or text[-1] in " \t" or not text.isprintable():
        return False
    first, second = text[0], text[1:2]
    if first in _FIRST_INDICATORS:
        return False
    if first in "-?:" and second in ("", " "):
        return False
    return not (": " in text or text.endswith(":") or " #" in text)


def scalar(text: str) -> str:
    """``text`` as yaml.v3 writes a string scalar."""
    if _reads_as_other(text):
        return _double(text)
    if _plain_allowed(text):
        return text
    if text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    return _double(text)


def _double(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char.isprintable():
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02X}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    out.append('"')
    return "".join(out)
