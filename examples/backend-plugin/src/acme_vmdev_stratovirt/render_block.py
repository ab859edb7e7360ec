"""vmdev-block's disks on StratoVirt: ``-drive`` + ``-device virtio-blk-*``, or QMP hot plug.

Cold: ``-drive id=ID,file=PATH,readonly=on|off,direct=off`` and ``-device
virtio-blk-pci,id=ID,drive=ID,bus=pcie.0,addr=0xN`` (``virtio-blk-device`` without an address on
microvm). Hot (q35/virt): ``blockdev-add`` with ``node-name`` ID, then ``device_add`` behind a root
port; unplug is ``device_del`` then ``blockdev-del``. The drive and the device share the disk's id,
as StratoVirt requires for hot plug and Kata does. ``direct=off`` as Kata's stratovirt.go opens its
disks (StratoVirt's own default is O_DIRECT).

Only virtio-blk can be honoured: ``block_device_driver`` ``virtio-blk`` (either transport) or
``virtio-mmio`` (microvm). Other drivers (``virtio-scsi``, the QEMU default), persistent memory
(nvdimm) and image formats other than raw are refused, never rendered as something else.
"""

from __future__ import annotations

from typing import Any, Final

from acme_vmdev_stratovirt.cmdline import check_value, options
from acme_vmdev_stratovirt.target import MICROVM, StratoVirtAttach, StratoVirtTarget
from vmdev.errors import UnsupportedError
from vmdev.qemu import QmpCommand

DRIVER_KEY: Final = "block_device_driver"
VIRTIO_BLK: Final = "virtio-blk"
VIRTIO_MMIO: Final = "virtio-mmio"


def render(device: Any, target: StratoVirtTarget, hotplug: bool) -> StratoVirtAttach:
    """``device`` is a ``vmdev_block`` ``BlockDevice`` (``id``, ``container_path``, ``host_path``,
    ``driver``, ``read_only``, ``pmem``, ``format``)."""
    name = device.container_path or device.id
    _check(device, target, name)
    driver = target.virtio_driver("virtio-blk")
    if hotplug:
        return _hot(device, target, name, driver)
    drive = options("", {"id": device.id, "file": device.host_path, "readonly": device.read_only,
                         "direct": False}, device=name, fields={"file": "host_path"})
    frontend = options(driver, {"id": device.id, "drive": device.id, **target.cold_place(name)}, device=name)
    return StratoVirtAttach(args=("-drive", drive, "-device", frontend), details={"driver": driver})


def _hot(device: Any, target: StratoVirtTarget, name: str, driver: str) -> StratoVirtAttach:
    place = target.hot_place(name)
    backend = {
        "node-name": device.id,
        "file": {"driver": "file", "filename": check_value(device.host_path, device=name, field="host_path")},
        "cache": {"direct": False},
        "read-only": device.read_only,
    }
    return StratoVirtAttach(
        hotplug=(QmpCommand("blockdev-add", backend),
                 QmpCommand("device_add", {"id": device.id, "driver": driver, "drive": device.id, **place})),
        unplug=(QmpCommand("device_del", {"id": device.id}),
                QmpCommand("blockdev-del", {"node-name": device.id})),
        hotplugged=True,
        details={"driver": driver, "bus": place["bus"]},
    )


def _check(device: Any, target: StratoVirtTarget, name: str) -> None:
    if device.pmem:
        raise UnsupportedError("this StratoVirt backend has no persistent memory (nvdimm)", device=name,
                               field="pmem")
    if device.driver not in (VIRTIO_BLK, VIRTIO_MMIO):
        raise UnsupportedError(
            f"StratoVirt disks are virtio-blk here; {DRIVER_KEY} {device.driver!r} cannot be honoured "
            f"(set {DRIVER_KEY} = {VIRTIO_BLK!r})",
            device=name,
            field=DRIVER_KEY,
        )
    if device.driver == VIRTIO_MMIO and target.settings.machine_type != MICROVM:
        raise UnsupportedError(
            f"{DRIVER_KEY} {VIRTIO_MMIO!r} needs machine {MICROVM}, not {target.settings.machine_type} "
            f"(use {VIRTIO_BLK!r})",
            device=name,
            field=DRIVER_KEY,
        )
    if device.format != "raw":
        raise UnsupportedError(f"this StratoVirt backend passes raw disks only, not {device.format}",
                               device=name, field="format")
