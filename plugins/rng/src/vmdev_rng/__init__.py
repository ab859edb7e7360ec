"""vmdev-rng: the sandbox's entropy device (virtio-rng), as a vmdev plugin (entry point ``rng``).

Public names: :class:`RNGDev` and :data:`RNG_ID` (the device), and the settings keys
(:data:`ENTROPY_SOURCE`, :data:`VALID_ENTROPY_SOURCES`). See ``plugin.py`` for the anatomy.

The names are resolved on first use (:func:`vmdev.lazy.lazy_exports`): importing the package, as
loading the plugin does, creates no class (issue 13, cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev_rng.device import RNGDev
    from vmdev_rng.kinds import RNG_ID
    from vmdev_rng.settings import DEFAULT_ENTROPY_SOURCE, ENTROPY_SOURCE, VALID_ENTROPY_SOURCES

#: each public name and the module defining it
_HOMES = {
    "DEFAULT_ENTROPY_SOURCE": "vmdev_rng.settings",
    "ENTROPY_SOURCE": "vmdev_rng.settings",
    "RNG_ID": "vmdev_rng.kinds",
    "VALID_ENTROPY_SOURCES": "vmdev_rng.settings",
    "RNGDev": "vmdev_rng.device",
}

__all__ = ["DEFAULT_ENTROPY_SOURCE", "ENTROPY_SOURCE", "RNG_ID", "VALID_ENTROPY_SOURCES", "RNGDev"]

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
