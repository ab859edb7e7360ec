"""Typed attrs converters shared by the models.

attrs' mypy plugin types ``__init__`` from a converter's parameter, and neither the builtin
``tuple``/``dict`` nor a generic function give it a usable type, so each element type has its own
small function (module-specific ones live next to their types).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def any_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)
