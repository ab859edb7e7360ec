"""The typed values of the vhost-user settings: the sandbox's share, its 9p share, its network
interfaces (the keys are declared in :mod:`vmdev_vhostuser.settings`).

Kept apart from the declarations so that loading the plugin creates no class (issue 13, cold
start): this module is imported when the settings ask for a share or an interface.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from vmdev.errors import ConfigError
from vmdev.settings import SandboxSettings
from vmdev_vhostuser.settings import (
    DEFAULT_FS_QUEUE_SIZE,
    DEFAULT_FS_TAG,
    DEFAULT_MSIZE_9P,
    FS_CACHE_KEY,
    FS_CACHE_SIZE_KEY,
    FS_DAEMON_KEY,
    FS_DEVICE,
    FS_EXTRA_ARGS_KEY,
    FS_QUEUE_SIZE_KEY,
    FS_SOCKET_KEY,
    FS_TAG_KEY,
    GUEST_SELINUX_KEY,
    MSIZE_KEY,
    NET_DEVICE,
    NET_ENTRY_KEYS,
    NET_KEY,
    RUNTIME_DIR_KEY,
    SHARED_DIR_KEY,
    SHARED_FS_KEY,
    VHOST_USER_FS_KINDS,
    VIRTIO_9P,
    VIRTIO_FS_NYDUS,
    check_socket_path,
    daemon_socket,
    effective_cache,
)

_MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


@attrs.frozen(kw_only=True)
class NetInterface:
    """One vhost-user network interface: the backend's socket and the guest's MAC address."""

    socket: str
    mac: str
    #: MSI-X for the NIC; off by default because QEMU 7.2 crashes masking vhost-user-net vectors
    msix: bool = False


@attrs.frozen(kw_only=True)
class FsDaemon:
    """The virtiofsd that Kata would start for the share (:mod:`vmdev_vhostuser.daemon` renders
    its command line): ``virtio_fs_daemon`` serving ``shared_dir`` on the share's socket."""

    program: str
    shared_dir: str
    runtime_dir: str
    #: the effective cache mode (Kata's default applied)
    cache: str
    extra_args: tuple[str, ...] = ()
    #: extended attributes on (Kata adds --xattr when disable_guest_selinux = false)
    xattr: bool = False


@attrs.frozen(kw_only=True)
class SharedFs:
    """The sandbox's virtio-fs share, served by a vhost-user-fs daemon on ``socket``: one vmdev
    plans (``daemon``) or one already running (``daemon`` None, ``virtio_fs_socket``)."""

    socket: str
    tag: str = DEFAULT_FS_TAG
    queue_size: int = DEFAULT_FS_QUEUE_SIZE
    cache: str = ""
    cache_size_mib: int = 0
    daemon: FsDaemon | None = None


@attrs.frozen(kw_only=True)
class NinePShare:
    """The sandbox's virtio-9p share: QEMU serves ``path`` itself; ``msize`` is the guest's."""

    path: str
    tag: str = DEFAULT_FS_TAG
    msize: int = DEFAULT_MSIZE_9P


def shared_fs(settings: SandboxSettings) -> SharedFs | None:
    """The vhost-user file system share, or None when ``shared_fs`` asks for none.

    With ``virtio_fs_socket`` the daemon is someone else's (vmdev's behaviour before issue 10,
    and the way to use nydusd); without it vmdev plans the virtiofsd Kata would start, on
    Kata's socket in ``sandbox_runtime_dir``.
    """
    kind = settings.value(SHARED_FS_KEY)
    if kind not in VHOST_USER_FS_KINDS:
        return None
    socket = str(settings.value(FS_SOCKET_KEY))
    daemon = None if socket else _planned_daemon(settings, kind)
    if daemon is not None:
        socket = daemon_socket(daemon.runtime_dir, settings.hypervisor)
    size = int(settings.value(FS_QUEUE_SIZE_KEY))
    return SharedFs(
        socket=socket,
        tag=str(settings.value(FS_TAG_KEY)),
        queue_size=size or DEFAULT_FS_QUEUE_SIZE,
        cache=daemon.cache if daemon is not None else str(settings.value(FS_CACHE_KEY)),
        cache_size_mib=int(settings.value(FS_CACHE_SIZE_KEY)),
        daemon=daemon,
    )


def ninep_share(settings: SandboxSettings) -> NinePShare | None:
    """The virtio-9p share (``shared_fs = "virtio-9p"``), or None."""
    if settings.value(SHARED_FS_KEY) != VIRTIO_9P:
        return None
    return NinePShare(
        path=posixpath.normpath(str(settings.value(SHARED_DIR_KEY))),
        tag=str(settings.value(FS_TAG_KEY)),
        msize=int(settings.value(MSIZE_KEY)) or DEFAULT_MSIZE_9P,
    )


def _planned_daemon(settings: SandboxSettings, kind: str) -> FsDaemon:
    """The virtiofsd to start for ``shared_fs = "virtio-fs"`` (ConfigError when it cannot be)."""
    if kind == VIRTIO_FS_NYDUS:
        raise ConfigError(
            f"vmdev does not plan nydusd (Kata starts it for {VIRTIO_FS_NYDUS} and drives it over its "
            f"API); start nydusd yourself and give its vhost-user socket in {FS_SOCKET_KEY}",
            device=FS_DEVICE,
            field=FS_SOCKET_KEY,
        )
    program = str(settings.value(FS_DAEMON_KEY))
    if not program:
        raise ConfigError(
            f"shared_fs = {kind!r} needs the daemon to start in {FS_DAEMON_KEY} (as Kata: 'cannot "
            f"enable virtio-fs without daemon path'), or the socket of a running one in {FS_SOCKET_KEY}",
            device=FS_DEVICE,
            field=FS_DAEMON_KEY,
        )
    runtime_dir = posixpath.normpath(str(settings.value(RUNTIME_DIR_KEY)))
    check_socket_path(
        daemon_socket(runtime_dir, settings.hypervisor), device=FS_DEVICE, field=RUNTIME_DIR_KEY,
        error=ConfigError,
    )
    shared_dir = posixpath.normpath(str(settings.value(SHARED_DIR_KEY)))
    if "," in shared_dir or "=" in shared_dir:
        raise ConfigError(
            f"{shared_dir!r} holds ',' or '=', which virtiofsd's '-o source=' option cannot carry",
            device=FS_DEVICE,
            field=SHARED_DIR_KEY,
        )
    return FsDaemon(
        program=program,
        shared_dir=shared_dir,
        runtime_dir=runtime_dir,
        cache=effective_cache(str(settings.value(FS_CACHE_KEY)), settings.hypervisor),
        extra_args=tuple(settings.value(FS_EXTRA_ARGS_KEY)),
        xattr=not settings.value(GUEST_SELINUX_KEY),
    )


def net_interfaces(settings: SandboxSettings) -> tuple[NetInterface, ...]:
    return interfaces_from(settings.value(NET_KEY))


# --- vhost_user_net: errors name the entry and its key (vhost_user_net[1].mac) ----------------
def interfaces_from(entries: tuple[Mapping[str, Any], ...]) -> tuple[NetInterface, ...]:
    interfaces = tuple(_net_interface(entry, f"{NET_KEY}[{index}]") for index, entry in enumerate(entries))
    _check_unique(interfaces)
    return interfaces


def _net_interface(entry: Mapping[str, Any], where: str) -> NetInterface:
    unknown = sorted(set(entry) - set(NET_ENTRY_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(NET_ENTRY_KEYS)}",
            device=NET_DEVICE,
            field=where,
        )
    socket = entry.get("socket")
    if not isinstance(socket, str):
        raise ConfigError(
            f"must be a socket path, got {socket!r}", device=NET_DEVICE, field=f"{where}.socket"
        )
    check_socket_path(socket, device=NET_DEVICE, field=f"{where}.socket", error=ConfigError)
    msix = entry.get("msix", False)
    if not isinstance(msix, bool):
        raise ConfigError(f"must be true or false, got {msix!r}", device=NET_DEVICE, field=f"{where}.msix")
    return NetInterface(socket=socket, mac=_mac(entry.get("mac"), f"{where}.mac"), msix=msix)


def _mac(value: object, field: str) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
        raise ConfigError(
            f"must be a MAC address like 52:54:00:12:34:56, got {value!r}", device=NET_DEVICE, field=field
        )
    octets = [int(part, 16) for part in value.split(":")]
    if octets[0] & 1:
        raise ConfigError(
            f"{value} is a multicast address; a NIC needs a unicast one", device=NET_DEVICE, field=field
        )
    if not any(octets):
        raise ConfigError("00:00:00:00:00:00 is not a usable MAC address", device=NET_DEVICE, field=field)
    return value.lower()


def _check_unique(interfaces: tuple[NetInterface, ...]) -> None:
    for attribute in ("socket", "mac"):
        seen: dict[str, int] = {}
        for index, interface in enumerate(interfaces):
            value = getattr(interface, attribute)
            if value in seen:
                raise ConfigError(
                    f"{value} is already used by {NET_KEY}[{seen[value]}]",
                    device=NET_DEVICE,
                    field=f"{NET_KEY}[{index}].{attribute}",
                )
            seen[value] = index
