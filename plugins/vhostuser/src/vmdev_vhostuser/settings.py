"""The settings keys this plugin owns: declared once, read typed with ``settings.value(key)``.

Every key is a :class:`vmdev.declared.Setting` (:func:`declared_settings`, registered by the
plugin's ``register_settings`` hook): the core parses and type-checks it once, before any hook
runs, and a wrong type is one ``ConfigError`` line naming the key (issue 9: ``vhost_user_store_path
= 5`` used to end in an internal ``TypeError``). The ``check`` of a key adds this family's rules
for its value; :func:`check_settings` keeps the one rule across keys (a vhost-user ``shared_fs``
needs ``virtio_fs_socket``). The functions below hand the typed values to the rest of the plugin,
so the command line and the Python API read the same values (issue 9: ``enable_vhost_user_store``
in a configuration file was ignored by ``vmdev.plan()``).

Kata's keys are kept where Kata has them (``enable_vhost_user_store``, ``vhost_user_store_path``,
``vhost_user_reconnect_timeout_sec``, ``shared_fs``, ``virtio_fs_cache``, ``virtio_fs_cache_size``,
``virtio_fs_queue_size``). Kata starts virtiofsd and finds vhost-user network sockets itself; vmdev
starts nothing, so the sockets are settings of their own: ``virtio_fs_socket`` (with
``virtio_fs_tag``) and the ``vhost_user_net`` list of ``{socket, mac, msix}`` tables. Where Kata
defaults ``shared_fs`` to ``virtio-fs`` (and starts the daemon), an unset ``shared_fs`` adds no
device here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from vmdev.declared import BOOLEAN, INTEGER, STRING, TABLES, Setting
from vmdev.errors import ConfigError, VmdevError
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
#: the command-line flag of the store (it also sets enable_vhost_user_store = true)
STORE_FLAG: Final = "--vhost-user-store"

#: Kata's defaultVhostUserStorePath
DEFAULT_VHOST_USER_STORE_PATH: Final = "/var/run/kata-containers/vhost-user/"
#: Kata's defaultVhostUserReconnectTimeOut (0: no reconnection)
DEFAULT_VHOST_USER_RECONNECT_TIMEOUT: Final = 0

# --- shared file systems (shared_fs), Kata's config.SharedFS values ----------------------------
VIRTIO_9P: Final = "virtio-9p"
VIRTIO_FS: Final = "virtio-fs"
VIRTIO_FS_NYDUS: Final = "virtio-fs-nydus"
NO_SHARED_FS: Final = "none"
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


# --- the declarations --------------------------------------------------------------------------
def declared_settings() -> list[Setting]:
    """Every key this plugin reads (``vmdev settings`` lists them)."""
    return [
        Setting(
            name=STORE_ENABLED_KEY, type=BOOLEAN, default=False, kata_key=STORE_ENABLED_KEY,
            description="resolve block devices with majors 241 (vhost-user-blk) and 242 (vhost-user-scsi) "
            "through the vhost-user store",
        ),
        Setting(
            name=STORE_PATH_KEY, type=STRING, default=DEFAULT_VHOST_USER_STORE_PATH, kata_key=STORE_PATH_KEY,
            check=_check_store_path, flag=STORE_FLAG, flag_sets={STORE_ENABLED_KEY: True},
            flag_help="Enable the vhost-user store in this directory",
            description="the vhost-user store: block/devices/<name> nodes and block/sockets/<name> sockets "
            "(absolute; empty for the default)",
        ),
        Setting(
            name=RECONNECT_KEY, type=INTEGER, default=DEFAULT_VHOST_USER_RECONNECT_TIMEOUT,
            minimum=0, maximum=UINT32_MAX, kata_key=RECONNECT_KEY,
            description="seconds between reconnection attempts of vhost-user-blk and vhost-user-net "
            "sockets (QEMU reconnect=); 0 = off",
        ),
        Setting(
            name=SHARED_FS_KEY, type=STRING, default="", choices=SHARED_FS_KINDS, kata_key=SHARED_FS_KEY,
            description="virtio-fs and virtio-fs-nydus add the vhost-user-fs device (with "
            f"{FS_SOCKET_KEY}); unset, virtio-9p and none add none",
        ),
        Setting(
            name=FS_SOCKET_KEY, type=STRING, default="", check=_check_fs_socket,
            description="the vhost-user socket of the running virtiofsd or nydusd (required with a "
            "virtio-fs shared_fs)",
        ),
        Setting(
            name=FS_TAG_KEY, type=STRING, default=DEFAULT_FS_TAG, check=_check_fs_tag,
            description=f"the virtio-fs mount tag (at most {MAX_TAG_BYTES} bytes)",
        ),
        Setting(
            name=FS_QUEUE_SIZE_KEY, type=INTEGER, default=0, check=_check_queue_size,
            kata_key=FS_QUEUE_SIZE_KEY,
            description=f"virtio-fs virtqueue size: a power of two from 2 to {MAX_QUEUE_SIZE}; "
            f"0 for {DEFAULT_FS_QUEUE_SIZE}",
        ),
        Setting(
            name=FS_CACHE_KEY, type=STRING, default="", check=_check_fs_cache, kata_key=FS_CACHE_KEY,
            description=f"the daemon's cache mode ({', '.join(FS_CACHE_MODES)}); recorded in the plan "
            "for whoever starts the daemon, not a QEMU option",
        ),
        Setting(
            name=FS_CACHE_SIZE_KEY, type=INTEGER, default=0, minimum=0, maximum=UINT32_MAX,
            kata_key=FS_CACHE_SIZE_KEY,
            description="DAX window in MiB; any non-zero value is refused by QEMU and Cloud "
            "Hypervisor rendering (neither has one upstream)",
        ),
        Setting(
            name=NET_KEY, type=TABLES, default=(), check=_check_net,
            description="vhost-user network interfaces: tables of socket (absolute, required), mac "
            "(unicast, required) and msix (default false)",
        ),
    ]


def check_settings(settings: SandboxSettings) -> None:
    """The rule across keys: a vhost-user ``shared_fs`` needs its daemon's socket."""
    shared_fs(settings)


# --- the typed values --------------------------------------------------------------------------
def store_enabled(settings: SandboxSettings) -> bool:
    return bool(settings.value(STORE_ENABLED_KEY))


def store_path(settings: SandboxSettings) -> str:
    """The store directory; an empty value means Kata's default, as in Kata."""
    return str(settings.value(STORE_PATH_KEY)) or DEFAULT_VHOST_USER_STORE_PATH


def reconnect_timeout(settings: SandboxSettings) -> int:
    return int(settings.value(RECONNECT_KEY))


def shared_fs(settings: SandboxSettings) -> SharedFs | None:
    """The vhost-user file system share, or None when ``shared_fs`` asks for none."""
    kind = settings.value(SHARED_FS_KEY)
    if kind not in VHOST_USER_FS_KINDS:
        return None
    socket = str(settings.value(FS_SOCKET_KEY))
    if not socket:
        raise ConfigError(
            f"shared_fs = {kind!r} needs the vhost-user socket of its daemon (virtiofsd or nydusd) "
            f"in {FS_SOCKET_KEY}",
            device=FS_DEVICE,
            field=FS_SOCKET_KEY,
        )
    size = int(settings.value(FS_QUEUE_SIZE_KEY))
    return SharedFs(
        socket=socket,
        tag=str(settings.value(FS_TAG_KEY)),
        queue_size=size or DEFAULT_FS_QUEUE_SIZE,
        cache=str(settings.value(FS_CACHE_KEY)),
        cache_size_mib=int(settings.value(FS_CACHE_SIZE_KEY)),
    )


def net_interfaces(settings: SandboxSettings) -> tuple[NetInterface, ...]:
    return _net_interfaces(settings.value(NET_KEY))


# --- sockets -----------------------------------------------------------------------------------
def socket_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a UNIX socket path (not absolute, control characters, longer than
    ``sun_path``), or None."""
    if not path or not path.startswith("/"):
        return f"must be an absolute socket path, got {path!r}"
    if "\0" in path or any(ord(ch) < 0x20 for ch in path):
        return f"socket path {path!r} contains control characters"
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > MAX_SOCKET_PATH_BYTES:
        return f"socket path {path} is {size} bytes long; UNIX sockets allow at most {MAX_SOCKET_PATH_BYTES}"
    return None


def check_socket_path(path: str, *, device: str, field: str, error: type[VmdevError]) -> str:
    """``path`` if it can be a UNIX socket path; else ``error`` naming device and field."""
    problem = socket_path_problem(path)
    if problem is not None:
        raise error(problem, device=device, field=field)
    return path


# --- the checks of single keys (ValueError: the core names the key) ----------------------------
def _check_store_path(value: str) -> None:
    if value and not value.startswith("/"):
        raise ValueError(f"must be an absolute directory path, got {value!r}")


def _check_fs_socket(value: str) -> None:
    problem = socket_path_problem(value) if value else None
    if problem is not None:
        raise ValueError(problem)


def _check_fs_tag(tag: str) -> None:
    if not tag or any(ord(ch) < 0x20 for ch in tag):
        raise ValueError(f"must be a non-empty printable string, got {tag!r}")
    if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        raise ValueError(f"{tag!r} is longer than the {MAX_TAG_BYTES} bytes a virtio-fs tag can hold")


def _check_queue_size(size: int) -> None:
    if size != 0 and (not 2 <= size <= MAX_QUEUE_SIZE or size & (size - 1)):
        raise ValueError(
            f"must be a power of two between 2 and {MAX_QUEUE_SIZE} "
            f"(0 for {DEFAULT_FS_QUEUE_SIZE}), got {size}"
        )


def _check_fs_cache(cache: str) -> None:
    if cache and cache not in FS_CACHE_MODES:
        raise ValueError(f"{cache!r} is not one of {', '.join(FS_CACHE_MODES)}")


def _check_net(entries: tuple[Mapping[str, Any], ...]) -> None:
    _net_interfaces(entries)


# --- vhost_user_net: errors name the entry and its key (vhost_user_net[1].mac) ----------------
def _net_interfaces(entries: tuple[Mapping[str, Any], ...]) -> tuple[NetInterface, ...]:
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
