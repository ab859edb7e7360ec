"""Example vendor plugin for vmdev (entry point ``acme_vmdev_watchdog.plugin``).

``vmdev plan`` imports this package with the entry module for every container, so the public
names are imported on first use (:func:`vmdev.lazy.lazy_exports`), not with the package: a
plan without a watchdog creates none of its classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
