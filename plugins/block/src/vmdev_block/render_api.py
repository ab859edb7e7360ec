"""Cloud Hypervisor and Firecracker: REST bodies with the field names of their API specs.

Cloud Hypervisor (``DiskConfig``, ``PmemConfig``): disks are virtio-blk over PCI, so only the
``virtio-blk`` driver works there; persistent memory and the ``nvdimm`` driver become ``pmem``
entries (virtio-pmem, ``/dev/pmemN`` in the guest too). Cold plug appends to ``VmConfig.disks`` /
``VmConfig.pmem``; hot plug is ``PUT /api/v1/vm.add-disk`` / ``vm.add-pmem`` with the same body,
unplug ``PUT /api/v1/vm.remove-device`` with the id the body set. A read-only pmem device is mapped
with ``discard_writes`` (the guest's writes never reach the file): Cloud Hypervisor has no
read-only pmem.

Firecracker (``Drive``, ``Pmem``): disks are virtio-blk over MMIO, so only ``virtio-mmio`` works;
``PUT /drives/{drive_id}`` and ``PUT /pmem/{id}`` are pre-boot requests (Firecracker cannot
hot-plug a disk; in a hot-plug plan they stay boot-time requests). Firecracker ids use ``_``
where the drive id has ``-``.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.clh import ClhAttach
from vmdev.backends.firecracker import FirecrackerAttach
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_block.constants import AIO_IO_URING, AIO_NATIVE, NVDIMM, VIRTIO_BLOCK, VIRTIO_MMIO
from vmdev_block.device import BlockDevice
from vmdev_block.drive import BlockDrive
from vmdev_block.settings import KEY_AIO, KEY_DRIVER, BlockSettings

CLH_API: Final = "/api/v1"
#: Firecracker ``io_engine`` for each AIO mode it can honour
_FC_IO_ENGINES: Final = {AIO_IO_URING: "Async", "threads": "Sync"}


def _unsupported(device: BlockDevice, hypervisor: str, only: str) -> UnsupportedError:
    return UnsupportedError(
        f"{hypervisor} cannot attach a {device.driver} disk (it supports {only}; set {KEY_DRIVER})",
        device=device.container_path,
        field=KEY_DRIVER,
    )


def render_clh(device: BlockDevice, drive: BlockDrive, hotplug: bool, config: BlockSettings) -> ClhAttach:
    if device.driver == NVDIMM:
        key, endpoint, body = "pmem", "vm.add-pmem", _clh_pmem(device, drive)
    elif device.driver == VIRTIO_BLOCK:
        key, endpoint, body = "disks", "vm.add-disk", _clh_disk(drive, config)
    else:
        raise _unsupported(device, "Cloud Hypervisor", f"{VIRTIO_BLOCK} disks and {NVDIMM}/pmem")
    details = {"api_id": drive.id}
    if hotplug and not device.cold_plug:
        return ClhAttach(
            hotplug=[ApiRequest("PUT", f"{CLH_API}/{endpoint}", body)],
            unplug=[ApiRequest("PUT", f"{CLH_API}/vm.remove-device", {"id": drive.id})],
            hotplugged=True,
            details=details,
        )
    return ClhAttach(vm_config={key: [body]}, details=details)


def _clh_disk(drive: BlockDrive, config: BlockSettings) -> dict[str, Any]:
    return {
        "path": drive.file,
        "readonly": drive.read_only,
        "direct": bool(config.cache_set and config.cache_direct),
        "id": drive.id,
        "serial": drive.id,
        "image_type": "Raw",
    }


def _clh_pmem(device: BlockDevice, drive: BlockDrive) -> dict[str, Any]:
    body: dict[str, Any] = {"file": drive.file, "id": drive.id}
    if device.size is not None:
        body["size"] = device.size
    if drive.read_only:
        body["discard_writes"] = True
    return body


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
        raise _unsupported(device, "Firecracker", f"{VIRTIO_MMIO} disks and {NVDIMM}/pmem")
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
