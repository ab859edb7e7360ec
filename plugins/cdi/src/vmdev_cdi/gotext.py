"""Go's spelling of values in error texts, so that messages match the Go CDI library byte for byte.

The reference (``tags.cncf.io/container-device-interface``) formats names with ``%q``, checks
the first and last *byte* of a name but iterates the middle as UTF-8 runes, prints floats that
YAML hands to string fields with ``strconv.FormatFloat(v, 'g', -1, 32)`` and reports file
errors as ``op path: errno text``. These helpers reproduce exactly that.
"""

from __future__ import annotations

import errno as errno_codes
import math
import os
import struct
from typing import Final

_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def goquote(text: str) -> str:
    """Go's ``strconv.Quote`` (``%q``): double quotes, Go escapes, non-printables as ``\\x``/``\\u``.

    Lone surrogates (bytes that were not UTF-8, decoded with ``surrogateescape``) print as the
    byte they stand for, as Go prints invalid UTF-8.
    """
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def utf8(text: str) -> bytes:
    """The bytes Go would see for ``text`` (surrogate escapes give back their original bytes)."""
    return text.encode("utf-8", "surrogateescape")


def runes(data: bytes) -> str:
    """Go's ``for _, c := range string(data)``: invalid UTF-8 becomes U+FFFD."""
    return data.decode("utf-8", "replace")


def byte_rune(value: int) -> str:
    """Go's ``rune(s[i])``: a byte taken as a code point (0xC3 is ``Ã``)."""
    return chr(value)


def format_float32(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 32)``: shortest float32 digits, ``%e`` when the
    exponent is below -4 or at least 6 (``1.0`` is ``1``, ``1e6`` is ``1e+06``)."""
    if math.isnan(value):
        return "NaN"
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        single = math.copysign(math.inf, value)
    if math.isinf(single):
        return "+Inf" if single > 0 else "-Inf"
    if single == 0:
        return "-0" if math.copysign(1.0, single) < 0 else "0"
    digits, exponent = _shortest_digits(single)
    sign = "-" if single < 0 else ""
    point = exponent + 1  # digits before the decimal point
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest_digits(single: float) -> tuple[str, int]:
    """The fewest significant digits that read back as the same float32, and the exponent."""
    for precision in range(1, 10):
        text = f"{abs(single):.{precision - 1}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == abs(single):
            break
    mantissa, exp_text = text.split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    return digits, int(exp_text)


def go_json_number(value: float) -> str:
    """How Go's ``encoding/json`` writes a float64 (what a YAML float becomes before decoding)."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exp_text = text.split("e")
        exp = int(exp_text)
        text = f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return text


def errno_text(code: int | None) -> str:
    """Go's text for an errno: the C library's, lower-cased first letter (``no such file or
    directory``)."""
    if code is None:
        return "unknown error"
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def path_error(op: str, path: str, exc: OSError) -> str:
    """Go's ``*fs.PathError`` text: ``open /etc/cdi/x.yaml: permission denied``."""
    return f"{op} {path}: {errno_text(exc.errno)}"


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` on Unix (``//a/./b/..`` is ``/a``; ``""`` is ``.``)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    body = "/".join(parts)
    if rooted:
        return "/" + body
    return body or "."


def ext(path: str) -> str:
    """Go's ``filepath.Ext``: from the last dot of the last element (``a.yaml.bak`` is ``.bak``)."""
    for index in range(len(path) - 1, -1, -1):
        if path[index] == "/":
            return ""
        if path[index] == ".":
            return path[index:]
    return ""


#: errno values for which Go's os.IsNotExist is true
NOT_EXIST: Final = (errno_codes.ENOENT,)
