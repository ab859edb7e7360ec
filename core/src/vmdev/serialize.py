"""JSON-ready (un)structuring of the models with cattrs.

Field names are kept as written (snake_case), except that a trailing
underscore used to dodge a Python keyword is dropped (``class_`` -> ``class``).
Enums become their values and PCI paths their ``02/00/01`` strings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from vmdev.models import PciPath

T = TypeVar("T")


def _make_converter() -> cattrs.Converter:
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


converter = _make_converter()


def to_json(value: Any) -> Any:
    """Unstructure an attrs model (or containers of them) into JSON-ready data."""
    data = converter.unstructure(value)
    return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # str- and int-based enums pass cattrs' enum hook by
        return value.value  # their base type; JSON-ready data holds plain values
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def from_json(cls: type[T], data: Any) -> T:
    """Structure ``data`` (as :func:`to_json` made it) back into ``cls``: for a family's
    ``device_from_state`` hook. Trailing-underscore fields are read from their JSON names
    (``class`` -> ``class_``). Errors propagate (the caller names the device)."""
    if attrs.has(cls) and isinstance(data, Mapping):  # fields added to the JSON later are ignored
        known = {f.name.rstrip("_") for f in attrs.fields(cls) if f.init}
        data = {key: value for key, value in data.items() if key in known}
    return converter.structure(data, cls)
