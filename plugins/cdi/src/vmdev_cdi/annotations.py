"""``cdi.k8s.io/`` annotations of an OCI spec: how device plugins and the kubelet name CDI devices.

Faithful to the Go library's ``annotations.go``: only keys with the exact prefix count, the rest
of the key is not checked, each value is split on ``,`` without trimming, and any item that is not
a qualified name fails the whole call. Go walks a map, so the order of keys is unspecified there;
here keys are taken in sorted order (values keep their own order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from vmdev_cdi.constants import ANNOTATION_PREFIX as ANNOTATION_PREFIX
from vmdev_cdi.errors import CDIError
from vmdev_cdi.gotext import byte_rune, goquote, runes, utf8
from vmdev_cdi.names import is_alnum, is_qualified_name, parse_qualified_name

#: the longest ``plugin_deviceID`` part of a key, in bytes
MAX_NAME_LEN: Final = 63


def parse_annotations(annotations: Mapping[str, str] | None) -> tuple[list[str], list[str]]:
    """``(keys, devices)`` named by the ``cdi.k8s.io/`` annotations; :class:`CDIError` for a bad name."""
    keys: list[str] = []
    devices: list[str] = []
    for key in sorted(annotations or {}):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        assert annotations is not None
        for item in annotations[key].split(","):
            if not is_qualified_name(item):
                raise CDIError(f"invalid CDI device name {goquote(item)}")
            devices.append(item)
        keys.append(key)
    return keys, devices


def annotation_key(plugin_name: str, device_id: str) -> str:
    """``cdi.k8s.io/<plugin>_<deviceID>`` with ``/`` in the device id replaced by ``_``."""
    if not plugin_name:
        raise CDIError("invalid plugin name, empty")
    if not device_id:
        raise CDIError("invalid deviceID, empty")
    name = plugin_name + "_" + device_id.replace("/", "_")
    data = utf8(name)
    if len(data) > MAX_NAME_LEN:
        raise CDIError(f"invalid plugin+deviceID {goquote(name)}, too long")
    first = byte_rune(data[0])
    if not is_alnum(first):
        raise CDIError(f"invalid name {goquote(name)}, first '{first}' should be alphanumeric")
    if len(data) > 2:
        for char in runes(data[1:-1]):
            if not (is_alnum(char) or char in "_-."):
                raise CDIError(f"invalid name {goquote(name)}, invalid character '{char}'")
    last = byte_rune(data[-1])
    if not is_alnum(last):
        raise CDIError(f"invalid name {goquote(name)}, last '{last}' should be alphanumeric")
    return ANNOTATION_PREFIX + name


def annotation_value(devices: Iterable[str]) -> str:
    """The devices joined with ``,``, each checked with :func:`parse_qualified_name`."""
    names = list(devices)
    for device in names:
        parse_qualified_name(device)
    return ",".join(names)


def update_annotations(
    annotations: dict[str, str] | None, plugin_name: str, device_id: str, devices: Iterable[str]
) -> dict[str, str]:
    """Add the annotation for ``devices`` in place (a new dict when ``annotations`` is None).

    On error nothing is changed: ``CDI annotation failed: ...`` or ``CDI annotation failed, key
    "..." used``.
    """
    try:
        key = annotation_key(plugin_name, device_id)
    except CDIError as exc:
        raise CDIError(f"CDI annotation failed: {exc.message}") from None
    if annotations is not None and key in annotations:
        raise CDIError(f"CDI annotation failed, key {goquote(key)} used")
    try:
        value = annotation_value(devices)
    except CDIError as exc:
        raise CDIError(f"CDI annotation failed: {exc.message}") from None
    if annotations is None:
        annotations = {}
    annotations[key] = value
    return annotations
