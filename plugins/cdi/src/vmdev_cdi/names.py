"""Qualified device names ``vendor/class=name`` (the Go library's ``pkg/parser``).

Parsing never fails (:func:`parse_device` hands back the input as the name when it is not
qualified); :func:`parse_qualified_name` then validates, in the reference's order and with its
texts. Quirks kept on purpose: every structural failure says ``missing vendor``; the device-name
first-character error says ``invalid class``; the first and last characters are checked as bytes
and the middle as UTF-8 characters; there is no length limit.
"""

from __future__ import annotations

from vmdev_cdi.errors import CDIError
from vmdev_cdi.gotext import byte_rune, goquote, runes, utf8


def is_letter(char: str) -> bool:
    return ("A" <= char <= "Z") or ("a" <= char <= "z")


def is_alnum(char: str) -> bool:
    return is_letter(char) or ("0" <= char <= "9")


def qualified_name(vendor: str, class_: str, name: str) -> str:
    """``vendor/class=name`` (no validation, as Go's ``QualifiedName``)."""
    return f"{vendor}/{class_}={name}"


def parse_qualifier(kind: str) -> tuple[str, str]:
    """``vendor/class`` split at the first ``/``; ``("", kind)`` when either side is missing."""
    vendor, sep, class_ = kind.partition("/")
    if not sep or not vendor or not class_:
        return "", kind
    return vendor, class_


def parse_device(device: str) -> tuple[str, str, str]:
    """``(vendor, class, name)``, or ``("", "", device)`` when ``device`` is not qualified."""
    if not device or device.startswith("/"):
        return "", "", device
    qualifier, sep, name = device.partition("=")
    if not sep or not qualifier or not name:
        return "", "", device
    vendor, class_ = parse_qualifier(qualifier)
    if not vendor:
        return "", "", device
    return vendor, class_, name


def parse_qualified_name(device: str) -> tuple[str, str, str]:
    """``(vendor, class, name)`` of a valid qualified name; :class:`CDIError` with Go's text else."""
    vendor, class_, name = parse_device(device)
    if not vendor:
        raise CDIError(f"unqualified device {goquote(device)}, missing vendor")
    if not class_:
        raise CDIError(f"unqualified device {goquote(device)}, missing class")
    if not name:
        raise CDIError(f"unqualified device {goquote(device)}, missing device name")
    checks = ((validate_vendor_name, vendor), (validate_class_name, class_), (validate_device_name, name))
    for check, part in checks:
        try:
            check(part)
        except CDIError as exc:
            raise CDIError(f"invalid device {goquote(device)}: {exc.message}") from None
    return vendor, class_, name


def is_qualified_name(device: str) -> bool:
    try:
        parse_qualified_name(device)
    except CDIError:
        return False
    return True


def validate_vendor_name(vendor: str) -> None:
    _vendor_or_class(vendor, "invalid vendor. ")


def validate_class_name(class_: str) -> None:
    _vendor_or_class(class_, "invalid class. ")


def _vendor_or_class(name: str, prefix: str) -> None:
    data = utf8(name)
    if not data:
        raise CDIError(prefix + "empty name")
    if not is_letter(byte_rune(data[0])):
        raise CDIError(prefix + f"{goquote(name)}, should start with letter")
    if len(data) == 1:
        return
    for char in runes(data[1:-1]):
        if not (is_alnum(char) or char in "_-."):
            raise CDIError(prefix + f"invalid character '{char}' in name {goquote(name)}")
    if not is_alnum(byte_rune(data[-1])):
        raise CDIError(prefix + f"{goquote(name)}, should end with a letter or digit")


def validate_device_name(name: str) -> None:
    """Go's ``ValidateDeviceName`` (its first-character message really says ``class``)."""
    data = utf8(name)
    if not data:
        raise CDIError("invalid (empty) device name")
    if not is_alnum(byte_rune(data[0])):
        raise CDIError(f"invalid class {goquote(name)}, should start with a letter or digit")
    if len(data) == 1:
        return
    for char in runes(data[1:-1]):
        if not (is_alnum(char) or char in "_-.:"):
            raise CDIError(f"invalid character '{char}' in device name {goquote(name)}")
    if not is_alnum(byte_rune(data[-1])):
        raise CDIError(f"invalid name {goquote(name)}, should end with a letter or digit")
