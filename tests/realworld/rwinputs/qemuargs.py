"""Reading a planned QEMU command line and its hot-plug commands (for the Kata-behaviour checks)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from vmdev.qemu import split_opts


@attrs.frozen
class Opt:
    """One ``-name value`` of the command line, its first item and its ``key=value`` items."""

    name: str
    head: str
    props: Mapping[str, str]


def options(argv: Sequence[str]) -> list[Opt]:
    out = []
    i = 0
    while i < len(argv):
        name = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else ""
        items = split_opts(value) if value else [""]
        head = items[0] if "=" not in items[0] else ""
        props = dict(item.split("=", 1) for item in items if "=" in item)
        out.append(Opt(name, head, props))
        i += 2 if value else 1
    return out


def devices(qemu: Mapping[str, Any], *, hotplug: bool) -> Iterator[Mapping[str, Any]]:
    """Every device of the plan as ``{"driver": ..., prop: value}``: ``-device`` options and, for
    a hot plan, the ``device_add`` commands (values as strings, like the command line's)."""
    for opt in options(qemu.get("argv") or []):
        if opt.name == "-device":
            yield {"driver": opt.head or opt.props.get("driver", ""), **opt.props}
    if hotplug:
        for command in qemu.get("hotplug") or []:
            if command.get("execute") == "device_add":
                args = command.get("arguments") or {}
                yield {key: _text(value) for key, value in args.items()}


def objects(qemu: Mapping[str, Any], *, hotplug: bool) -> Iterator[Mapping[str, Any]]:
    """Every ``-object`` (and hot-plugged ``object-add``) as ``{"qom-type": ..., prop: value}``."""
    for opt in options(qemu.get("argv") or []):
        if opt.name == "-object":
            yield {"qom-type": opt.head or opt.props.get("qom-type", ""), **opt.props}
    if hotplug:
        for command in qemu.get("hotplug") or []:
            if command.get("execute") == "object-add":
                args = command.get("arguments") or {}
                yield {key: _text(value) for key, value in args.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def memory(argv: Sequence[str]) -> Mapping[str, str]:
    """The ``-m`` option: ``{"size": "2048M", "slots": ..., "maxmem": ...}`` ({} without -m)."""
    for opt in options(argv):
        if opt.name == "-m":
            return {"size": opt.head or opt.props.get("size", ""), **opt.props}
    return {}


def machine(argv: Sequence[str]) -> Mapping[str, str]:
    props: dict[str, str] = {}
    for opt in options(argv):
        if opt.name in ("-machine", "-M"):
            if opt.head:
                props["type"] = opt.head
            props.update(opt.props)
    return props


def mib(size: str) -> int | None:
    """QEMU size text in MiB (``2048M``, ``2G``, plain bytes)."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    try:
        if size and size[-1].upper() in units:
            return int(float(size[:-1]) * units[size[-1].upper()])
        return int(size) // (1024 * 1024)
    except ValueError:
        return None
