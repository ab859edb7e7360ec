"""JSON-ready (un)structuring of the models.

Field names are kept as written (snake_case), except that a trailing
underscore used to dodge a Python keyword is dropped (``class_`` -> ``class``).
Enums become their values and PCI paths their ``02/00/01`` strings.

:func:`to_json` walks the values itself: it runs for every plan, and cattrs (which
:func:`from_json` uses to rebuild saved devices) costs a tenth of a plan's start-up to import
and to generate its functions for each class. Its output is what cattrs' unstructuring gave
(``core/tests/test_serialize.py`` compares the two), with one difference no model shows: a field
is walked by its value's class, where cattrs went by the field's declared type (they differ only
for a subclass instance in a field declared as its base class).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from vmdev.models import PciPath

if TYPE_CHECKING:
    import cattrs

    #: the cattrs converter :func:`from_json` uses (made, with cattrs imported, on first use)
    converter: cattrs.Converter

T = TypeVar("T")

#: values JSON takes as they are
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
#: per attrs class: (attribute name, JSON name) of each field cattrs would write (``init`` fields)
_FIELDS: dict[type, tuple[tuple[str, str], ...] | None] = {}
_UNSEEN: Final[Any] = object()


def _make_converter() -> cattrs.Converter:
    import cattrs
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    converter = cattrs.Converter()
    converter.register_unstructure_hook(PciPath, str)
    converter.register_structure_hook(PciPath, lambda value, _: PciPath.parse(value))
    converter.register_unstructure_hook(enum.Enum, lambda value: value.value)

    def attrs_hook(cls: type[Any]) -> Any:
        renames = {
            f.name: override(rename=f.name.rstrip("_")) for f in attrs.fields(cls) if f.name.endswith("_")
        }
        return make_dict_unstructure_fn(cls, converter, **renames)  # type: ignore[arg-type]

    def attrs_structure(cls: type[Any]) -> Any:
        renames = {
            f.name: override(rename=f.name.rstrip("_")) for f in attrs.fields(cls) if f.name.endswith("_")
        }
        return make_dict_structure_fn(cls, converter, **renames)  # type: ignore[arg-type]

    converter.register_unstructure_hook_factory(attrs.has, attrs_hook)
    converter.register_structure_hook_factory(attrs.has, attrs_structure)
    return converter


_converter: cattrs.Converter | None = None


def __getattr__(name: str) -> Any:
    """``converter``: the cattrs converter :func:`from_json` uses, made on first use."""
    if name == "converter":
        return _cattrs()
    raise AttributeError(f"module 'vmdev.serialize' has no attribute {name!r}")


def _cattrs() -> cattrs.Converter:
    global _converter
    if _converter is None:
        _converter = _make_converter()
    return _converter


def to_json(value: Any) -> Any:
    """Unstructure an attrs model (or containers of them) into JSON-ready data."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    if cls is dict:  # the commonest container: keys and plain values without a call each
        return {k if type(k) is str else str(_key(k)): v if type(v) in _PLAIN else to_json(v)
                for k, v in value.items()}
    fields = _FIELDS.get(cls, _UNSEEN)
    if fields is _UNSEEN:
        fields = _FIELDS[cls] = _fields(cls)
    if fields is not None:
        return {key: v if type(v) in _PLAIN else to_json(v)
                for name, key in fields for v in (getattr(value, name),)}
    if isinstance(value, PciPath):  # an attrs class with its own form
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(_key(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [v if type(v) in _PLAIN else to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return type(value)(to_json(v) for v in value)
    return value


def _fields(cls: type) -> tuple[tuple[str, str], ...] | None:
    """(attribute name, JSON name) of each ``init`` field of an attrs class; None for anything else
    (and for :class:`PciPath`, an attrs class with its own form)."""
    if not attrs.has(cls) or issubclass(cls, PciPath):
        return None
    return tuple((f.name, f.name.rstrip("_")) for f in attrs.fields(cls) if f.init)


def _key(key: Any) -> Any:
    """A mapping key as cattrs left it before ``str()``: strings (str-based enums too) as they are,
    other enums as their values, PCI paths and file paths as their text."""
    if isinstance(key, str | bytes):
        return key
    if isinstance(key, enum.Enum):
        return key.value
    if isinstance(key, PciPath | Path):
        return str(key)
    return key


def from_json(cls: type[T], data: Any) -> T:
    """Structure ``data`` (as :func:`to_json` made it) back into ``cls``: for a family's
    ``device_from_state`` hook. Trailing-underscore fields are read from their JSON names
    (``class`` -> ``class_``). Errors propagate (the caller names the device)."""
    if attrs.has(cls) and isinstance(data, Mapping):  # fields added to the JSON later are ignored
        known = {f.name.rstrip("_") for f in attrs.fields(cls) if f.init}
        data = {key: value for key, value in data.items() if key in known}
    return _cattrs().structure(data, cls)
