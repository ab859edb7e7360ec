"""vmdev-vfio: VFIO passthrough plugin (entry point ``vmdev_vfio.plugin``).

The family's names, importable from the distribution (they lived in ``vmdev.models`` before the
open core): ``VFIODev``, ``VFIODeviceType``, ``VFIOMode``, ``DEVICE_VFIO``,
``PCI_CONFIG_SPACE_SIZE``; and ``VFIODevice``, one request. Test builders are in
:mod:`vmdev_vfio.testing`. The names are resolved on first use (:func:`vmdev.lazy.lazy_exports`):
importing the package, as loading the plugin does, creates no class (issue 13, cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev_vfio.device import VFIODev, VFIODevice, VFIOMode
    from vmdev_vfio.host import PCI_CONFIG_SPACE_SIZE, VFIODeviceType
    from vmdev_vfio.kinds import DEVICE_VFIO

__all__ = ["DEVICE_VFIO", "PCI_CONFIG_SPACE_SIZE", "VFIODev", "VFIODevice", "VFIODeviceType", "VFIOMode"]

#: each public name and the module defining it
_HOMES = {
    "DEVICE_VFIO": "vmdev_vfio.kinds",
    "PCI_CONFIG_SPACE_SIZE": "vmdev_vfio.host",
    "VFIODev": "vmdev_vfio.device",
    "VFIODevice": "vmdev_vfio.device",
    "VFIODeviceType": "vmdev_vfio.host",
    "VFIOMode": "vmdev_vfio.device",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
