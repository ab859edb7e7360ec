"""vmdev-vhostuser: vhost-user devices (entry point ``vmdev_vhostuser.plugin``).

The family's names, which lived in the core before issue 9, are importable from here:
``from vmdev_vhostuser import VhostUserDeviceAttrs, VHOST_USER_BLK, VhostUserStore``. They are
resolved on first use (:func:`vmdev.lazy.lazy_exports`): importing the package, as loading the plugin does,
creates no class (issue 13, cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev_vhostuser.device import VhostUserDeviceAttrs, Virtio9pShare
    from vmdev_vhostuser.host import VhostUserStore
    from vmdev_vhostuser.kinds import (
        DISK_INDEX_POOL,
        VHOST_USER_BLK,
        VHOST_USER_BLK_MAJOR,
        VHOST_USER_FS,
        VHOST_USER_KIND,
        VHOST_USER_NET,
        VHOST_USER_RECONNECT_TIMEOUT_OPT,
        VHOST_USER_SCSI,
        VHOST_USER_SCSI_MAJOR,
        VHOST_USER_TYPES,
        VIRTIO_9P_KIND,
    )
    from vmdev_vhostuser.settings import (
        DEFAULT_VHOST_USER_RECONNECT_TIMEOUT,
        DEFAULT_VHOST_USER_STORE_PATH,
        NO_SHARED_FS,
        VIRTIO_9P,
        VIRTIO_FS,
        VIRTIO_FS_NYDUS,
    )

__all__ = [
    "DEFAULT_VHOST_USER_RECONNECT_TIMEOUT",
    "DEFAULT_VHOST_USER_STORE_PATH",
    "DISK_INDEX_POOL",
    "NO_SHARED_FS",
    "VHOST_USER_BLK",
    "VHOST_USER_BLK_MAJOR",
    "VHOST_USER_FS",
    "VHOST_USER_KIND",
    "VHOST_USER_NET",
    "VHOST_USER_RECONNECT_TIMEOUT_OPT",
    "VHOST_USER_SCSI",
    "VHOST_USER_SCSI_MAJOR",
    "VHOST_USER_TYPES",
    "VIRTIO_9P",
    "VIRTIO_9P_KIND",
    "VIRTIO_FS",
    "VIRTIO_FS_NYDUS",
    "VhostUserDeviceAttrs",
    "VhostUserStore",
    "Virtio9pShare",
]

#: each public name and the module defining it
_HOMES = {
    "VhostUserDeviceAttrs": "vmdev_vhostuser.device",
    "Virtio9pShare": "vmdev_vhostuser.device",
    "VHOST_USER_BLK": "vmdev_vhostuser.kinds",
    "VHOST_USER_BLK_MAJOR": "vmdev_vhostuser.kinds",
    "VHOST_USER_FS": "vmdev_vhostuser.kinds",
    "VHOST_USER_KIND": "vmdev_vhostuser.kinds",
    "VHOST_USER_NET": "vmdev_vhostuser.kinds",
    "VHOST_USER_SCSI": "vmdev_vhostuser.kinds",
    "VHOST_USER_SCSI_MAJOR": "vmdev_vhostuser.kinds",
    "VHOST_USER_TYPES": "vmdev_vhostuser.kinds",
    "VIRTIO_9P_KIND": "vmdev_vhostuser.kinds",
    "VhostUserStore": "vmdev_vhostuser.host",
    "DISK_INDEX_POOL": "vmdev_vhostuser.kinds",
    "VHOST_USER_RECONNECT_TIMEOUT_OPT": "vmdev_vhostuser.kinds",
    "DEFAULT_VHOST_USER_RECONNECT_TIMEOUT": "vmdev_vhostuser.settings",
    "DEFAULT_VHOST_USER_STORE_PATH": "vmdev_vhostuser.settings",
    "NO_SHARED_FS": "vmdev_vhostuser.settings",
    "VIRTIO_9P": "vmdev_vhostuser.settings",
    "VIRTIO_FS": "vmdev_vhostuser.settings",
    "VIRTIO_FS_NYDUS": "vmdev_vhostuser.settings",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
