"""The names vmdev-vfio's hooks test before importing the family: kinds, paths, mode values.

Kept apart from ``device.py``, ``ports.py`` and ``host.py`` (which define the attrs models) so that
loading the plugin, and answering hooks for other families' requests, creates no class (issue 13,
cold start). :func:`claims` is here for the same reason: ``build_device`` sees every request.
"""

from __future__ import annotations

from typing import Final

#: Kata's ``config.DeviceVFIO``: the kind of every VFIO request
DEVICE_VFIO: Final = "vfio"
#: the kind and id of the sandbox's spare PCIe ports (``pcie_root_port``/``pcie_switch_port``)
PORTS_KIND: Final = "pcie-ports"
PORTS_ID: Final = "vfio-ports"
VFIO_DIR: Final = "/dev/vfio/"
CONTROL_NODE: Final = "/dev/vfio/vfio"
CDEV_DIR: Final = "/dev/vfio/devices/"
IOMMU_NODE: Final = "/dev/iommu"
#: ``vfio_mode`` values (``VFIOMode``)
MODE_VFIO: Final = "vfio"
MODE_GUEST_KERNEL: Final = "guest-kernel"


def claims(host_path: str) -> bool:
    """A ``/dev/vfio`` path that is a device to pass (everything but the control node)."""
    return host_path.startswith(VFIO_DIR) and host_path != CONTROL_NODE
