"""Cloud Hypervisor: ``VmConfig`` entries and REST bodies with the field names of its API spec.

Disks (``DiskConfig``) are virtio-blk over PCI, so only the ``virtio-blk`` driver works there;
persistent memory and the ``nvdimm`` driver become ``pmem`` entries (``PmemConfig``: virtio-pmem,
``/dev/pmemN`` in the guest too). Cold plug appends to ``VmConfig.disks`` / ``VmConfig.pmem``; hot
plug is ``PUT /api/v1/vm.add-disk`` / ``vm.add-pmem`` with the same body, unplug
``PUT /api/v1/vm.remove-device`` with the id the body set. A read-only pmem device is mapped with
``discard_writes`` (the guest's writes never reach the file): Cloud Hypervisor has no read-only
pmem. The ``virtio-pmem`` driver is the same ``pmem`` entry (Cloud Hypervisor's pmem is virtio-pmem).

Kata's disk keys: the disk rate limiter becomes ``rate_limiter_config`` (:mod:`vmdev_block.limits`,
as Kata Go's ``clh.go`` builds it); ``num_queues`` and ``queue_size`` (runtime-rs' keys, which it
copies into ``DiskConfig``) are set when configured, else Cloud Hypervisor's defaults (1 and 128,
runtime-rs' defaults too) apply. Kata Go has neither key: its ``clh.go`` sends ``num_queues`` =
``default_vcpus`` and ``queue_size`` = 1024 on hot plug. The sector-size keys have no field in
``DiskConfig`` (Kata passes them to QEMU only): the plan says so in a note when they are set.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.clh import ClhAttach
from vmdev.targets import ApiRequest
from vmdev_block.constants import NVDIMM, PMEM_DRIVERS, VIRTIO_BLOCK, VIRTIO_PMEM
from vmdev_block.device import BlockDevice, unsupported_driver
from vmdev_block.drive import BlockDrive
from vmdev_block.limits import RS_RATE_NOTE, rate_limiter
from vmdev_block.options import BlockSettings
from vmdev_block.settings import KEY_LOGICAL_SECTOR, KEY_PHYSICAL_SECTOR

CLH_API: Final = "/api/v1"
#: the queue size Kata Go gives every Cloud Hypervisor disk
GO_QUEUE_SIZE: Final = 1024
SECTOR_NOTE: Final = (
    f"{KEY_LOGICAL_SECTOR}/{KEY_PHYSICAL_SECTOR}: not applied: Cloud Hypervisor's DiskConfig has no "
    "sector size (Kata passes them to QEMU only)"
)


def render_clh(device: BlockDevice, drive: BlockDrive, hotplug: bool, config: BlockSettings) -> ClhAttach:
    details: dict[str, Any] = {"api_id": drive.id}
    if device.driver in PMEM_DRIVERS:
        key, endpoint, body = "pmem", "vm.add-pmem", _clh_pmem(device, drive)
    elif device.driver == VIRTIO_BLOCK:
        key, endpoint, body = "disks", "vm.add-disk", _clh_disk(drive, config)
        if config.sector_sizes:
            details["note"] = SECTOR_NOTE
        if config.kata_runtime == "runtime-rs" and "rate_limiter_config" in body:
            details["notes"] = [RS_RATE_NOTE]
    else:
        raise unsupported_driver(device, "Cloud Hypervisor",
                                 f"{VIRTIO_BLOCK} disks and {NVDIMM}/{VIRTIO_PMEM}/pmem")
    if hotplug and not device.cold_plug:
        return ClhAttach(
            hotplug=[ApiRequest("PUT", f"{CLH_API}/{endpoint}", body)],
            unplug=[ApiRequest("PUT", f"{CLH_API}/vm.remove-device", {"id": drive.id})],
            hotplugged=True,
            details=details,
        )
    return ClhAttach(vm_config={key: [body]}, details=details)


def _clh_disk(drive: BlockDrive, config: BlockSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": drive.file,
        "readonly": drive.read_only,
        "direct": bool(config.cache_set and config.cache_direct),
        "id": drive.id,
        "serial": drive.id,
        "image_type": "Raw",
    }
    if config.iommu:  # Cloud Hypervisor's default is false, so it is written only when set
        body["iommu"] = True
    if config.num_queues or config.queue_size or config.kata_runtime != "go":
        if config.num_queues:
            body["num_queues"] = config.num_queues
        if config.queue_size:
            body["queue_size"] = config.queue_size
    else:  # Kata Go's clh.go: one queue per vCPU of 1024 entries (runtime-rs reads the two keys)
        body["num_queues"] = config.vcpus
        body["queue_size"] = GO_QUEUE_SIZE
    limiter = rate_limiter(config)
    if limiter is not None:
        body["rate_limiter_config"] = limiter
    return body


def _clh_pmem(device: BlockDevice, drive: BlockDrive) -> dict[str, Any]:
    body: dict[str, Any] = {"file": drive.file, "id": drive.id}
    if device.size is not None:
        body["size"] = device.size
    if drive.read_only:
        body["discard_writes"] = True
    return body
