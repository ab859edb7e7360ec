"""The generic vocabulary: the device request, the device protocol and the generic device.

These are the generic shapes of Kata Containers' ``virtcontainers/device/config`` package in
Python spelling (snake_case fields, attrs classes validated at construction). Each device family
owns its models and constants (in its own distribution): the core names no family, so a
separately installed distribution can add one on equal terms. ``docs/seed-names.md`` maps every
name of Kata's package to its Python import.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

import attrs

from vmdev._convert import int_tuple
from vmdev.errors import DeviceError

# --- device types (Kata config.DeviceType): the families define theirs ------------------------------
DEVICE_GENERIC: Final = "generic"

# --- numeric and identifier constants ---------------------------------------------------------
MAX_DEV_ID_SIZE: Final = 31
PCI_DOMAIN: Final = "0000"
MAX_PCIE_ROOT_PORT: Final = 16
MAX_PCIE_SWITCH_PORT: Final = 16
PCI_BRIDGE_MAX_CAPACITY: Final = 30

#: OCI device types: character, unbuffered character, block, FIFO.
OCI_DEVICE_TYPES: Final = ("c", "u", "b", "p")


class PCIePort(str, enum.Enum):
    """Which PCIe port kind a device is placed on (Kata's ``config.PCIePort``; families' settings
    choose one for their hot- and cold-plugged devices)."""

    ROOT_PORT = "root-port"
    SWITCH_PORT = "switch-port"
    BRIDGE_PORT = "bridge-port"
    NO_PORT = "no-port"

    @property
    def bus_prefix(self) -> str:
        return {"root-port": "rp", "switch-port": "swdp", "bridge-port": "bp"}.get(self.value, "")


def _device_error(inst: Any, attribute: attrs.Attribute[Any], message: str) -> DeviceError:
    device = getattr(inst, "container_path", "") or getattr(inst, "id", "") or type(inst).__name__
    return DeviceError(message, device=str(device), field=attribute.name)


def _one_of(*choices: str) -> Any:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise _device_error(inst, attribute, f"{value!r} is not one of {', '.join(choices)}")

    return check


def _major_minor(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    # -1 marks a regular file used as a disk (Kata's "block file").
    if not -1 <= value <= 0xFFFFFFFF:
        raise _device_error(inst, attribute, f"must be -1 or a device number >= 0, got {value}")


def path_text(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A path vmdev may pass on: a string without NUL, control characters or lone surrogates
    (the OCI reader refuses the same, so the Python API and the CLI agree)."""
    if not isinstance(value, str):
        raise _device_error(inst, attribute, f"must be a string, got {type(value).__name__}")
    if value.isascii() and value.isprintable():  # none of them: the common case, without the regex
        return
    found = re.search(_UNSAFE_PATH_CHAR, value)  # compiled (and kept) by re when first needed
    if found is None:
        return
    if found.group() < "\ud800":
        raise _device_error(inst, attribute, f"{json.dumps(value)} contains a control character")
    raise _device_error(inst, attribute, f"{json.dumps(value)} contains a lone surrogate")


#: what :func:`path_text` refuses (the first one found names the problem)
_UNSAFE_PATH_CHAR: Final = "[\x00-\x1f\x7f\ud800-\udfff]"


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


def device_key(info: DeviceInfo) -> str:
    """What makes two requests the same device: the device number within its class (block or
    character), or the host path for regular files (major -1) and FIFOs. Kata ignores the
    class, so its char 1:3 and block 1:3 collide; here they do not."""
    if info.is_block_file:
        return f"file {info.host_path}"
    if info.dev_type == "p":
        return f"fifo {info.host_path or info.container_path}"
    kind = "block" if info.dev_type == "b" else "char"
    return f"{kind} {info.major}:{info.minor}"


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
