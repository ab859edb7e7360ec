"""Declared settings: every plugin names its keys once, the core parses them once.

A plugin implements ``register_settings(register)`` and calls ``register(Setting(...))`` for each
key it reads (its name, type, default, description, the Kata key it mirrors, and optionally the
command-line flag that sets it). Before any other hook runs, :func:`parse_settings` reads every
declared key from the settings' tables, checks its type and range, applies its default, and the
hooks read the typed value with ``settings.value(name)``. A wrong value is one
:class:`~vmdev.errors.ConfigError` line naming the key, never an internal error in the plugin that
reads it later.

Kata reads most keys from ``[hypervisor.<name>]`` and a few from ``[runtime]``; a
:class:`Setting` says which (``section``). vmdev's own keys may also be given in a ``[vmdev]``
table, which wins over the Kata sections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from vmdev.errors import ConfigError

STRING: Final = "string"
INTEGER: Final = "integer"
BOOLEAN: Final = "boolean"
NUMBER: Final = "number"
STRINGS: Final = "list of strings"
TABLE: Final = "table"
TABLES: Final = "list of tables"
TYPES: Final = (STRING, INTEGER, BOOLEAN, NUMBER, STRINGS, TABLE, TABLES)

HYPERVISOR: Final = "hypervisor"
RUNTIME: Final = "runtime"
SECTIONS: Final = (HYPERVISOR, RUNTIME)

#: the largest integer a settings key accepts unless it says otherwise (QEMU's uint64 range)
MAX_INTEGER: Final = 2**64 - 1


def _check_type(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in TYPES:
        raise ValueError(f"Setting {inst.name!r}: type {value!r} is not one of {', '.join(TYPES)}")


def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


def _any_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class Setting:
    """One settings key a plugin owns.

    ``choices`` limits a string key to these values; ``aliases`` maps other spellings to one of
    them (runtime-rs spells some of Kata's values differently). ``minimum``/``maximum`` bound an
    integer or number. ``check`` is called with the parsed value and raises ``ValueError`` with
    a message for anything else that is wrong (or a ``ConfigError`` whose ``field`` names a part of
    the value, such as ``interfaces[1].mac``). ``flag`` (``--widget-mode``) adds a command-line
    option to every command that takes settings; ``flag_sets`` are other keys the flag sets
    as well (a ``--store DIR`` flag may also set ``enable_store = true``). A list
    key's flag is repeatable.
    """

    name: str
    type: str = attrs.field(validator=_check_type)
    default: Any
    description: str
    kata_key: str = ""
    section: str = attrs.field(default=HYPERVISOR, validator=attrs.validators.in_(SECTIONS))
    choices: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    aliases: Mapping[str, str] = attrs.field(factory=dict, converter=_any_dict)
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], None] | None = attrs.field(default=None, eq=False)
    flag: str = ""
    flag_help: str = ""
    flag_metavar: str = ""
    #: the backends the key is for (Kata's [hypervisor.X] keys are per hypervisor: QEMU's and
    #: libvirt's enable_hugepages are two keys); empty: every backend
    backends: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    def applies_to(self, backend: str) -> bool:
        return not self.backends or backend in self.backends

    def overlaps(self, other: Setting) -> bool:
        """Whether one sandbox could read both (then they cannot share a name)."""
        return not self.backends or not other.backends or bool(set(self.backends) & set(other.backends))
    flag_sets: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_dict)

    def parse(self, raw: Any) -> Any:
        """The typed value of ``raw`` (as TOML or a flag gave it); ConfigError naming the key."""
        try:
            value = _PARSERS[self.type](self, raw)
            if self.check is not None:
                self.check(value)
        except ValueError as exc:
            raise ConfigError(str(exc), field=self.name) from None
        return value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "description": self.description,
            "kata_key": self.kata_key,
            "section": self.section,
        }
        for key in ("choices", "aliases", "minimum", "maximum", "flag", "backends"):
            value = getattr(self, key)
            if value or (value == 0 and value is not None):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _string(setting: Setting, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, got {_shown(raw)}")
    value = setting.aliases.get(raw, raw)
    if setting.choices and value not in setting.choices:
        raise ValueError(f"{_shown(raw)} is not one of {', '.join(repr(c) for c in setting.choices)}")
    _printable(value, raw)
    return value


def _printable(value: str, raw: Any) -> None:
    """Settings strings end up in paths, QEMU options, XML and JSON: a control character or a lone
    surrogate (which no file system, XML document or UTF-8 writer can carry) is refused here, once,
    naming the key, instead of failing wherever the value is used."""
    for ch in value:
        if ch == "\x00":
            raise ValueError(f"{_shown(raw)} contains a NUL character")
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            raise ValueError(f"{_shown(raw)} contains a control character")
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(f"{_shown(raw)} contains a lone surrogate (not a character)")


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _bounded(setting: Setting, value: float) -> None:
    low = setting.minimum
    high = setting.maximum if setting.maximum is not None else MAX_INTEGER
    if (low is not None and value < low) or value > high:
        top = _number_text(high)
        span = f"up to {top}" if low is None else f"from {_number_text(low)} to {top}"
        raise ValueError(f"must be a number {span}, got {_shown(value)}")


def _integer(setting: Setting, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"must be an integer, got {_shown(raw)}")
    _bounded(setting, raw)
    return raw


def _number(setting: Setting, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"must be a number, got {_shown(raw)}")
    _bounded(setting, raw)
    return float(raw)


def _boolean(setting: Setting, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"must be true or false, got {_shown(raw)}")
    return raw


def _strings(setting: Setting, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple):
        raise ValueError(f"must be a list of strings, got {_shown(raw)}")
    out = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ValueError(f"item {index} must be a string, got {_shown(item)}")
        if setting.choices and item not in setting.choices:
            raise ValueError(f"item {index} {_shown(item)} is not one of {', '.join(setting.choices)}")
        _printable(item, item)
        out.append(item)
    return tuple(out)


def _table(setting: Setting, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"must be a table, got {_shown(raw)}")
    return dict(raw)


def _tables(setting: Setting, raw: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list | tuple) or not all(isinstance(item, Mapping) for item in raw):
        raise ValueError(f"must be a list of tables, got {_shown(raw)}")
    return tuple(dict(item) for item in raw)


_PARSERS: Final[Mapping[str, Callable[[Setting, Any], Any]]] = {
    STRING: _string,
    INTEGER: _integer,
    BOOLEAN: _boolean,
    NUMBER: _number,
    STRINGS: _strings,
    TABLE: _table,
    TABLES: _tables,
}


@attrs.frozen(kw_only=True)
class DeclaredSetting:
    """A :class:`Setting` with the plugin that declared it (``vmdev settings`` lists these)."""

    setting: Setting
    plugin: str


def parse_settings(
    declared: Sequence[DeclaredSetting], tables: Mapping[str, Mapping[str, Any]], backend: str = ""
) -> dict[str, Any]:
    """The typed value of every declared key for ``backend``: from ``tables[section]`` or its
    default.

    ``tables`` maps a section (``hypervisor``, ``runtime``) to its raw keys; vmdev's own
    ``[vmdev]`` table and command-line overrides are already merged into ``hypervisor``.
    """
    values: dict[str, Any] = {}
    for entry in declared:
        setting = entry.setting
        if backend and not setting.applies_to(backend):
            continue
        table = tables.get(setting.section, {})
        values[setting.name] = setting.parse(table[setting.name]) if setting.name in table \
            else setting.default
    return values


__all__ = [
    "BOOLEAN",
    "INTEGER",
    "NUMBER",
    "STRING",
    "STRINGS",
    "TABLE",
    "TABLES",
    "DeclaredSetting",
    "Setting",
    "parse_settings",
]
