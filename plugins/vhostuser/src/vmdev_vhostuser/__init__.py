"""vmdev-vhostuser: vhost-user devices (entry point ``vmdev_vhostuser.plugin``).

The family's names, which lived in the core before issue 9, are importable from here:
``from vmdev_vhostuser import VhostUserDeviceAttrs, VHOST_USER_BLK, VhostUserStore``.
"""

from vmdev_vhostuser.device import (
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
    VhostUserDeviceAttrs,
    Virtio9pShare,
)
from vmdev_vhostuser.host import VhostUserStore
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
