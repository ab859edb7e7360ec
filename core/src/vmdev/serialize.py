"""JSON-ready (un)structuring of the models.

Field names are kept as written (snake_case), except that a trailing
underscore used to dodge a Python keyword is dropped (``class_`` -> ``class``).
Enums become their values and PCI paths their ``02/00/01`` strings.

:func:`to_json` walks the values itself and :func:`from_json` reads them back with
:mod:`vmdev.typedjson`: both run in short-lived processes (every plan, every ``vmdev attach``),
and cattrs, which did this before, cost a tenth of a plan's start-up to import and to generate
its functions for each class (issue 13). The output is what cattrs' unstructuring gave
(``core/tests/test_serialize.py`` compares the two), with one difference no model shows: a field
is walked by its value's class, where cattrs went by the field's declared type (they differ only
for a subclass instance in a field declared as its base class). Reading back is stricter than
cattrs was: every value must have its field's JSON type (cattrs converted ``"2"`` to 2).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from vmdev.errors import VmdevError
from vmdev.models import PciPath

if TYPE_CHECKING:
    from vmdev.typedjson import TypedReader

T = TypeVar("T")

#: values JSON takes as they are
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
#: per class: (attribute name, JSON name) of each ``init`` field of an attrs class, None for others
_FIELDS: dict[type, tuple[tuple[str, str], ...] | None] = {}
_UNSEEN: Final[Any] = object()


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
    (``class`` -> ``class_``), fields added to the JSON later are ignored, and every value must
    have its field's JSON type (:mod:`vmdev.typedjson`). What a class's own checks raise comes
    out as it was raised (a :class:`VmdevError` naming its field); any other mismatch is a
    :class:`vmdev.typedjson.Invalid`, a ``ValueError`` naming its JSON path. The caller names
    the device."""
    from vmdev.typedjson import Invalid

    try:
        value: T = _reader().read(data, cls)
    except Invalid as exc:
        if isinstance(exc.error, VmdevError):
            raise exc.error from None
        raise
    return value


_readers: list[TypedReader] = []


def _reader() -> TypedReader:
    if not _readers:
        from vmdev.typedjson import TypedReader

        _readers.append(TypedReader(hooks={PciPath: _pci_path}))
    return _readers[0]


def _pci_path(value: Any, path: str) -> PciPath:
    from vmdev.typedjson import Invalid, describe

    if not isinstance(value, str):
        raise Invalid("invalid value, expected PciPath", path)
    try:
        return PciPath.parse(value)
    except (VmdevError, ValueError) as exc:
        raise Invalid(describe(exc), path) from None
