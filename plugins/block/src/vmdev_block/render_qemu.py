"""QEMU: ``-blockdev`` + ``-device`` on the command line, or QMP ``blockdev-add`` + ``device_add``.

One ``-blockdev`` node per disk: a ``raw`` format node named after the drive id, whose ``file``
child is the ``host_device`` (a device node) or ``file`` (an image) protocol node with the
configured AIO and cache modes. The same structure is the QMP ``blockdev-add`` argument, so the
cold and hot forms cannot drift apart. Unplug is ``device_del`` (wait for ``DEVICE_DELETED``),
then ``blockdev-del``, which also removes the implicit protocol child.

Drivers and what they need at machine level:

* virtio-blk: ``virtio-blk-pci`` (PCI machines only); hot plug onto a PCIe root port on q35;
* virtio-scsi: one controller ``scsi0`` (``virtio-scsi-pci``/``-device``/``-ccw``, emitted once
  through ``shared_args``), each disk a ``scsi-hd`` at ``scsi-id``/``lun`` from its index;
* virtio-mmio: ``virtio-blk-device`` (the ``microvm`` machine; no hot plug, so always cold);
* virtio-blk-ccw: ``virtio-blk-ccw`` with ``devno=fe.0.<dev_no>`` (s390x);
* nvdimm: ``-object memory-backend-file`` + ``-device nvdimm`` with ``-machine nvdimm=on`` and one
  memory slot plus the image's size in ``maxmem``. QEMU cannot unplug an nvdimm.
* virtio-pmem: ``-object memory-backend-file,share=on`` + ``-device virtio-pmem-pci`` (PCI machines;
  QEMU has no other transport for it), ``maxmem`` grown by the file's size (the core renders
  ``maxmem`` with a memory slot). A read-only one maps the file read-only: the guest's writes are
  discarded (virtio-pmem has no read-only flag the guest sees). QEMU cannot unplug it either.

Kata's keys beyond the driver: ``block_device_logical_sector_size``/``_physical_sector_size``
become ``logical_block_size``/``physical_block_size`` of every disk (virtio-blk and scsi-hd, cold
and hot; Kata Go sets them on hot-plugged virtio-blk, runtime-rs on SCSI too). I/O threads come
from the QEMU backend, which owns ``enable_iothreads``/``indep_iothreads`` and writes the ``-object
iothread`` options: the SCSI controller asks ``QemuTarget.iothread`` for its own (Kata's
``iothread-<hex>``, with ``enable_iothreads``), every virtio-blk PCI disk asks
``QemuTarget.independent_iothread()`` (Kata's ``indep_iothread_0``, with both keys set; Kata
hot-plugs its virtio-blk disks so). The SCSI controller also takes ``QemuTarget.virtio_options``
(``iommu_platform=on`` on CCW with ``enable_iommu_platform``, as Kata gives it); disks never do.
The disk rate limiter is not applied on QEMU (Kata applies it on Cloud Hypervisor and Firecracker
only): the plan says so in a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.qemu import MemoryNeeds, OptValue, QemuAttach, QmpCommand, keyvals, opts
from vmdev.targets import CCW, MMIO, PCI
from vmdev_block.constants import (
    NVDIMM,
    SCSI_CONTROLLER_ID,
    VIRTIO_BLOCK,
    VIRTIO_BLOCK_CCW,
    VIRTIO_MMIO,
    VIRTIO_PMEM,
    VIRTIO_SCSI,
)
from vmdev_block.device import BlockDevice
from vmdev_block.drive import BlockDrive, ccw_devno
from vmdev_block.naming import scsi_id_lun
from vmdev_block.options import BlockSettings
from vmdev_block.settings import KEY_BW_RATE, KEY_DRIVER, KEY_OPS_RATE

MIB: Final = 1024 * 1024
#: QEMU device id of a disk: ``virtio-<drive id>`` (Kata's naming)
DEVICE_ID_PREFIX: Final = "virtio-"
NVDIMM_DEVICE_PREFIX: Final = "nvdimm"
NVDIMM_BACKEND_PREFIX: Final = "nvdimmbackmem"
#: QEMU id of a virtio-pmem device's memory backend: ``pmemmem-<drive id>``
PMEM_BACKEND_PREFIX: Final = "pmemmem-"
PMEM_NO_UNPLUG: Final = "not possible: QEMU cannot hot-unplug a virtio-pmem device"
RATE_LIMIT_NOTE: Final = (
    f"{KEY_BW_RATE}/{KEY_OPS_RATE}: not applied on QEMU (Kata applies the disk rate limiter on Cloud "
    "Hypervisor and Firecracker only)"
)
#: the transport each disk driver needs, and the QEMU device it becomes there
_DISK_DEVICES: Final = {
    VIRTIO_BLOCK: (PCI, "virtio-blk-pci"),
    VIRTIO_MMIO: (MMIO, "virtio-blk-device"),
    VIRTIO_BLOCK_CCW: (CCW, "virtio-blk-ccw"),
}
_TRANSPORT_DRIVER: Final = {PCI: VIRTIO_BLOCK, MMIO: VIRTIO_MMIO, CCW: VIRTIO_BLOCK_CCW}


def render_qemu(
    device: BlockDevice, drive: BlockDrive, target: QemuTarget, hotplug: bool, config: BlockSettings
) -> QemuAttach:
    hot = hotplug and not device.cold_plug and target.transport != MMIO
    if device.driver == NVDIMM:
        return _nvdimm(device, drive, target, hot)
    if device.driver == VIRTIO_PMEM:
        return _virtio_pmem(device, drive, target, hot)
    node = blockdev(device, drive, config)
    if device.driver == VIRTIO_SCSI:
        attach = _scsi(device, drive, target, hot, node, config)
    else:
        attach = _disk(device, drive, target, hot, node, config)
    if config.bw_rate or config.ops_rate:
        attach = attrs.evolve(attach, details={**attach.details, "note": RATE_LIMIT_NOTE})
    return attach


def blockdev(device: BlockDevice, drive: BlockDrive, config: BlockSettings) -> dict[str, Any]:
    """The ``blockdev-add`` arguments of the drive (also flattened into ``-blockdev``)."""
    protocol: dict[str, Any] = {
        "driver": "host_device" if device.host_device else "file",
        "filename": device.host_path,
        "aio": config.aio,
    }
    node: dict[str, Any] = {"driver": "raw", "node-name": drive.id, "read-only": drive.read_only}
    cache = {"direct": config.direct, "no-flush": config.no_flush}
    cache = {key: value for key, value in cache.items() if value is not None}
    if cache:
        node["cache"] = cache
    if drive.discard_unmap:
        node["discard"] = protocol["discard"] = "unmap"
    node["file"] = protocol
    return node


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, OptValue]:
    """Nested blockdev options in QEMU's dotted keyval form (``file.filename=...``)."""
    flat: dict[str, OptValue] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _disk_driver(device: BlockDevice, target: QemuTarget) -> str:
    transport, qemu_driver = _DISK_DEVICES[device.driver]
    if target.transport != transport:
        machine = target.settings.machine_type
        raise UnsupportedError(
            f"block driver {device.driver} needs the {transport} transport, but machine {machine} "
            f"uses {target.transport} (use {KEY_DRIVER} = \"{_TRANSPORT_DRIVER[target.transport]}\" "
            f"or \"{VIRTIO_SCSI}\")",
            device=device.container_path,
            field=KEY_DRIVER,
        )
    return qemu_driver


def _disk(
    device: BlockDevice,
    drive: BlockDrive,
    target: QemuTarget,
    hot: bool,
    node: dict[str, Any],
    config: BlockSettings,
) -> QemuAttach:
    qemu_driver = _disk_driver(device, target)
    props: dict[str, Any] = {"id": DEVICE_ID_PREFIX + drive.id, "drive": drive.id, "serial": drive.id}
    if drive.discard_unmap:
        props["discard"] = True
    if device.driver == VIRTIO_BLOCK_CCW:
        props["devno"] = f"fe.0.{ccw_devno(drive.index, device=device.container_path):04x}"
    props.update(config.sector_sizes)
    thread = target.independent_iothread(0) if device.driver == VIRTIO_BLOCK else None
    if thread:
        props["iothread"] = thread
    bus = target.hotplug_bus(device.container_path) if hot and device.driver == VIRTIO_BLOCK else None
    details = {"qemu_driver": qemu_driver, "bus": bus or "", "serial": drive.id}
    return _attach(qemu_driver, props, node, hot, bus, details)


def _scsi(
    device: BlockDevice,
    drive: BlockDrive,
    target: QemuTarget,
    hot: bool,
    node: dict[str, Any],
    config: BlockSettings,
) -> QemuAttach:
    controller = target.virtio_driver("virtio-scsi")
    scsi_id, lun = scsi_id_lun(drive.index, device=device.container_path)
    props: dict[str, Any] = {
        "id": DEVICE_ID_PREFIX + drive.id,
        "drive": drive.id,
        "bus": f"{SCSI_CONTROLLER_ID}.0",
        "channel": 0,
        "scsi-id": scsi_id,
        "lun": lun,
        "serial": drive.id,
        **config.sector_sizes,
    }
    details = {
        "qemu_driver": "scsi-hd",
        "bus": props["bus"],
        "serial": drive.id,
        "controller": controller,
    }
    controller_props: dict[str, OptValue | None] = {
        "id": SCSI_CONTROLLER_ID,
        "iothread": target.iothread(SCSI_CONTROLLER_ID),
        **target.virtio_options(),
    }
    shared = {SCSI_CONTROLLER_ID: ("-device", opts(controller, controller_props))}
    return attrs.evolve(_attach("scsi-hd", props, node, hot, None, details), shared_args=shared)


def _attach(
    qemu_driver: str,
    props: dict[str, Any],
    node: dict[str, Any],
    hot: bool,
    bus: str | None,
    details: dict[str, Any],
) -> QemuAttach:
    if not hot:
        return QemuAttach(
            args=["-blockdev", keyvals(flatten(node)), "-device", opts(qemu_driver, props)],
            details=details,
        )
    add = {"driver": qemu_driver, **props, **({"bus": bus} if bus else {})}
    return QemuAttach(
        hotplug=[QmpCommand("blockdev-add", node), QmpCommand("device_add", add)],
        unplug=[
            QmpCommand("device_del", {"id": props["id"]}),
            QmpCommand("blockdev-del", {"node-name": node["node-name"]}),
        ],
        hotplugged=True,
        details=details,
    )


def _nvdimm(device: BlockDevice, drive: BlockDrive, target: QemuTarget, hot: bool) -> QemuAttach:
    if target.transport != PCI:
        raise UnsupportedError(
            f"machine {target.settings.machine_type} has no nvdimm support (use q35, pc or virt)",
            device=device.container_path,
            field=KEY_DRIVER,
        )
    size = device.size or 0  # checked when the device was built
    backend_id, device_id = NVDIMM_BACKEND_PREFIX + drive.id, NVDIMM_DEVICE_PREFIX + drive.id
    backend: dict[str, Any] = {"id": backend_id, "mem-path": device.host_path, "size": size, "share": True}
    props: dict[str, Any] = {"id": device_id, "memdev": backend_id}
    if drive.read_only:
        backend["readonly"] = True
        props["unarmed"] = True  # QEMU requires it for a read-only backend
    machine = {"nvdimm": True}
    memory = MemoryNeeds(slots=1, maxmem_extra_mib=-(-size // MIB))
    details = {"qemu_driver": "nvdimm", "guest_path": f"/dev/pmem{drive.nvdimm_id}"}
    if not hot:
        return QemuAttach(
            args=["-object", opts("memory-backend-file", backend), "-device", opts("nvdimm", props)],
            machine=machine,
            memory=memory,
            details=details,
        )
    return QemuAttach(
        hotplug=[
            QmpCommand("object-add", {"qom-type": "memory-backend-file", **backend}),
            QmpCommand("device_add", {"driver": "nvdimm", **props}),
        ],
        hotplugged=True,
        machine=machine,
        memory=memory,
        details={**details, "unplug": "not possible: QEMU cannot hot-unplug an nvdimm"},
    )


def _virtio_pmem(device: BlockDevice, drive: BlockDrive, target: QemuTarget, hot: bool) -> QemuAttach:
    if target.transport != PCI:
        raise UnsupportedError(
            f"machine {target.settings.machine_type} has no virtio-pmem (QEMU has only virtio-pmem-pci; "
            "use q35, pc or virt)",
            device=device.container_path,
            field=KEY_DRIVER,
        )
    size = device.size or 0  # checked when the device was built
    backend_id, device_id = PMEM_BACKEND_PREFIX + drive.id, DEVICE_ID_PREFIX + drive.id
    backend: dict[str, Any] = {"id": backend_id, "mem-path": device.host_path, "size": size, "share": True}
    if drive.read_only:
        backend["readonly"] = True
    props: dict[str, Any] = {"id": device_id, "memdev": backend_id}
    memory = MemoryNeeds(slots=1, maxmem_extra_mib=-(-size // MIB))
    details: dict[str, Any] = {"qemu_driver": "virtio-pmem-pci", "guest_path": f"/dev/pmem{drive.nvdimm_id}"}
    if drive.read_only:
        details["note"] = ("read-only: QEMU maps the file read-only and discards the guest's writes "
                           "(virtio-pmem has no read-only flag the guest sees)")
    if not hot:
        return QemuAttach(
            args=["-object", opts("memory-backend-file", backend), "-device", opts("virtio-pmem-pci", props)],
            memory=memory,
            details=details,
        )
    bus = target.hotplug_bus(device.container_path)
    return QemuAttach(
        hotplug=[
            QmpCommand("object-add", {"qom-type": "memory-backend-file", **backend}),
            QmpCommand("device_add", {"driver": "virtio-pmem-pci", **props, **({"bus": bus} if bus else {})}),
        ],
        hotplugged=True,
        memory=memory,
        details={**details, "bus": bus or "", "unplug": PMEM_NO_UNPLUG},
    )
