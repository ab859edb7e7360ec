"""The shared vocabulary: constants and typed device models.

These are the data shapes of Kata Containers' ``virtcontainers/device/config``
package in Python spelling (snake_case fields, attrs classes validated at
construction). The core's own logic uses only :class:`DeviceInfo` and
:class:`GenericDevice`; the other models are here so that every plugin, the
device manager and third-party tools speak one language. Device-family logic
lives in the plugins.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

import attrs

from vmdev._convert import int_tuple, str_tuple
from vmdev.errors import DeviceError

# --- device types (Kata config.DeviceType) -----------------------------------------------------
DEVICE_VFIO: Final = "vfio"
DEVICE_BLOCK: Final = "block"
DEVICE_GENERIC: Final = "generic"
VHOST_USER_SCSI: Final = "vhost-user-scsi-pci"
VHOST_USER_NET: Final = "virtio-net-pci"
VHOST_USER_BLK: Final = "vhost-user-blk-pci"
VHOST_USER_FS: Final = "vhost-user-fs-pci"
VHOST_USER_TYPES: Final = (VHOST_USER_SCSI, VHOST_USER_NET, VHOST_USER_BLK, VHOST_USER_FS)

# --- block drivers (block_device_driver and the "block-driver" driver option) -------------------
VIRTIO_MMIO: Final = "virtio-mmio"
VIRTIO_BLOCK: Final = "virtio-blk"
VIRTIO_BLOCK_CCW: Final = "virtio-blk-ccw"
VIRTIO_SCSI: Final = "virtio-scsi"
NVDIMM: Final = "nvdimm"
BLOCK_DRIVERS: Final = (VIRTIO_SCSI, VIRTIO_BLOCK, VIRTIO_MMIO, NVDIMM, VIRTIO_BLOCK_CCW)

# --- block AIO modes (block_device_aio) -------------------------------------------------------
AIO_THREADS: Final = "threads"
AIO_NATIVE: Final = "native"
AIO_IO_URING: Final = "io_uring"
BLOCK_AIO_MODES: Final = (AIO_IO_URING, AIO_NATIVE, AIO_THREADS)

# --- shared file systems (shared_fs) ----------------------------------------------------------
VIRTIO_9P: Final = "virtio-9p"
VIRTIO_FS: Final = "virtio-fs"
VIRTIO_FS_NYDUS: Final = "virtio-fs-nydus"
NO_SHARED_FS: Final = "none"

# --- driver-option keys (DeviceInfo.driver_options) -------------------------------------------
FS_TYPE_OPT: Final = "fstype"
BLOCK_DRIVER_OPT: Final = "block-driver"
VHOST_USER_RECONNECT_TIMEOUT_OPT: Final = "vhost-user-reconnect-timeout"

# --- vhost-user pseudo majors and defaults ----------------------------------------------------
VHOST_USER_BLK_MAJOR: Final = 241
VHOST_USER_SCSI_MAJOR: Final = 242
DEFAULT_VHOST_USER_RECONNECT_TIMEOUT: Final = 0
DEFAULT_VHOST_USER_STORE_PATH: Final = "/var/run/kata-containers/vhost-user/"

# --- numeric and identifier constants ---------------------------------------------------------
MAX_DEV_ID_SIZE: Final = 31
PCI_CONFIG_SPACE_SIZE: Final = 256
PCI_DOMAIN: Final = "0000"
MAX_SCSI_DEVICES: Final = 65535
MAX_BLOCK_INDEX: Final = 65535
#: allocator pool of Kata's sandbox block index, shared by every disk-like device
#: (block drives, nvdimm, vhost-user-blk) so their indexes never collide
BLOCK_INDEX_POOL: Final = "block.index"
MAX_PCIE_ROOT_PORT: Final = 16
MAX_PCIE_SWITCH_PORT: Final = 16
PCI_BRIDGE_MAX_CAPACITY: Final = 30
SCSI_CONTROLLER_ID: Final = "scsi0"
RNG_ID: Final = "rng0"

#: OCI device types: character, unbuffered character, block, FIFO.
OCI_DEVICE_TYPES: Final = ("c", "u", "b", "p")


class PCIePort(str, enum.Enum):
    """Which PCIe port kind a device is placed on (``hot_plug_vfio`` / ``cold_plug_vfio``)."""

    ROOT_PORT = "root-port"
    SWITCH_PORT = "switch-port"
    BRIDGE_PORT = "bridge-port"
    NO_PORT = "no-port"

    @property
    def bus_prefix(self) -> str:
        return {"root-port": "rp", "switch-port": "swdp", "bridge-port": "bp"}.get(self.value, "")


class VFIODeviceType(enum.IntEnum):
    """Kind of VFIO device (numbers as Kata persists them)."""

    ERROR = 0
    NORMAL = 1
    MEDIATED = 2
    AP = 3


class VFIOMode(str, enum.Enum):
    """``vfio_mode``: who binds passed-through devices in the guest."""

    VFIO = "vfio"
    GUEST_KERNEL = "guest-kernel"


def _device_error(inst: Any, attribute: attrs.Attribute[Any], message: str) -> DeviceError:
    device = getattr(inst, "container_path", "") or getattr(inst, "id", "") or type(inst).__name__
    return DeviceError(message, device=str(device), field=attribute.name)


def _one_of(*choices: str) -> Any:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise _device_error(inst, attribute, f"{value!r} is not one of {', '.join(choices)}")

    return check


def _non_negative(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise _device_error(inst, attribute, f"must not be negative, got {value}")


def _uint32(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise _device_error(inst, attribute, f"must be between 0 and 4294967295, got {value}")


def _major_minor(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    # -1 marks a regular file used as a disk (Kata's "block file").
    if not -1 <= value <= 0xFFFFFFFF:
        raise _device_error(inst, attribute, f"must be -1 or a device number >= 0, got {value}")


def path_text(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A path vmdev may pass on: a string without NUL, control characters or lone surrogates
    (the OCI reader refuses the same, so the Python API and the CLI agree)."""
    if not isinstance(value, str):
        raise _device_error(inst, attribute, f"must be a string, got {type(value).__name__}")
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise _device_error(inst, attribute, f"{json.dumps(value)} contains a control character")
        if "\ud800" <= ch <= "\udfff":
            raise _device_error(inst, attribute, f"{json.dumps(value)} contains a lone surrogate")


def _str_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class PciPath:
    """A guest PCI path: slots from the root bus to the device, shown as ``02/00/01``."""

    slots: tuple[int, ...] = attrs.field(default=(), converter=int_tuple)

    @slots.validator
    def _check(self, attribute: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
        for slot in value:
            if not 0 <= slot <= 0x1F:
                raise ValueError(f"PCI slot 0x{slot:x} should be in range [0..0x1f]")

    @classmethod
    def parse(cls, text: str) -> PciPath:
        if not text:
            return cls()
        slots = []
        for token in text.split("/"):
            if not re.fullmatch(r"[0-9a-fA-F]{1,2}", token):
                raise ValueError(f"invalid PCI path {text!r}")
            slots.append(int(token, 16))
        return cls(slots=tuple(slots))

    def __str__(self) -> str:
        return "/".join(f"{slot:02x}" for slot in self.slots)


@attrs.frozen(kw_only=True)
class DeviceInfo:
    """One device request: an OCI ``linux.devices`` entry or a device derived from a mount."""

    container_path: str = attrs.field(validator=path_text)
    dev_type: str = attrs.field(validator=_one_of(*OCI_DEVICE_TYPES))
    major: int = attrs.field(validator=_major_minor)
    minor: int = attrs.field(validator=_major_minor)
    host_path: str = attrs.field(default="", validator=path_text)
    id: str = ""
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    driver_options: Mapping[str, str] = attrs.field(factory=dict, converter=_str_mapping)
    pmem: bool = False
    read_only: bool = False
    discard_unmap: bool = False
    cold_plug: bool = False
    port: PCIePort = PCIePort.NO_PORT

    @property
    def is_block_file(self) -> bool:
        """A regular file used as a disk (Kata's ``Major == -1``)."""
        return self.major == -1

    @property
    def name(self) -> str:
        """What error messages call this device."""
        return self.container_path or self.host_path or f"{self.dev_type} {self.major}:{self.minor}"


@runtime_checkable
class Device(Protocol):
    """What ``build_device`` returns: a typed, immutable device with a kind and an id."""

    kind: ClassVar[str]

    @property
    def id(self) -> str: ...


@attrs.frozen(kw_only=True)
class GenericDevice:
    """A device that stays in the container (Kata's DeviceGeneric): nothing to attach."""

    kind: ClassVar[str] = DEVICE_GENERIC
    id: str
    container_path: str
    host_path: str
    dev_type: str = attrs.field(validator=_one_of(*OCI_DEVICE_TYPES))
    major: int
    minor: int
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@attrs.frozen(kw_only=True)
class BlockDrive:
    """A disk for the guest (built by the block and vhost-user plugins)."""

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
class VFIODev:
    """One PCI function, mediated device or AP matrix device passed through with VFIO."""

    kind: ClassVar[str] = DEVICE_VFIO
    id: str
    type: VFIODeviceType = VFIODeviceType.NORMAL
    bdf: str = ""
    sysfs_dev: str = ""
    devfs_dev: str = ""
    vendor_id: str = ""
    device_id: str = ""
    class_: str = ""
    bus: str = ""
    guest_pci_path: PciPath = attrs.field(factory=PciPath)
    numa_node: int = -1
    is_pcie: bool = False
    ap_devices: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    port: PCIePort = PCIePort.NO_PORT
    host_path: str = ""

    @property
    def iommufd_id(self) -> str:
        """``99`` for ``/dev/vfio/devices/vfio99``, else ``""`` (Kata's ``IOMMUFDID``)."""
        prefix = "/dev/vfio/devices"
        if not self.devfs_dev.startswith(prefix):
            return ""
        base = self.devfs_dev.rsplit("/", 1)[-1]
        return base[len("vfio") :] if base.startswith("vfio") else base


@attrs.frozen(kw_only=True)
class VhostUserDeviceAttrs:
    """A vhost-user device: its socket, kind and per-kind settings."""

    kind: ClassVar[str] = "vhost-user"
    dev_id: str
    socket_path: str
    type: str = attrs.field(validator=_one_of(*VHOST_USER_TYPES))
    mac_address: str = ""
    tag: str = ""
    cache: str = ""
    cache_size: int = attrs.field(default=0, validator=_uint32)
    queue_size: int = attrs.field(default=0, validator=_uint32)
    reconnect_time: int = attrs.field(default=0, validator=_uint32)
    pci_path: PciPath = attrs.field(factory=PciPath)
    index: int = -1
    #: the container path of the request it was built from ("" for sandbox devices); errors name it
    container_path: str = ""

    @property
    def id(self) -> str:
        return self.dev_id


@attrs.frozen(kw_only=True)
class RNGDev:
    """The sandbox's virtio-rng device and its entropy source on the host."""

    kind: ClassVar[str] = "rng"
    id: str = RNG_ID
    filename: str = "/dev/urandom"

    @property
    def host_path(self) -> str:
        """The entropy source on the host ("" for QEMU's built-in source)."""
        return self.filename
