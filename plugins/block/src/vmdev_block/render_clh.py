"""Cloud Hypervisor: ``VmConfig`` entries and REST bodies with the field names of its API spec.

Disks (``DiskConfig``) are virtio-blk over PCI, so only the ``virtio-blk`` driver works there;
persistent memory and the ``nvdimm`` driver become ``pmem`` entries (``PmemConfig``: virtio-pmem,
``/dev/pmemN`` in the guest too). Cold plug appends to ``VmConfig.disks`` / ``VmConfig.pmem``; hot
plug is ``PUT /api/v1/vm.add-disk`` / ``vm.add-pmem`` with the same body, unplug
``PUT /api/v1/vm.remove-device`` with the id the body set. A read-only pmem device is mapped with
``discard_writes`` (the guest's writes never reach the file): Cloud Hypervisor has no read-only
pmem.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.clh import ClhAttach
from vmdev.targets import ApiRequest
from vmdev_block.constants import NVDIMM, VIRTIO_BLOCK
from vmdev_block.device import BlockDevice, unsupported_driver
from vmdev_block.drive import BlockDrive
from vmdev_block.settings import BlockSettings

CLH_API: Final = "/api/v1"


def render_clh(device: BlockDevice, drive: BlockDrive, hotplug: bool, config: BlockSettings) -> ClhAttach:
    if device.driver == NVDIMM:
        key, endpoint, body = "pmem", "vm.add-pmem", _clh_pmem(device, drive)
    elif device.driver == VIRTIO_BLOCK:
        key, endpoint, body = "disks", "vm.add-disk", _clh_disk(drive, config)
    else:
        raise unsupported_driver(device, "Cloud Hypervisor", f"{VIRTIO_BLOCK} disks and {NVDIMM}/pmem")
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
