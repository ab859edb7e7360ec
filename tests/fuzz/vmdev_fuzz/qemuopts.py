"""A QEMU command line read the way QEMU reads it.

QEMU splits ``-device``/``-chardev``/``-netdev``/... values with QemuOpts (``util/qemu-option.c``:
``get_opt_name_value``) and ``-blockdev``/``-object`` values with keyval (``util/keyval.c``); for
what vmdev writes both work alike: parameters are separated by ``,``, ``,,`` is a literal comma in
a value, a parameter is ``key=value``, and the first parameter may be the *implied* key (the
driver of ``-device``, the qom-type of ``-object``, the backend of ``-chardev``) when it holds no
``=``. A bare ``key`` elsewhere is QemuOpts' boolean shorthand (``key=on``, ``nokey`` is
``key=off``). A value starting with ``{`` is JSON (``-blockdev``, ``-object``, ``-device`` accept
it). Everything here is written from that description, not copied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

#: the implied first key of each option that has one; options not listed have none (keyval)
IMPLIED: Final[Mapping[str, str | None]] = {
    "-device": "driver",
    "-object": "qom-type",
    "-chardev": "backend",
    "-netdev": "type",
    "-fsdev": "fsdriver",
    "-machine": "type",
    "-M": "type",
    "-m": "size",
    "-numa": "type",
    "-smp": "cpus",
    "-accel": "accel",
    "-blockdev": None,
    "-drive": None,
    "-iothread": None,
    "-global": None,
}
#: options that take no value
NO_VALUE: Final = frozenset({"-S", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-no-hpet",
                             "-enable-kvm", "-no-acpi", "-no-shutdown", "-daemonize"})


@attrs.frozen
class Option:
    """One option of a command line: ``-device virtio-blk-pci,id=x,drive=y`` is flag ``-device``,
    head ``virtio-blk-pci``, params ``(("driver", "virtio-blk-pci"), ("id", "x"), ("drive", "y"))``."""

    flag: str
    raw: str
    head: str
    params: tuple[tuple[str, str], ...]
    #: bare parameters (``readonly`` for ``readonly=on``): vmdev never writes them
    bare: tuple[str, ...] = ()
    json_form: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.params)

    def get(self, key: str) -> str | None:
        """The value QEMU takes for ``key`` (the last one: QemuOpts lets later ones win)."""
        found = [value for k, value in self.params if k == key]
        return found[-1] if found else None

    def duplicates(self) -> list[str]:
        seen: set[str] = set()
        out = []
        for key in self.keys:
            if key in seen:
                out.append(key)
            seen.add(key)
        return out


def _value(text: str, start: int) -> tuple[str, int]:
    """QEMU's ``get_opt_value``: up to the next single comma; ``,,`` is a comma."""
    out: list[str] = []
    i = start
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                out.append(",")
                i += 2
                continue
            break
        out.append(text[i])
        i += 1
    return "".join(out), i


def parse_params(text: str, implied: str | None) -> tuple[list[tuple[str, str]], list[str]]:
    """``(key, value)`` pairs and bare parameters of one option value."""
    params: list[tuple[str, str]] = []
    bare: list[str] = []
    i = 0
    first = True
    while i < len(text):
        cut = len(text)
        for stop in ("=", ","):
            found = text.find(stop, i)
            if found >= 0:
                cut = min(cut, found)
        if first and implied and cut > i and (cut == len(text) or text[cut] != "="):
            value, i = _value(text, i)
            params.append((implied, value))
        else:
            key = text[i:cut]
            i = cut
            if i < len(text) and text[i] == "=":
                value, i = _value(text, i + 1)
                params.append((key, value))
            else:
                bare.append(key)
                params.append((key[2:], "off") if key.startswith("no") else (key, "on"))
        first = False
        if i < len(text):
            i += 1  # the separating comma
    return params, bare


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(f"{prefix}.{index}", item, out)
    elif isinstance(value, bool):
        out.append((prefix, "on" if value else "off"))
    else:
        out.append((prefix, str(value)))


def parse_option(flag: str, raw: str) -> Option:
    implied = IMPLIED.get(flag)
    if raw.startswith("{"):
        pairs: list[tuple[str, str]] = []
        _flatten("", json.loads(raw), pairs)
        head = dict(pairs).get(implied or "driver", "")
        return Option(flag=flag, raw=raw, head=head, params=tuple(pairs), json_form=True)
    params, bare = parse_params(raw, implied)
    head = params[0][1] if implied and params and params[0][0] == implied else ""
    if not implied:
        head = dict(params).get("driver", "") if flag in ("-blockdev", "-drive") else ""
    return Option(flag=flag, raw=raw, head=head, params=tuple(params), bare=tuple(bare))


def parse_argv(argv: Sequence[str]) -> list[Option]:
    """Every option of ``argv`` (flags without a value are left out)."""
    out: list[Option] = []
    i = 0
    while i < len(argv):
        flag = argv[i]
        if not flag.startswith("-") or flag in NO_VALUE or i + 1 >= len(argv):
            i += 1
            continue
        out.append(parse_option(flag, argv[i + 1]))
        i += 2
    return out
