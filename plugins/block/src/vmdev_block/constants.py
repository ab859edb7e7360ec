"""The block family's vocabulary: driver names, AIO modes, driver-option keys, limits and pools.

These names lived in ``vmdev.models`` before the open core (issue 9); the core names no device
family any more, so they are defined here and re-exported by :mod:`vmdev_block` (``from
vmdev_block import VIRTIO_BLOCK``). The values are Kata's (``virtcontainers/device/config``), so
a Kata ``configuration.toml`` and Kata's per-device options mean the same here.
"""

from __future__ import annotations

from typing import Final

from vmdev.resources import DISK_INDEX_POOL

#: the plugin's name: its entry point in pyproject.toml (saved devices name the plugin that built them)
PLUGIN_NAME: Final = "block"
#: the ``kind`` of the block plugin's devices (Kata's ``config.DeviceBlock``)
DEVICE_BLOCK: Final = "block"

# --- block drivers (block_device_driver and the "block-driver" driver option) -------------------
VIRTIO_MMIO: Final = "virtio-mmio"
VIRTIO_BLOCK: Final = "virtio-blk"
VIRTIO_BLOCK_CCW: Final = "virtio-blk-ccw"
VIRTIO_SCSI: Final = "virtio-scsi"
NVDIMM: Final = "nvdimm"
#: runtime-rs' persistent-memory driver: QEMU ``virtio-pmem-pci`` (the guest's ``/dev/pmemN`` too)
VIRTIO_PMEM: Final = "virtio-pmem"
#: Kata Go's block drivers, in its order (its error text lists them so)
BLOCK_DRIVERS: Final = (VIRTIO_SCSI, VIRTIO_BLOCK, VIRTIO_MMIO, NVDIMM, VIRTIO_BLOCK_CCW)
#: every driver this plugin takes: Kata Go's, then runtime-rs' virtio-pmem
SUPPORTED_DRIVERS: Final = (*BLOCK_DRIVERS, VIRTIO_PMEM)
#: the drivers that map a file into guest memory (``/dev/pmemN``) instead of making a disk
PMEM_DRIVERS: Final = (NVDIMM, VIRTIO_PMEM)
#: Kata runtime-rs' spellings of the same drivers, accepted wherever a driver is named
DRIVER_ALIASES: Final = {"virtio-blk-pci": VIRTIO_BLOCK, "virtio-blk-mmio": VIRTIO_MMIO}

# --- block AIO modes (block_device_aio) -------------------------------------------------------
AIO_THREADS: Final = "threads"
AIO_NATIVE: Final = "native"
AIO_IO_URING: Final = "io_uring"
BLOCK_AIO_MODES: Final = (AIO_IO_URING, AIO_NATIVE, AIO_THREADS)

# --- driver-option keys (DeviceInfo.driver_options) -------------------------------------------
#: the file system inside a persistent-memory image (set by the pmem probe)
FS_TYPE_OPT: Final = "fstype"
#: a per-device block driver, instead of the sandbox's ``block_device_driver``
BLOCK_DRIVER_OPT: Final = "block-driver"

# --- limits, pools and ids --------------------------------------------------------------------
#: the largest SCSI index Kata addresses (``scsi-id`` and ``lun`` below 256 each)
MAX_SCSI_DEVICES: Final = 65535
#: the number of block indexes of a sandbox (Kata's ``maxBlockIndex``)
MAX_BLOCK_INDEX: Final = 65535
#: allocator pool of Kata's sandbox block index, shared by every disk-like device (block drives,
#: nvdimm, vhost-user-blk) so their indexes never collide: the core's ``DISK_INDEX_POOL``
BLOCK_INDEX_POOL: Final = DISK_INDEX_POOL
#: allocator pool of persistent-memory numbers (nvdimm and virtio-pmem): the ``N`` of the guest's
#: ``/dev/pmemN``
NVDIMM_POOL: Final = "block.nvdimm"
#: QEMU id of the one virtio-scsi controller a sandbox's SCSI disks share
SCSI_CONTROLLER_ID: Final = "scsi0"
#: Kata's mount option marking a regular file to be attached as a disk (``...=file``)
BLOCK_FILE_OPTION: Final = "io.katacontainers.fs-opt.block_device"
#: the refill time of Kata's rate-limiter token buckets, in milliseconds
RATE_LIMITER_REFILL_MS: Final = 1000
