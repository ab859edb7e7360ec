"""Example vendor plugin for vmdev (entry point ``acme_vmdev_watchdog.plugin``).

``vmdev plan`` imports this package with the entry module for every container, so the public
names are imported on first use (PEP 562), not with the package: a plan without a watchdog
creates none of its classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acme_vmdev_watchdog.constants import KIND, WATCHDOG_MAJOR, WATCHDOG_MINOR
    from acme_vmdev_watchdog.device import WatchdogDev
    from acme_vmdev_watchdog.render_qemu import QEMU_DRIVER

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "KIND": "acme_vmdev_watchdog.constants",
    "QEMU_DRIVER": "acme_vmdev_watchdog.render_qemu",
    "WATCHDOG_MAJOR": "acme_vmdev_watchdog.constants",
    "WATCHDOG_MINOR": "acme_vmdev_watchdog.constants",
    "WatchdogDev": "acme_vmdev_watchdog.device",
}

__all__ = ["KIND", "QEMU_DRIVER", "WATCHDOG_MAJOR", "WATCHDOG_MINOR", "WatchdogDev"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
