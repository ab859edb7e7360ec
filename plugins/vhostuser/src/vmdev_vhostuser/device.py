"""Building :class:`VhostUserDeviceAttrs` from store requests and from the sandbox settings."""

from __future__ import annotations

from typing import Final

from vmdev.errors import DeviceError
from vmdev.models import (
    BLOCK_INDEX_POOL,
    MAX_BLOCK_INDEX,
    VHOST_USER_BLK,
    VHOST_USER_FS,
    VHOST_USER_NET,
    VHOST_USER_RECONNECT_TIMEOUT_OPT,
    VHOST_USER_SCSI,
    DeviceInfo,
    VhostUserDeviceAttrs,
)
from vmdev.qemu import make_id
from vmdev.resources import Allocator
from vmdev_vhostuser.host import STORE_MAJORS
from vmdev_vhostuser.settings import NetInterface, SharedFs, VhostUserConfig, parse_reconnect

#: id prefixes per device type
ID_PREFIX: Final = {
    VHOST_USER_BLK: "vhublk",
    VHOST_USER_SCSI: "vhuscsi",
    VHOST_USER_FS: "vhufs",
    VHOST_USER_NET: "vhunet",
}
#: the kinds QEMU can reconnect (the others fail to realize with a reconnecting chardev)
RECONNECTING_TYPES: Final = (VHOST_USER_BLK, VHOST_USER_NET)


def store_device(info: DeviceInfo, config: VhostUserConfig, alloc: Allocator) -> VhostUserDeviceAttrs:
    """The device for a resolved store request (``info.host_path`` is its socket).

    A vhost-user-blk disk takes Kata's sandbox block index (shared with the block plugin's
    drives, so the two never collide); other kinds keep ``index = -1``.
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
        index = alloc.take(BLOCK_INDEX_POOL, key, limit=MAX_BLOCK_INDEX, device=info.container_path)
    return VhostUserDeviceAttrs(
        dev_id=make_id(ID_PREFIX[kind], key),
        socket_path=info.host_path,
        type=kind,
        reconnect_time=_reconnect(info, kind, config),
        container_path=info.container_path,
        index=index,
    )


def _reconnect(info: DeviceInfo, kind: str, config: VhostUserConfig) -> int:
    option = info.driver_options.get(VHOST_USER_RECONNECT_TIMEOUT_OPT)
    if option is None:
        return config.reconnect_time if kind in RECONNECTING_TYPES else 0
    seconds = parse_reconnect(option, device=info.container_path, field=VHOST_USER_RECONNECT_TIMEOUT_OPT)
    if seconds and kind not in RECONNECTING_TYPES:
        raise DeviceError(
            f"{kind} cannot reconnect to its backend "
            "(QEMU reconnects vhost-user-blk and vhost-user-net only)",
            device=info.container_path,
            field=VHOST_USER_RECONNECT_TIMEOUT_OPT,
        )
    return seconds


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


def net_device(interface: NetInterface, config: VhostUserConfig) -> VhostUserDeviceAttrs:
    """One vhost-user network interface."""
    return VhostUserDeviceAttrs(
        dev_id=make_id(ID_PREFIX[VHOST_USER_NET], f"{interface.socket}|{interface.mac}"),
        socket_path=interface.socket,
        type=VHOST_USER_NET,
        mac_address=interface.mac,
        reconnect_time=config.reconnect_time,
    )


def sandbox_devices(config: VhostUserConfig) -> list[VhostUserDeviceAttrs]:
    """The shared file system (if a vhost-user one is configured), then every network interface."""
    devices = [fs_device(config.shared_fs)] if config.shared_fs is not None else []
    return devices + [net_device(interface, config) for interface in config.net]
