"""The names vmdev-vhostuser's hooks test before importing the family: device kinds and types, and
the vhost-user store's pseudo majors.

Kept apart from ``device.py`` (which defines the attrs models) so that loading the plugin, and
answering hooks for other families' requests, creates no class (issue 13, cold start).
"""

from __future__ import annotations

from typing import Final

#: the device kind (``Device.kind``) of every vhost-user device
VHOST_USER_KIND: Final = "vhost-user"
#: the device kind of the virtio-9p share
VIRTIO_9P_KIND: Final = "virtio-9p"

# --- device types (Kata config.DeviceType) ---------------------------------------------------------
VHOST_USER_SCSI: Final = "vhost-user-scsi-pci"
VHOST_USER_NET: Final = "virtio-net-pci"
VHOST_USER_BLK: Final = "vhost-user-blk-pci"
VHOST_USER_FS: Final = "vhost-user-fs-pci"
VHOST_USER_TYPES: Final = (VHOST_USER_SCSI, VHOST_USER_NET, VHOST_USER_BLK, VHOST_USER_FS)

# --- the store's pseudo majors (Kata's config.VhostUserBlkMajor/VhostUserSCSIMajor) ----------------
VHOST_USER_BLK_MAJOR: Final = 241
VHOST_USER_SCSI_MAJOR: Final = 242
#: pseudo major -> vhost-user device type
STORE_MAJORS: Final = {VHOST_USER_BLK_MAJOR: VHOST_USER_BLK, VHOST_USER_SCSI_MAJOR: VHOST_USER_SCSI}

#: driver option (DeviceInfo.driver_options): this device's reconnect timeout, decimal seconds
VHOST_USER_RECONNECT_TIMEOUT_OPT: Final = "vhost-user-reconnect-timeout"

#: Kata's sandbox-wide block index pool, shared with the block family's drives so that their
#: indexes never collide; the same string as the core's ``vmdev.resources.DISK_INDEX_POOL``
DISK_INDEX_POOL: Final = "block.index"
