"""vmdev-block: disks and persistent memory for the sandbox VM (entry point ``vmdev_block.plugin``).

The block family's names that the core held before the open core (issue 9) are importable from
here: ``from vmdev_block import BlockDrive, VIRTIO_BLOCK, pmem_device_info``. They are resolved on
first use (:func:`vmdev.lazy.lazy_exports`): importing the package, as loading the plugin does, creates no
class (issue 13, cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev_block.constants import (
        AIO_IO_URING,
        AIO_NATIVE,
        AIO_THREADS,
        BLOCK_AIO_MODES,
        BLOCK_DRIVER_OPT,
        BLOCK_DRIVERS,
        BLOCK_INDEX_POOL,
        DEVICE_BLOCK,
        FS_TYPE_OPT,
        MAX_BLOCK_INDEX,
        MAX_SCSI_DEVICES,
        NVDIMM,
        PMEM_DRIVERS,
        SCSI_CONTROLLER_ID,
        SUPPORTED_DRIVERS,
        VIRTIO_BLOCK,
        VIRTIO_BLOCK_CCW,
        VIRTIO_MMIO,
        VIRTIO_PMEM,
        VIRTIO_SCSI,
    )
    from vmdev_block.device import BlockDevice
    from vmdev_block.drive import BlockDrive
    from vmdev_block.host import NotPersistentMemoryError, pmem_device_info

__all__ = [
    "AIO_IO_URING",
    "AIO_NATIVE",
    "AIO_THREADS",
    "BLOCK_AIO_MODES",
    "BLOCK_DRIVERS",
    "BLOCK_DRIVER_OPT",
    "BLOCK_INDEX_POOL",
    "DEVICE_BLOCK",
    "FS_TYPE_OPT",
    "MAX_BLOCK_INDEX",
    "MAX_SCSI_DEVICES",
    "NVDIMM",
    "PMEM_DRIVERS",
    "SCSI_CONTROLLER_ID",
    "SUPPORTED_DRIVERS",
    "VIRTIO_BLOCK",
    "VIRTIO_BLOCK_CCW",
    "VIRTIO_MMIO",
    "VIRTIO_PMEM",
    "VIRTIO_SCSI",
    "BlockDevice",
    "BlockDrive",
    "NotPersistentMemoryError",
    "pmem_device_info",
]

#: the module defining each public name that is not one of :mod:`vmdev_block.constants`
_HOMES = {
    "BlockDevice": "vmdev_block.device",
    "BlockDrive": "vmdev_block.drive",
    "NotPersistentMemoryError": "vmdev_block.host",
    "pmem_device_info": "vmdev_block.host",
}

__getattr__, __dir__ = lazy_exports(
    __name__, {name: _HOMES.get(name, "vmdev_block.constants") for name in __all__}
)
