"""libvirt XML with the standard library's ElementTree: escaping is structural, never by hand.

Every element vmdev hands to libvirt is built here as an :class:`xml.etree.ElementTree.Element`
and serialised once by :func:`to_xml`. ElementTree escapes ``<``, ``&`` and quotes in text and
attributes, so a host path such as ``/img/a'b<c>.raw`` stays one attribute value. What XML 1.0
cannot carry at all (NUL and the other C0 control characters but tab, LF and CR, and the lone
surrogates that stand for undecodable bytes in a Linux path) is refused with an error naming the
device and the field, instead of an element libvirt would reject or read differently.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final

from vmdev.errors import UnsupportedError

#: characters an XML 1.0 document cannot contain (and lone surrogates, which cannot be encoded)
_ILLEGAL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Attrs = Mapping[str, str | int | bool | None]


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def element(tag: str, attrib: Attrs | None = None, *children: ET.Element | None, text: str | None = None
            ) -> ET.Element:
    """``<tag k='v'...>text children</tag>``; ``None`` attribute values and children are left out,
    booleans become ``yes``/``no`` (libvirt's spelling)."""
    node = ET.Element(tag, {k: _value(v) for k, v in (attrib or {}).items() if v is not None})
    if text is not None:
        node.text = text
    node.extend(child for child in children if child is not None)
    return node


def check_text(value: str, *, device: str, field: str) -> str:
    """``value`` if XML can carry it, else :class:`UnsupportedError` naming the device and field."""
    bad = _ILLEGAL.search(value)
    if bad is not None:
        raise UnsupportedError(
            f"{value!r} cannot be written in libvirt XML ({bad.group()!r} is not allowed in XML 1.0)",
            device=device,
            field=field,
        )
    return value


def to_xml(node: ET.Element) -> str:
    """The element as one XML string (no declaration), every value escaped by ElementTree."""
    for item in node.iter():
        for text in (item.text, item.tail, *item.attrib.values()):
            if text is not None and _ILLEGAL.search(text):
                raise ValueError(f"<{item.tag}> holds a character XML 1.0 cannot carry: {text!r}")
    return ET.tostring(node, encoding="unicode")


def parse(text: str) -> ET.Element:
    """One element from its XML text (ValueError for anything else)."""
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not one well-formed XML element: {exc}") from None


def pretty(node: ET.Element) -> str:
    """The element indented for people (a copy: ``node`` is left as it is)."""
    copy = parse(to_xml(node))
    ET.indent(copy, space="  ")
    return ET.tostring(copy, encoding="unicode") + "\n"


def hex_attr(value: int, width: int) -> str:
    """``0x01`` style numbers, as libvirt writes addresses."""
    return f"0x{value:0{width}x}"


def pci_address(bus: int, slot: int = 0, function: int = 0, *, domain: int = 0,
                multifunction: bool = False, guest: bool = True) -> ET.Element:
    """``<address type='pci' .../>`` in the guest, or (``guest=False``) a host function's address
    inside a hostdev's ``<source>``, which has no ``type``."""
    return element("address", {
        "type": "pci" if guest else None,
        "domain": hex_attr(domain, 4),
        "bus": hex_attr(bus, 2),
        "slot": hex_attr(slot, 2),
        "function": hex_attr(function, 1),
        "multifunction": "on" if multifunction else None,
    })
