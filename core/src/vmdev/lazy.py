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

:func:`load_reference` resolves ``module:attribute`` (entry points, lazy commands); :func:`imported`
stands for such a callable and imports it on its first call (a backend's target, assembly and live
driver are registered so).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

#: an entry point's value: ``module``, ``module:attr.attr``, optional ``[extras]`` (ignored)
_REFERENCE: Final = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


def load_reference(reference: str) -> Any:
    """What ``module`` or ``module:attr.attr`` names (importlib.metadata's ``EntryPoint.load``)."""
    match = _REFERENCE.match(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not 'module' or 'module:attribute'")
    found: Any = importlib.import_module(match.group("module"))
    for attr in filter(None, (match.group("attr") or "").split(".")):
        found = getattr(found, attr)
    return found


def imported(reference: str) -> Callable[..., Any]:
    """A callable standing for the one ``reference`` names, imported on its first call."""
    loaded: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if not loaded:
            loaded.append(load_reference(reference))
        return loaded[0](*args, **kwargs)

    call.__qualname__ = call.__name__ = f"imported({reference!r})"
    return call


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
