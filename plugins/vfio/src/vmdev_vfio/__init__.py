"""vmdev-vfio: VFIO passthrough plugin (entry point ``vmdev_vfio.plugin``).

The family's names, importable from the distribution (they lived in ``vmdev.models`` before the
open core): ``VFIODev``, ``VFIODeviceType``, ``VFIOMode``, ``DEVICE_VFIO``,
``PCI_CONFIG_SPACE_SIZE``; and ``VFIODevice``, one request. Test builders are in
:mod:`vmdev_vfio.testing`.
"""

from vmdev_vfio.device import DEVICE_VFIO, VFIODev, VFIODevice, VFIODeviceType, VFIOMode
from vmdev_vfio.host import PCI_CONFIG_SPACE_SIZE

__all__ = ["DEVICE_VFIO", "PCI_CONFIG_SPACE_SIZE", "VFIODev", "VFIODevice", "VFIODeviceType", "VFIOMode"]
