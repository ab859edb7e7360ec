"""The settings keys this plugin owns: declared once, read typed with ``settings.value(key)``.

Every key is a :class:`vmdev.declared.Setting` (:func:`declared_settings`, registered by the
plugin's ``register_settings`` hook): the core parses and type-checks it once, before any hook
runs, and a wrong type is one ``ConfigError`` line naming the key (issue 9: ``vhost_user_store_path
= 5`` used to end in an internal ``TypeError``). The ``check`` of a key adds this family's rules
for its value; :func:`check_settings` keeps the rules across keys (a vhost-user ``shared_fs`` needs
a daemon to start or the socket of a running one). The functions below hand the typed values to
the rest of the plugin, so the command line and the Python API read the same values; the typed
models of the share and the interfaces (``SharedFs``, ``NinePShare``, ``NetInterface``) are in
:mod:`vmdev_vhostuser.config`. This module defines no class: the plugin imports it on every run to
register the keys (issue 13, cold start).

Kata's keys are kept where Kata has them (``enable_vhost_user_store``, ``vhost_user_store_path``,
``vhost_user_reconnect_timeout_sec``, ``shared_fs``, ``virtio_fs_daemon``,
``virtio_fs_extra_args``, ``virtio_fs_cache``, ``virtio_fs_cache_size``, ``virtio_fs_queue_size``,
``msize_9p``, ``disable_guest_selinux``). The shared file system is this plugin's as a whole
(issue 10): ``virtio-fs`` plans the virtiofsd Kata would start (the plan's ``daemons`` section,
:mod:`vmdev_vhostuser.daemon`) unless ``virtio_fs_socket`` names the socket of a daemon someone
else started; ``virtio-9p`` is QEMU's own 9p server. Kata derives the daemon's socket and the
shared directory from the sandbox id (``/run/vc/vm/<id>/vhost-fs.sock``,
``/run/kata-containers/shared/sandboxes/<id>/shared``); vmdev has no sandbox id, so both
directories are settings of their own (``sandbox_runtime_dir``, ``shared_dir``) whose defaults
follow Kata's layout with ``vmdev`` in place of the id. Where Kata defaults an unset ``shared_fs``
to ``virtio-fs``, an unset ``shared_fs`` adds no share here (every Kata file sets it).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any, Final

from vmdev.declared import BOOLEAN, INTEGER, STRING, STRINGS, TABLES, Setting
from vmdev.errors import VmdevError
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
FS_DAEMON_KEY: Final = "virtio_fs_daemon"
FS_EXTRA_ARGS_KEY: Final = "virtio_fs_extra_args"
GUEST_SELINUX_KEY: Final = "disable_guest_selinux"
MSIZE_KEY: Final = "msize_9p"
RUNTIME_DIR_KEY: Final = "sandbox_runtime_dir"
SHARED_DIR_KEY: Final = "shared_dir"
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
#: runtime-rs' Dragonball value (its VMM serves virtio-fs in-process); recognised to be refused
INLINE_VIRTIO_FS: Final = "inline-virtio-fs"
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
#: Kata's cache mode when the file sets none: katautils' defaultVirtioFSCacheMode for QEMU (and
#: Firecracker); Cloud Hypervisor passes "" on and virtiofsd.valid() makes it "auto"
DEFAULT_FS_CACHE: Final = "never"
DEFAULT_FS_CACHE_BY_HYPERVISOR: Final = {"cloud-hypervisor": "auto"}
#: Kata's defaultMsize9p; the guest kernel refuses an msize below 4096
DEFAULT_MSIZE_9P: Final = 8192
MIN_MSIZE_9P: Final = 4096
#: Kata's VMStorePath (/run/vc/vm) and sandbox share path, with "vmdev" for the sandbox id
DEFAULT_RUNTIME_DIR: Final = "/run/vc/vm/vmdev"
DEFAULT_SHARED_DIR: Final = "/run/kata-containers/shared/sandboxes/vmdev/shared"
#: the daemon's socket in the sandbox runtime directory, as Kata names it per hypervisor
#: (qemu.go vhostFSSocket, clh.go virtioFsSocket)
FS_SOCKET_NAME: Final = "vhost-fs.sock"
FS_SOCKET_NAME_BY_HYPERVISOR: Final = {"cloud-hypervisor": "virtiofsd.sock"}
#: sun_path holds 108 bytes including the terminating NUL
MAX_SOCKET_PATH_BYTES: Final = 107
UINT32_MAX: Final = 0xFFFFFFFF
NET_ENTRY_KEYS: Final = ("socket", "mac", "msix")

#: where errors about the sandbox-level devices point
FS_DEVICE: Final = "virtio-fs"
NINEP_DEVICE: Final = "virtio-9p"
NET_DEVICE: Final = "vhost-user-net"




# --- the declarations --------------------------------------------------------------------------
def declared_settings() -> list[Setting]:
    """Every key this plugin reads (``vmdev settings`` lists them)."""
    return [*_store_and_net_settings(), *_shared_fs_settings(), *_daemon_settings()]


def _store_and_net_settings() -> list[Setting]:
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
            name=NET_KEY, type=TABLES, default=(), check=_check_net,
            description="vhost-user network interfaces: tables of socket (absolute, required), mac "
            "(unicast, required) and msix (default false)",
        ),
    ]


def _shared_fs_settings() -> list[Setting]:
    return [
        Setting(
            name=SHARED_FS_KEY, type=STRING, default="", choices=(*SHARED_FS_KINDS, INLINE_VIRTIO_FS),
            kata_key=SHARED_FS_KEY, check=_check_shared_fs, flag="--shared-fs", flag_metavar="KIND",
            description="the sandbox's shared file system: virtio-fs (virtiofsd, planned in the plan's "
            "daemons unless virtio_fs_socket names a running one), virtio-fs-nydus (with "
            "virtio_fs_socket), virtio-9p (QEMU's 9p server), none or unset: no share",
        ),
        Setting(
            name=FS_SOCKET_KEY, type=STRING, default="", check=_check_fs_socket,
            description="the vhost-user socket of a virtiofsd or nydusd someone else started; set, "
            "vmdev plans no daemon",
        ),
        Setting(
            name=FS_TAG_KEY, type=STRING, default=DEFAULT_FS_TAG, check=_check_fs_tag,
            description=f"the share's mount tag, virtio-fs and virtio-9p (at most {MAX_TAG_BYTES} bytes)",
        ),
        Setting(
            name=FS_QUEUE_SIZE_KEY, type=INTEGER, default=0, check=_check_queue_size,
            kata_key=FS_QUEUE_SIZE_KEY,
            description=f"virtio-fs virtqueue size: a power of two from 2 to {MAX_QUEUE_SIZE}; "
            f"0 for {DEFAULT_FS_QUEUE_SIZE}",
        ),
        Setting(
            name=FS_CACHE_KEY, type=STRING, default="", check=_check_fs_cache, kata_key=FS_CACHE_KEY,
            description=f"the daemon's cache mode ({', '.join(FS_CACHE_MODES)}); empty for Kata's "
            "default (never; auto on Cloud Hypervisor)",
        ),
        Setting(
            name=FS_CACHE_SIZE_KEY, type=INTEGER, default=0, minimum=0, maximum=UINT32_MAX,
            kata_key=FS_CACHE_SIZE_KEY,
            description="DAX window in MiB; any non-zero value is refused by QEMU and Cloud "
            "Hypervisor rendering (neither has one upstream)",
        ),
        Setting(
            name=MSIZE_KEY, type=INTEGER, default=DEFAULT_MSIZE_9P, minimum=0, maximum=UINT32_MAX,
            kata_key=MSIZE_KEY, check=_check_msize,
            description=f"the guest's 9p msize in bytes (a mount option, not a QEMU one); 0 for "
            f"{DEFAULT_MSIZE_9P}",
        ),
    ]


def _daemon_settings() -> list[Setting]:
    return [
        Setting(
            name=FS_DAEMON_KEY, type=STRING, default="", kata_key=FS_DAEMON_KEY,
            check=_check_program, flag="--virtio-fs-daemon", flag_metavar="PROGRAM",
            description="the virtiofsd vmdev plans for shared_fs = virtio-fs (absolute path)",
        ),
        Setting(
            name=FS_EXTRA_ARGS_KEY, type=STRINGS, default=(), kata_key=FS_EXTRA_ARGS_KEY,
            check=_check_extra_args, flag="--virtio-fs-extra-arg", flag_metavar="ARG",
            description="arguments appended to the daemon's command line as they are",
        ),
        Setting(
            name=GUEST_SELINUX_KEY, type=BOOLEAN, default=True, kata_key=GUEST_SELINUX_KEY,
            description="false gives the daemon extended attributes (-o xattr), as Kata does for a "
            "guest with SELinux",
        ),
        Setting(
            name=RUNTIME_DIR_KEY, type=STRING, default=DEFAULT_RUNTIME_DIR, check=_check_directory,
            flag="--runtime-dir", flag_metavar="DIR",
            description="the sandbox's runtime directory (Kata's /run/vc/vm/<sandbox id>): the "
            "planned daemon's socket is vhost-fs.sock in it (virtiofsd.sock for Cloud Hypervisor)",
        ),
        Setting(
            name=SHARED_DIR_KEY, type=STRING, default=DEFAULT_SHARED_DIR, check=_check_directory,
            flag="--shared-dir", flag_metavar="DIR",
            description="the host directory shared with the guest by the planned virtiofsd or by "
            "virtio-9p (Kata's /run/kata-containers/shared/sandboxes/<sandbox id>/shared)",
        ),
    ]


def check_settings(settings: SandboxSettings) -> None:
    """The rules across keys: a vhost-user ``shared_fs`` has a daemon (one to start, or the socket
    of one running), whose socket fits ``sun_path``; 9p has its directory. Without a share there
    is nothing to check, and :mod:`vmdev_vhostuser.config` is not imported."""
    if wants_share(settings):
        from vmdev_vhostuser.config import ninep_share, shared_fs

        shared_fs(settings)
        ninep_share(settings)


# --- the typed values --------------------------------------------------------------------------
def store_enabled(settings: SandboxSettings) -> bool:
    return bool(settings.value(STORE_ENABLED_KEY))


def store_path(settings: SandboxSettings) -> str:
    """The store directory; an empty value means Kata's default, as in Kata."""
    return str(settings.value(STORE_PATH_KEY)) or DEFAULT_VHOST_USER_STORE_PATH


def reconnect_timeout(settings: SandboxSettings) -> int:
    return int(settings.value(RECONNECT_KEY))


def wants_share(settings: SandboxSettings) -> bool:
    """``shared_fs`` asks for a share (virtio-fs, virtio-fs-nydus or virtio-9p)."""
    return settings.value(SHARED_FS_KEY) in (*VHOST_USER_FS_KINDS, VIRTIO_9P)


def wants_net(settings: SandboxSettings) -> bool:
    """``vhost_user_net`` lists at least one interface."""
    return bool(settings.value(NET_KEY))


def daemon_socket(runtime_dir: str, hypervisor: str) -> str:
    """Kata's socket of the share's daemon in the sandbox runtime directory."""
    return posixpath.join(runtime_dir, FS_SOCKET_NAME_BY_HYPERVISOR.get(hypervisor, FS_SOCKET_NAME))


def effective_cache(cache: str, hypervisor: str) -> str:
    """``virtio_fs_cache``, or Kata's default for the hypervisor when it is empty."""
    return cache or DEFAULT_FS_CACHE_BY_HYPERVISOR.get(hypervisor, DEFAULT_FS_CACHE)


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


def _check_shared_fs(kind: str) -> None:
    if kind == INLINE_VIRTIO_FS:
        raise ValueError(
            f"{kind!r} is Dragonball's in-VMM virtio-fs (runtime-rs); vmdev has no Dragonball backend: "
            f"use {VIRTIO_FS!r} with a virtiofsd"
        )


def _check_program(value: str) -> None:
    if value and (not value.startswith("/") or any(ord(ch) < 0x20 for ch in value)):
        raise ValueError(f"must be an absolute path to a program, got {value!r}")


def _check_extra_args(args: tuple[str, ...]) -> None:
    for index, arg in enumerate(args):
        if "\0" in arg:
            raise ValueError(f"item {index} contains a NUL character")


def _check_directory(value: str) -> None:
    if not value.startswith("/") or any(ord(ch) < 0x20 for ch in value):
        raise ValueError(f"must be an absolute directory path, got {value!r}")


def _check_msize(msize: int) -> None:
    if 0 < msize < MIN_MSIZE_9P:
        raise ValueError(
            f"must be at least {MIN_MSIZE_9P} (the guest's 9p refuses less), or 0 for {DEFAULT_MSIZE_9P}; "
            f"got {msize}"
        )


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
    if entries:  # the interfaces' model is imported only when there are some
        from vmdev_vhostuser.config import interfaces_from

        interfaces_from(entries)
