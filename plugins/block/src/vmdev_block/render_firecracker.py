"""Firecracker: the API requests that configure a disk or pmem device, as its API spec names them.

Disks (``Drive``) are virtio-blk over MMIO, so only ``virtio-mmio`` works; persistent memory and
the ``nvdimm`` driver become ``Pmem`` devices. ``PUT /drives/{drive_id}`` and ``PUT /pmem/{id}``
are pre-boot requests (Firecracker cannot hot-plug a disk; in a hot-plug plan they stay boot-time
requests). Firecracker ids use ``_`` where the drive id has ``-``.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.firecracker import FirecrackerAttach
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_block.constants import AIO_IO_URING, AIO_NATIVE, AIO_THREADS, NVDIMM, VIRTIO_MMIO
from vmdev_block.device import BlockDevice, unsupported_driver
from vmdev_block.drive import BlockDrive
from vmdev_block.settings import KEY_AIO, BlockSettings

#: Firecracker ``io_engine`` for each AIO mode it can honour
_FC_IO_ENGINES: Final = {AIO_IO_URING: "Async", AIO_THREADS: "Sync"}


def firecracker_id(drive: BlockDrive) -> str:
    return drive.id.replace("-", "_")


def render_firecracker(device: BlockDevice, drive: BlockDrive, config: BlockSettings) -> FirecrackerAttach:
    fc_id = firecracker_id(drive)
    if device.driver == NVDIMM:
        body: dict[str, Any] = {
            "id": fc_id,
            "path_on_host": drive.file,
            "root_device": False,
            "read_only": drive.read_only,
        }
        request = ApiRequest("PUT", f"/pmem/{fc_id}", body)
    elif device.driver == VIRTIO_MMIO:
        request = ApiRequest("PUT", f"/drives/{fc_id}", _fc_drive(device, drive, config, fc_id))
    else:
        raise unsupported_driver(device, "Firecracker", f"{VIRTIO_MMIO} disks and {NVDIMM}/pmem")
    return FirecrackerAttach(requests=[request], details={"api_id": fc_id})


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
    return body
