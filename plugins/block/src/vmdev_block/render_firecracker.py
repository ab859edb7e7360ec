"""Firecracker: the API requests that configure a disk or pmem device, as its API spec names them.

Disks (``Drive``) are virtio-blk over MMIO, so only ``virtio-mmio`` works; persistent memory and
the ``nvdimm`` driver become ``Pmem`` devices. ``PUT /drives/{drive_id}`` and ``PUT /pmem/{id}``
are pre-boot requests (Firecracker cannot hot-plug a disk; in a hot-plug plan they stay boot-time
requests). Firecracker ids use ``_`` where the drive id has ``-``. The ``virtio-pmem`` driver is a
``Pmem`` device too (Firecracker's pmem is virtio-pmem).

The disk rate limiter becomes the drive's ``rate_limiter`` (:mod:`vmdev_block.limits`: runtime-rs
sets it on Firecracker drives; the conversion of the bandwidth is Kata Go's). The sector-size keys
have no field in ``Drive`` (Kata passes them to QEMU only) and ``num_queues``/``queue_size`` none
either (Kata ignores them here too): a note says so for the sector sizes when they are set.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.firecracker import FirecrackerAttach
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_block.constants import AIO_IO_URING, AIO_NATIVE, AIO_THREADS, NVDIMM, PMEM_DRIVERS, VIRTIO_MMIO
from vmdev_block.device import BlockDevice, unsupported_driver
from vmdev_block.drive import BlockDrive
from vmdev_block.limits import RS_RATE_NOTE, rate_limiter
from vmdev_block.options import BlockSettings
from vmdev_block.settings import KEY_AIO, KEY_LOGICAL_SECTOR, KEY_PHYSICAL_SECTOR

#: Firecracker ``io_engine`` for each AIO mode it can honour
_FC_IO_ENGINES: Final = {AIO_IO_URING: "Async", AIO_THREADS: "Sync"}

SECTOR_NOTE: Final = (
    f"{KEY_LOGICAL_SECTOR}/{KEY_PHYSICAL_SECTOR}: not applied: Firecracker's Drive has no sector size "
    "(Kata passes them to QEMU only)"
)


def firecracker_id(drive: BlockDrive) -> str:
    return drive.id.replace("-", "_")


def render_firecracker(device: BlockDevice, drive: BlockDrive, config: BlockSettings) -> FirecrackerAttach:
    fc_id = firecracker_id(drive)
    details: dict[str, Any] = {"api_id": fc_id}
    if device.driver in PMEM_DRIVERS:
        body: dict[str, Any] = {
            "id": fc_id,
            "path_on_host": drive.file,
            "root_device": False,
            "read_only": drive.read_only,
        }
        request = ApiRequest("PUT", f"/pmem/{fc_id}", body)
    elif device.driver == VIRTIO_MMIO:
        request = ApiRequest("PUT", f"/drives/{fc_id}", _fc_drive(device, drive, config, fc_id))
        if config.sector_sizes:
            details["note"] = SECTOR_NOTE
        if config.kata_runtime == "runtime-rs" and request.body and "rate_limiter" in request.body:
            details["notes"] = [RS_RATE_NOTE]
    else:
        raise unsupported_driver(device, "Firecracker", f"{VIRTIO_MMIO} disks and {NVDIMM}/virtio-pmem/pmem")
    return FirecrackerAttach(requests=[request], details=details)


def _fc_drive(device: BlockDevice, drive: BlockDrive, config: BlockSettings, fc_id: str) -> dict[str, Any]:
    if drive.discard_unmap:
        raise UnsupportedError(
            "Firecracker drives cannot discard (unmap)", device=device.container_path, field="discard_unmap"
        )
    body: dict[str, Any] = {
        "drive_id": fc_id,
        "path_on_host": drive.file,
        "is_root_device": False,
        "is_read_only": drive.read_only,
    }
    if config.cache_set:
        body["cache_type"] = "Unsafe" if config.cache_noflush else "Writeback"
    if config.aio_explicit:
        if config.aio == AIO_NATIVE:
            raise UnsupportedError(
                "Firecracker has no native AIO (io_uring gives io_engine Async, threads Sync)",
                device=device.container_path,
                field=KEY_AIO,
            )
        body["io_engine"] = _FC_IO_ENGINES[config.aio]
    limiter = rate_limiter(config)
    if limiter is not None:
        body["rate_limiter"] = limiter
    return body
