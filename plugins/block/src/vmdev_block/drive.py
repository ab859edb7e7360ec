"""The drive (:class:`BlockDrive`) and Kata's ``BlockDevice.Attach``: its index and guest addresses.

Indexes come from the allocator the core passes to ``build_device`` (a fresh one per plan; the
device manager keeps one per sandbox and frees a device's indexes when it goes): pool
``block.index`` is Kata's sandbox block index, shared by every block driver, nvdimm included, so
the first block device of a plan gets 0; nvdimm devices also take a number from ``block.nvdimm``,
the ``N`` of the guest's ``/dev/pmemN``. The owner of both is the device's key (container path and
host path), so the same request keeps its numbers.

* virtio-scsi: ``scsi_addr`` = ``<index // 256>:<index % 256>`` (``scsi-id:lun``);
* virtio-blk, virtio-blk-ccw: ``virt_path`` = ``/dev/vd<letters(index)>``;
* virtio-mmio: ``/dev/vd<letters(index + 1)>`` (Kata: the sandbox's root image holds ``vda``);
* virtio-blk-ccw: ``dev_no`` = ``0.0.<0x1000 + index>`` (hex), the CCW bus id the guest sees;
* nvdimm, virtio-pmem: ``nvdimm_id`` = the persistent-memory number (Kata's agent reads both as
  ``/dev/pmem<nvdimm_id>``; runtime-rs hands virtio-pmem to the agent as an nvdimm).

The guest PCI path of a PCI disk depends on slots QEMU assigns at run time; it stays empty here
(Kata reads it from QOM after the hot plug).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from vmdev.errors import DeviceError
from vmdev.models import PciPath
from vmdev.resources import Allocator
from vmdev_block.constants import (
    BLOCK_INDEX_POOL,
    DEVICE_BLOCK,
    MAX_BLOCK_INDEX,
    NVDIMM_POOL,
    PMEM_DRIVERS,
    VIRTIO_BLOCK,
    VIRTIO_BLOCK_CCW,
    VIRTIO_MMIO,
    VIRTIO_SCSI,
)
from vmdev_block.naming import scsi_address, virt_drive_name

#: first CCW device number for disks: QEMU numbers devices without one from 0 upwards
CCW_DEVNO_BASE: Final = 0x1000
CCW_DEVNO_MAX: Final = 0xFFFF


def _non_negative(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise DeviceError(f"must not be negative, got {value}", device=inst.id, field=attribute.name)


@attrs.frozen(kw_only=True)
class BlockDrive:
    """A disk for the guest: Kata's ``config.BlockDrive``, every field in its snake_case spelling.

    Moved here from ``vmdev.models`` (the core names no device family); the fields and their
    JSON are unchanged. ``pci_path`` stays empty: QEMU assigns the slots of a disk at run time.
    """

    kind: ClassVar[str] = DEVICE_BLOCK
    file: str
    id: str
    format: str = "raw"
    index: int = attrs.field(default=0, validator=_non_negative)
    mmio_addr: str = ""
    scsi_addr: str = ""
    nvdimm_id: str = ""
    virt_path: str = ""
    dev_no: str = ""
    pci_path: PciPath = attrs.field(factory=PciPath)
    share_rw: bool = False
    read_only: bool = False
    discard_unmap: bool = False
    pmem: bool = False
    swap: bool = False


@attrs.frozen(kw_only=True)
class DriveRequest:
    """What the drive is made of: the built device's facts before it has an index."""

    key: str
    name: str
    id: str
    file: str
    driver: str
    read_only: bool = False
    discard_unmap: bool = False
    pmem: bool = False


def ccw_devno(index: int, *, device: str) -> int:
    devno = CCW_DEVNO_BASE + index
    if devno > CCW_DEVNO_MAX:
        raise DeviceError("no CCW device number left for this disk", device=device, field="index")
    return devno


def allocate_drive(request: DriveRequest, alloc: Allocator) -> BlockDrive:
    """The :class:`BlockDrive` of ``request``, its indexes taken from ``alloc``."""
    name, driver = request.name, request.driver
    index = alloc.take(BLOCK_INDEX_POOL, request.key, limit=MAX_BLOCK_INDEX, device=name)
    virt_index = {VIRTIO_BLOCK: index, VIRTIO_BLOCK_CCW: index, VIRTIO_MMIO: index + 1}.get(driver)
    nvdimm = None
    if driver in PMEM_DRIVERS:
        nvdimm = alloc.take(NVDIMM_POOL, request.key, limit=MAX_BLOCK_INDEX, device=name)
    return BlockDrive(
        file=request.file,
        id=request.id,
        index=index,
        scsi_addr=scsi_address(index, device=name) if driver == VIRTIO_SCSI else "",
        nvdimm_id=str(nvdimm) if nvdimm is not None else "",
        virt_path="/dev/" + virt_drive_name(virt_index, device=name) if virt_index is not None else "",
        dev_no=f"0.0.{ccw_devno(index, device=name):04x}" if driver == VIRTIO_BLOCK_CCW else "",
        read_only=request.read_only,
        discard_unmap=request.discard_unmap,
        pmem=request.pmem,
    )
