"""The family's device models, and building them from store requests, the settings or saved state.

:class:`VhostUserDeviceAttrs` is Kata's ``config.VhostUserDeviceAttrs`` in Python spelling (it
lived in ``vmdev.models`` before issue 9; its fields, and so every plan's JSON, are unchanged).
Every vhost-user kind shares one model; ``type`` says which (Kata's ``DeviceType`` values, which
are the QEMU PCI driver names). :class:`Virtio9pShare` is the other shared file system Kata
offers (``shared_fs = "virtio-9p"``, issue 10): not vhost-user, but the same setting decides it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.models import DeviceInfo, PciPath
from vmdev.qemu import make_id
from vmdev.resources import Allocator
from vmdev.serialize import from_json
from vmdev_vhostuser.config import NetInterface, NinePShare, SharedFs
from vmdev_vhostuser.kinds import (
    DISK_INDEX_POOL,
    STORE_MAJORS,
    VHOST_USER_BLK,
    VHOST_USER_BLK_MAJOR,
    VHOST_USER_FS,
    VHOST_USER_KIND,
    VHOST_USER_NET,
    VHOST_USER_RECONNECT_TIMEOUT_OPT,
    VHOST_USER_SCSI,
    VHOST_USER_SCSI_MAJOR,
    VHOST_USER_TYPES,
    VIRTIO_9P_KIND,
)
from vmdev_vhostuser.settings import UINT32_MAX

__all__ = [
    "DISK_INDEX_POOL",
    "STORE_MAJORS",
    "VHOST_USER_BLK",
    "VHOST_USER_BLK_MAJOR",
    "VHOST_USER_FS",
    "VHOST_USER_KIND",
    "VHOST_USER_NET",
    "VHOST_USER_RECONNECT_TIMEOUT_OPT",
    "VHOST_USER_SCSI",
    "VHOST_USER_SCSI_MAJOR",
    "VHOST_USER_TYPES",
    "VIRTIO_9P_KIND",
    "VhostUserDeviceAttrs",
    "Virtio9pShare",
    "from_state",
    "fs_device",
    "net_device",
    "ninep_device",
    "parse_reconnect",
    "refuse_reconnect",
    "sandbox_devices",
    "store_device",
]

#: Kata's maxBlockIndex
MAX_DISK_INDEX: Final = 65535

#: id prefixes per device type
ID_PREFIX: Final = {
    VHOST_USER_BLK: "vhublk",
    VHOST_USER_SCSI: "vhuscsi",
    VHOST_USER_FS: "vhufs",
    VHOST_USER_NET: "vhunet",
}
NINEP_ID_PREFIX: Final = "v9p"
#: the kinds QEMU can reconnect (the others fail to realize with a reconnecting chardev)
RECONNECTING_TYPES: Final = (VHOST_USER_BLK, VHOST_USER_NET)


def _error(inst: Any, attribute: attrs.Attribute[Any], message: str) -> DeviceError:
    device = getattr(inst, "container_path", "") or getattr(inst, "dev_id", "") or type(inst).__name__
    return DeviceError(message, device=str(device), field=attribute.name)


def _vhost_user_type(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in VHOST_USER_TYPES:
        raise _error(inst, attribute, f"{value!r} is not one of {', '.join(VHOST_USER_TYPES)}")


def _uint32(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= UINT32_MAX:
        raise _error(inst, attribute, f"must be between 0 and {UINT32_MAX}, got {value}")


@attrs.frozen(kw_only=True)
class VhostUserDeviceAttrs:
    """A vhost-user device: its socket, kind and per-kind settings."""

    kind: ClassVar[str] = VHOST_USER_KIND
    dev_id: str
    socket_path: str
    type: str = attrs.field(validator=_vhost_user_type)
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

    @property
    def name(self) -> str:
        """What error messages call this device: its container path, else its id."""
        return self.container_path or self.dev_id

    @property
    def from_store(self) -> bool:
        """Built from a store request (blk, scsi), not from the sandbox settings (fs, net)."""
        return bool(self.container_path)


@attrs.frozen(kw_only=True)
class Virtio9pShare:
    """The sandbox's virtio-9p share: QEMU's own 9p server exports ``host_path`` as ``mount_tag``.

    ``msize`` is Kata's ``msize_9p``: the guest's mount option (Kata's agent mounts with
    ``trans=virtio,version=9p2000.L,cache=mmap,nodev,msize=N``), not a QEMU property; it travels
    in the plan for whoever mounts the share.
    """

    kind: ClassVar[str] = VIRTIO_9P_KIND
    dev_id: str
    host_path: str
    mount_tag: str
    msize: int = attrs.field(validator=_uint32)

    @property
    def id(self) -> str:
        return self.dev_id

    @property
    def name(self) -> str:
        return self.dev_id

    def guest_mount(self) -> dict[str, Any]:
        """How Kata's agent mounts the share in the guest (kata_agent.go sharedDir9pOptions)."""
        return {
            "source": self.mount_tag,
            "fstype": "9p",
            "options": ["trans=virtio,version=9p2000.L,cache=mmap", "nodev", f"msize={self.msize}"],
        }


# --- building ----------------------------------------------------------------------------------------
def store_device(info: DeviceInfo, reconnect_time: int, alloc: Allocator) -> VhostUserDeviceAttrs:
    """The device for a resolved store request (``info.host_path`` is its socket).

    ``reconnect_time`` is the sandbox's ``vhost_user_reconnect_timeout_sec``. A vhost-user-blk
    disk takes Kata's sandbox block index (shared with the block plugin's drives, so the two
    never collide); other kinds keep ``index = -1``.
    """
    kind = STORE_MAJORS[info.major]
    if info.read_only:
        raise DeviceError(
            "the container may only read this device, but a vhost-user device's access is decided by its "
            "backend (QEMU has no read-only switch for it): export it read-only from the backend and allow "
            "'w' in the device cgroup rule",
            device=info.container_path,
            field="read_only",
        )
    key = f"{info.container_path}|{info.host_path}"
    index = -1
    if kind == VHOST_USER_BLK:
        index = alloc.take(DISK_INDEX_POOL, key, limit=MAX_DISK_INDEX, device=info.container_path)
    return VhostUserDeviceAttrs(
        dev_id=make_id(ID_PREFIX[kind], key),
        socket_path=info.host_path,
        type=kind,
        reconnect_time=_reconnect(info, kind, reconnect_time),
        container_path=info.container_path,
        index=index,
    )


def _reconnect(info: DeviceInfo, kind: str, sandbox_value: int) -> int:
    option = info.driver_options.get(VHOST_USER_RECONNECT_TIMEOUT_OPT)
    if option is None:
        return sandbox_value if kind in RECONNECTING_TYPES else 0
    seconds = parse_reconnect(option, device=info.container_path, field=VHOST_USER_RECONNECT_TIMEOUT_OPT)
    if seconds and kind not in RECONNECTING_TYPES:
        raise DeviceError(
            f"{kind} cannot reconnect to its backend "
            "(QEMU reconnects vhost-user-blk and vhost-user-net only)",
            device=info.container_path,
            field=VHOST_USER_RECONNECT_TIMEOUT_OPT,
        )
    return seconds


def parse_reconnect(value: str, *, device: str, field: str) -> int:
    """A reconnect timeout in seconds from a driver option (a decimal string).

    Kata wraps ``-1`` to 4294967295 and turns garbage into 0 with a warning; both are errors here.
    """
    number = int(value.strip()) if re.fullmatch(r"[0-9]+", value.strip()) else None
    if number is None or number > UINT32_MAX:
        raise DeviceError(
            f"must be a whole number of seconds between 0 and {UINT32_MAX}, got {value!r}",
            device=device,
            field=field,
        )
    return number


def fs_device(share: SharedFs) -> VhostUserDeviceAttrs:
    """The sandbox's virtio-fs device."""
    return VhostUserDeviceAttrs(
        dev_id=make_id(ID_PREFIX[VHOST_USER_FS], f"{share.socket}|{share.tag}"),
        socket_path=share.socket,
        type=VHOST_USER_FS,
        tag=share.tag,
        cache=share.cache,
        cache_size=share.cache_size_mib,
        queue_size=share.queue_size,
    )


def net_device(interface: NetInterface, reconnect_time: int) -> VhostUserDeviceAttrs:
    """One vhost-user network interface."""
    return VhostUserDeviceAttrs(
        dev_id=make_id(ID_PREFIX[VHOST_USER_NET], f"{interface.socket}|{interface.mac}"),
        socket_path=interface.socket,
        type=VHOST_USER_NET,
        mac_address=interface.mac,
        reconnect_time=reconnect_time,
    )


def ninep_device(share: NinePShare) -> Virtio9pShare:
    """The sandbox's virtio-9p share."""
    return Virtio9pShare(
        dev_id=make_id(NINEP_ID_PREFIX, f"{share.path}|{share.tag}"),
        host_path=share.path,
        mount_tag=share.tag,
        msize=share.msize,
    )


def sandbox_devices(
    share: SharedFs | None,
    interfaces: tuple[NetInterface, ...],
    reconnect_time: int,
    ninep: NinePShare | None = None,
) -> list[VhostUserDeviceAttrs | Virtio9pShare]:
    """The shared file system (a vhost-user one or 9p, if configured), then every network
    interface."""
    devices: list[VhostUserDeviceAttrs | Virtio9pShare] = [fs_device(share)] if share is not None else []
    if ninep is not None:
        devices.append(ninep_device(ninep))
    return devices + [net_device(interface, reconnect_time) for interface in interfaces]


def from_state(kind: str, data: Mapping[str, object]) -> VhostUserDeviceAttrs | Virtio9pShare | None:
    """The device saved as ``data`` (``vmdev.serialize.to_json`` of it), or None for other kinds.

    Nothing is looked up on the host: the saved device is the device (whether its socket is
    still there is :func:`vmdev_vhostuser.host.host_facts`' business).
    """
    cls = {VHOST_USER_KIND: VhostUserDeviceAttrs, VIRTIO_9P_KIND: Virtio9pShare}.get(kind)
    # what the validators raise (the DeviceError naming the field) comes out of from_json as it is
    return None if cls is None else from_json(cls, data)


def refuse_reconnect(device: VhostUserDeviceAttrs, hypervisor: str) -> None:
    """Cloud Hypervisor and Firecracker have no reconnect timeout: a non-zero one is refused."""
    if device.reconnect_time:
        raise UnsupportedError(
            f"{hypervisor} has no vhost-user reconnect timeout ({device.reconnect_time} s were asked)",
            device=device.name,
            field="reconnect_time",
        )
