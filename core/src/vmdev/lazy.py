"""A package's public names, imported from their modules on first use (PEP 562).

Every installed plugin's package is imported on every ``vmdev plan`` (its entry module lives in
it), so a package that re-exported its names eagerly would import its whole family and create its
classes for plans that never use them (issue 13, cold start). A package says instead where each
name lives::

    __all__ = ["WIDGET_KIND", "WidgetDevice"]
    __getattr__, __dir__ = lazy_exports(__name__, {"WIDGET_KIND": "acme_widgets.kinds",
                                                   "WidgetDevice": "acme_widgets.device"})

and imports the same names under ``if TYPE_CHECKING:`` for type checkers. ``import vmdev`` does
the same for its own names.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``, whose public names are ``homes``'
    keys, each defined in the module its value names. A name is imported when it is first asked
    for and then kept in the package (later lookups are ordinary attribute lookups)."""
    module = sys.modules[package]
    names = dict(homes)

    def __getattr__(name: str) -> Any:
        home = names.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *names})

    return __getattr__, __dir__
