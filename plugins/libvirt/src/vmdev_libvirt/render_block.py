"""vmdev-block's disks and persistent memory as libvirt ``<disk>`` and ``<memory model='nvdimm'>``.

* virtio-blk: ``<disk type='block|file' device='disk'>`` with ``<driver name='qemu' type='raw'>``,
  ``<source dev|file>``, ``<target dev='vdX' bus='virtio'>``, the drive id as ``<serial>`` (what
  the guest's ``/sys/block/*/serial`` shows, as with the QEMU backend), ``<readonly/>``, and a
  root port of its own on q35;
* virtio-scsi: the same with ``<target bus='scsi'>`` and ``<address type='drive'>`` at Kata's
  ``scsi-id``/``lun`` of the drive index, on the one ``virtio-scsi`` controller (index 0) the
  SCSI disks share;
* virtio-blk-ccw: ``<address type='ccw' cssid='0xfe' ssid='0x0' devno=...>`` (s390x);
* nvdimm: ``<memory model='nvdimm' access='shared'>`` with the image as ``<source><path>``, its
  size and NUMA node 0; the domain gets ``<maxMemory slots>`` and a NUMA cell for it. QEMU cannot
  unplug an nvdimm, so once hot-plugged it stays.

virtio-mmio has no libvirt form on x86 (libvirt does not run the ``microvm`` machine) and is
refused. Cache and AIO follow vmdev-block's declared settings when that family is installed:
``block_device_aio`` becomes ``io=``, and ``cache.direct``/``cache.no-flush`` the libvirt cache
mode that has them (``none``: direct; ``unsafe``: no flush; ``writeback``: neither). No libvirt
mode has both direct I/O and ignored flushes: that combination is refused rather than changed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Final

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.qemu import MemoryNeeds
from vmdev.settings import SandboxSettings
from vmdev_libvirt.settings import family_value
from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget, alias
from vmdev_libvirt.xmltree import check_text, element, hex_attr

VIRTIO_BLOCK: Final = "virtio-blk"
VIRTIO_SCSI: Final = "virtio-scsi"
VIRTIO_BLOCK_CCW: Final = "virtio-blk-ccw"
VIRTIO_MMIO: Final = "virtio-mmio"
NVDIMM: Final = "nvdimm"
SCSI_CONTROLLER: Final = "scsi0"
KEY_DRIVER: Final = "block_device_driver"
KEY_AIO: Final = "block_device_aio"
KEY_CACHE_SET: Final = "block_device_cache_set"
KEY_CACHE_DIRECT: Final = "block_device_cache_direct"
KEY_CACHE_NOFLUSH: Final = "block_device_cache_noflush"
DEFAULT_AIO: Final = "io_uring"
#: Kata's numbering of SCSI disks: index = scsi-id * 256 + lun
LUNS_PER_TARGET: Final = 256
MIB: Final = 1024 * 1024
KIB: Final = 1024


def drive_name(prefix: str, index: int, *, device: str) -> str:
    """``vda``, ..., ``vdz``, ``vdaa``, ... for ``prefix`` ``vd`` (or ``sd``): Kata's naming."""
    if index < 0:
        raise DeviceError("a drive index cannot be negative", device=device, field="index")
    letters: list[str] = []
    while index >= 0:
        letters.append(chr(ord("a") + index % 26))
        index = index // 26 - 1
    return prefix + "".join(reversed(letters))


def render(device: Any, target: LibvirtTarget, hotplug: bool) -> LibvirtAttach:
    name = str(device.container_path or device.id)
    hot = hotplug and not device.cold_plug
    driver = str(device.driver)
    if driver == NVDIMM:
        return _nvdimm(device, hot, name)
    _check_transport(driver, target, name)
    disk, target_dev = _disk(device, target, name, driver)
    controllers: dict[str, ET.Element] = {}
    if driver == VIRTIO_SCSI:
        controllers[SCSI_CONTROLLER] = element(
            "controller", {"type": "scsi", "index": 0, "model": "virtio-scsi"},
            element("alias", {"name": alias(SCSI_CONTROLLER)}),
            target.shared_address(SCSI_CONTROLLER, name, field=KEY_DRIVER),
        )
    details = {"libvirt_element": "disk", "target_dev": target_dev, "serial": str(device.drive.id)}
    return LibvirtAttach(devices=[disk], controllers=controllers, hotplugged=hot, details=details)


def _check_transport(driver: str, target: LibvirtTarget, name: str) -> None:
    if driver == VIRTIO_MMIO:
        raise UnsupportedError(
            "libvirt has no virtio-mmio disks on this machine (it does not run microvm); use "
            f"{KEY_DRIVER} = \"virtio-blk\" or \"virtio-scsi\"",
            device=name,
            field=KEY_DRIVER,
        )
    if (driver == VIRTIO_BLOCK_CCW) != target.ccw and driver != VIRTIO_SCSI:
        wanted = VIRTIO_BLOCK_CCW if target.ccw else VIRTIO_BLOCK
        raise UnsupportedError(
            f"block driver {driver} does not fit machine {target.settings.machine_type} (use "
            f"{KEY_DRIVER} = \"{wanted}\" or \"{VIRTIO_SCSI}\")",
            device=name,
            field=KEY_DRIVER,
        )


def _disk(device: Any, target: LibvirtTarget, name: str, driver: str) -> tuple[ET.Element, str]:
    drive = device.drive
    source_attr = "dev" if device.host_device else "file"
    source = check_text(str(device.host_path), device=name, field="host_path")
    address: ET.Element | None
    if driver == VIRTIO_SCSI:
        target_dev = drive_name("sd", drive.index, device=name)
        guest = element("target", {"dev": target_dev, "bus": "scsi"})
        scsi_id, lun = divmod(int(drive.index), LUNS_PER_TARGET)
        address = element("address", {"type": "drive", "controller": 0, "bus": 0, "target": scsi_id,
                                      "unit": lun})
    else:
        virt_path = str(drive.virt_path or "")
        target_dev = virt_path.rsplit("/", 1)[-1] if virt_path else drive_name("vd", drive.index, device=name)
        guest = element("target", {"dev": target_dev, "bus": "virtio"})
        address = _ccw_address(drive.dev_no, name) if driver == VIRTIO_BLOCK_CCW else target.address(name)
    disk = element(
        "disk", {"type": "block" if device.host_device else "file", "device": "disk"},
        element("driver", _driver_attrs(target.settings, drive.discard_unmap, name, device.format or "raw")),
        element("source", {source_attr: source}),
        guest,
        element("serial", text=str(drive.id)),
        element("readonly") if drive.read_only else None,
        element("alias", {"name": alias(str(drive.id))}),
        address,
    )
    return disk, target_dev


def _ccw_address(dev_no: str, name: str) -> ET.Element:
    """``0.0.1000`` (the guest's CCW bus id) -> ``<address type='ccw' cssid='0xfe' ...>``: QEMU's
    virtual channel subsystem is 0xfe, which the guest sees as css 0."""
    try:
        devno = int(str(dev_no).rsplit(".", 1)[-1], 16)
    except ValueError:
        raise DeviceError(f"{dev_no!r} is not a CCW device number", device=name, field="dev_no") from None
    return element("address", {"type": "ccw", "cssid": "0xfe", "ssid": "0x0", "devno": hex_attr(devno, 4)})


def cache_mode(settings: SandboxSettings, device: str) -> str | None:
    """The libvirt cache mode of vmdev-block's cache settings (None: libvirt's default)."""
    aio = family_value(settings, KEY_AIO)
    direct: bool | None = None
    no_flush: bool | None = None
    if family_value(settings, KEY_CACHE_SET):
        direct, no_flush = bool(family_value(settings, KEY_CACHE_DIRECT)), \
            bool(family_value(settings, KEY_CACHE_NOFLUSH))
    elif aio == "native":
        direct = True
    if direct is None and no_flush is None:
        return None
    if direct and no_flush:
        raise UnsupportedError(
            "libvirt has no cache mode with both direct I/O and ignored flushes (none: direct; "
            f"unsafe: no flushes); set {KEY_CACHE_DIRECT} or {KEY_CACHE_NOFLUSH} to false",
            device=device,
            field=KEY_CACHE_NOFLUSH,
        )
    if direct:
        return "none"
    return "unsafe" if no_flush else "writeback"


def _driver_attrs(settings: SandboxSettings, discard: bool, device: str, fmt: str) -> dict[str, str | None]:
    declared = KEY_AIO in settings.values
    aio = (family_value(settings, KEY_AIO) or DEFAULT_AIO) if declared else None
    return {
        "name": "qemu",
        "type": fmt,
        "cache": cache_mode(settings, device),
        "io": aio,
        "discard": "unmap" if discard else None,
    }


def _nvdimm(device: Any, hot: bool, name: str) -> LibvirtAttach:
    size = int(device.size or 0)  # checked (a multiple of 4 KiB) when the device was built
    drive = device.drive
    target = element(
        "target",
        {},
        element("size", {"unit": "KiB"}, text=str(size // KIB)),
        element("node", text="0"),
        element("readonly") if drive.read_only else None,
    )
    memory = element(
        "memory", {"model": "nvdimm", "access": "shared"},
        element("source", {}, element("path", text=check_text(str(device.host_path), device=name,
                                                               field="host_path"))),
        target,
        element("alias", {"name": alias("nvdimm-" + str(drive.id))}),
    )
    return LibvirtAttach(
        devices=[memory],
        hotplugged=hot,
        unpluggable=False,
        memory=MemoryNeeds(slots=1, maxmem_extra_mib=-(-size // MIB)),
        details={"libvirt_element": "memory", "guest_path": f"/dev/pmem{drive.nvdimm_id}",
                 **({"unplug": "not possible: QEMU cannot hot-unplug an nvdimm"} if hot else {})},
    )
