"""The sandbox settings this plugin owns, read and validated into one immutable value.

Kata's keys are kept where Kata has them (``enable_vhost_user_store``, ``vhost_user_store_path``,
``vhost_user_reconnect_timeout_sec``, ``shared_fs``, ``virtio_fs_cache``, ``virtio_fs_cache_size``,
``virtio_fs_queue_size``). Kata starts virtiofsd and finds vhost-user network sockets itself; vmdev
starts nothing, so the sockets are settings of their own: ``virtio_fs_socket`` (with
``virtio_fs_tag``) and the ``vhost_user_net`` list of ``{socket, mac}`` tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from vmdev.errors import ConfigError, DeviceError, VmdevError
from vmdev.models import NO_SHARED_FS, VIRTIO_9P, VIRTIO_FS, VIRTIO_FS_NYDUS
from vmdev.settings import SandboxSettings

STORE_ENABLED_KEY: Final = "enable_vhost_user_store"
STORE_PATH_KEY: Final = "vhost_user_store_path"
RECONNECT_KEY: Final = "vhost_user_reconnect_timeout_sec"
SHARED_FS_KEY: Final = "shared_fs"
FS_SOCKET_KEY: Final = "virtio_fs_socket"
FS_TAG_KEY: Final = "virtio_fs_tag"
FS_QUEUE_SIZE_KEY: Final = "virtio_fs_queue_size"
FS_CACHE_KEY: Final = "virtio_fs_cache"
FS_CACHE_SIZE_KEY: Final = "virtio_fs_cache_size"
NET_KEY: Final = "vhost_user_net"

SHARED_FS_KINDS: Final = (VIRTIO_FS, VIRTIO_FS_NYDUS, VIRTIO_9P, NO_SHARED_FS)
#: the shared-fs kinds served by a vhost-user-fs daemon (virtiofsd, nydusd)
VHOST_USER_FS_KINDS: Final = (VIRTIO_FS, VIRTIO_FS_NYDUS)
DEFAULT_FS_TAG: Final = "kataShared"
DEFAULT_FS_QUEUE_SIZE: Final = 1024
#: virtqueues hold at most 1024 entries (QEMU's VIRTQUEUE_MAX_SIZE)
MAX_QUEUE_SIZE: Final = 1024
#: the virtio-fs config space holds a tag of at most 36 bytes
MAX_TAG_BYTES: Final = 36
#: cache modes of virtiofsd (the Rust one: never/metadata/auto/always; QEMU 7.2's C one: none)
FS_CACHE_MODES: Final = ("never", "metadata", "auto", "always", "none")
#: sun_path holds 108 bytes including the terminating NUL
MAX_SOCKET_PATH_BYTES: Final = 107
UINT32_MAX: Final = 0xFFFFFFFF
NET_ENTRY_KEYS: Final = ("socket", "mac", "msix")

#: where errors about the sandbox-level devices point
FS_DEVICE: Final = "virtio-fs"
NET_DEVICE: Final = "vhost-user-net"
STORE_DEVICE: Final = "vhost-user-store"

_MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


@attrs.frozen(kw_only=True)
class NetInterface:
    """One vhost-user network interface: the backend's socket and the guest's MAC address."""

    socket: str
    mac: str
    #: MSI-X for the NIC; off by default because QEMU 7.2 crashes masking vhost-user-net vectors
    msix: bool = False


@attrs.frozen(kw_only=True)
class SharedFs:
    """The sandbox's virtio-fs share, served by a vhost-user-fs daemon on ``socket``."""

    socket: str
    tag: str = DEFAULT_FS_TAG
    queue_size: int = DEFAULT_FS_QUEUE_SIZE
    cache: str = ""
    cache_size_mib: int = 0


def _net_tuple(value: Any) -> tuple[NetInterface, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class VhostUserConfig:
    """Everything the plugin reads from the settings, validated."""

    store_enabled: bool = False
    reconnect_time: int = 0
    shared_fs: SharedFs | None = None
    net: tuple[NetInterface, ...] = attrs.field(default=(), converter=_net_tuple)


def read_config(settings: SandboxSettings) -> VhostUserConfig:
    """Read and check this plugin's keys; :class:`ConfigError` names the first bad key."""
    enabled = settings.option(STORE_ENABLED_KEY, False)
    if not isinstance(enabled, bool):
        raise ConfigError(
            f"must be true or false, got {enabled!r}", device=STORE_DEVICE, field=STORE_ENABLED_KEY
        )
    store_path = settings.option(STORE_PATH_KEY, "")
    if not isinstance(store_path, str) or (store_path and not store_path.startswith("/")):
        raise ConfigError(
            f"must be an absolute directory path, got {store_path!r}",
            device=STORE_DEVICE,
            field=STORE_PATH_KEY,
        )
    return VhostUserConfig(
        store_enabled=enabled,
        reconnect_time=_uint32_setting(settings, RECONNECT_KEY, "vhost-user"),
        shared_fs=_shared_fs(settings),
        net=_net_interfaces(settings),
    )


def parse_reconnect(value: object, *, device: str, field: str) -> int:
    """A reconnect timeout in seconds from a driver option (decimal string) or a setting (integer).

    Kata wraps ``-1`` to 4294967295 and turns garbage into 0 with a warning; both are errors here.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        number = int(value.strip())
    if number is None or not 0 <= number <= UINT32_MAX:
        raise DeviceError(
            f"must be a whole number of seconds between 0 and {UINT32_MAX}, got {value!r}",
            device=device,
            field=field,
        )
    return number


def check_socket_path(path: str, *, device: str, field: str, error: type[VmdevError] = DeviceError) -> str:
    """An absolute UNIX socket path that fits ``sun_path``; else ``error`` naming device and field."""
    if not path or not path.startswith("/"):
        raise error(f"must be an absolute socket path, got {path!r}", device=device, field=field)
    if "\0" in path or any(ord(ch) < 0x20 for ch in path):
        raise error(f"socket path {path!r} contains control characters", device=device, field=field)
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > MAX_SOCKET_PATH_BYTES:
        raise error(
            f"socket path {path} is {size} bytes long; UNIX sockets allow at most {MAX_SOCKET_PATH_BYTES}",
            device=device,
            field=field,
        )
    return path


def _uint32_setting(settings: SandboxSettings, key: str, device: str) -> int:
    value = settings.option(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        raise ConfigError(
            f"must be an integer between 0 and {UINT32_MAX}, got {value!r}", device=device, field=key
        )
    return value


def _shared_fs(settings: SandboxSettings) -> SharedFs | None:
    kind = settings.option(SHARED_FS_KEY)
    if kind is None:
        return None
    if kind not in SHARED_FS_KINDS:
        raise ConfigError(
            f"{kind!r} is not one of {', '.join(SHARED_FS_KINDS)}", device=FS_DEVICE, field=SHARED_FS_KEY
        )
    if kind not in VHOST_USER_FS_KINDS:
        return None
    socket = settings.option(FS_SOCKET_KEY)
    if not isinstance(socket, str) or not socket:
        raise ConfigError(
            f"shared_fs = {kind!r} needs the vhost-user socket of its daemon (virtiofsd or nydusd) "
            f"in {FS_SOCKET_KEY}",
            device=FS_DEVICE,
            field=FS_SOCKET_KEY,
        )
    check_socket_path(socket, device=FS_DEVICE, field=FS_SOCKET_KEY, error=ConfigError)
    return SharedFs(
        socket=socket,
        tag=_fs_tag(settings),
        queue_size=_fs_queue_size(settings),
        cache=_fs_cache(settings),
        cache_size_mib=_uint32_setting(settings, FS_CACHE_SIZE_KEY, FS_DEVICE),
    )


def _fs_tag(settings: SandboxSettings) -> str:
    tag = settings.option(FS_TAG_KEY, DEFAULT_FS_TAG)
    if not isinstance(tag, str) or not tag or any(ord(ch) < 0x20 for ch in tag):
        raise ConfigError(
            f"must be a non-empty printable string, got {tag!r}", device=FS_DEVICE, field=FS_TAG_KEY
        )
    if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        raise ConfigError(
            f"{tag!r} is longer than the {MAX_TAG_BYTES} bytes a virtio-fs tag can hold",
            device=FS_DEVICE,
            field=FS_TAG_KEY,
        )
    return tag


def _fs_queue_size(settings: SandboxSettings) -> int:
    size = settings.option(FS_QUEUE_SIZE_KEY, 0)
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"must be an integer, got {size!r}", device=FS_DEVICE, field=FS_QUEUE_SIZE_KEY)
    if size == 0:
        return DEFAULT_FS_QUEUE_SIZE
    if not 2 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
        raise ConfigError(
            f"must be a power of two between 2 and {MAX_QUEUE_SIZE} "
            f"(0 for {DEFAULT_FS_QUEUE_SIZE}), got {size}",
            device=FS_DEVICE,
            field=FS_QUEUE_SIZE_KEY,
        )
    return size


def _fs_cache(settings: SandboxSettings) -> str:
    cache = settings.option(FS_CACHE_KEY, "")
    if cache != "" and cache not in FS_CACHE_MODES:
        raise ConfigError(
            f"{cache!r} is not one of {', '.join(FS_CACHE_MODES)}", device=FS_DEVICE, field=FS_CACHE_KEY
        )
    return str(cache)


def _net_interfaces(settings: SandboxSettings) -> tuple[NetInterface, ...]:
    entries = settings.option(NET_KEY, [])
    if not isinstance(entries, list | tuple):
        raise ConfigError(
            "must be a list of tables with socket and mac (TOML: [[hypervisor.qemu.vhost_user_net]])",
            device=NET_DEVICE,
            field=NET_KEY,
        )
    interfaces = tuple(_net_interface(entry, f"{NET_KEY}[{index}]") for index, entry in enumerate(entries))
    _check_unique(interfaces)
    return interfaces


def _net_interface(entry: object, where: str) -> NetInterface:
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"must be a table with socket and mac, got {entry!r}", device=NET_DEVICE, field=where
        )
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
