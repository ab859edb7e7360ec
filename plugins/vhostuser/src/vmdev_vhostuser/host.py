"""The host side: the vhost-user store, where block requests with majors 241/242 name a socket.

Layout (Kata's ``getVhostUserHostPath``)::

    <store>/block/devices/<name>   a block device node whose rdev is the requested major:minor
    <store>/block/sockets/<name>   the vhost-user socket of that device

The store is configured by this plugin's settings (``enable_vhost_user_store``,
``vhost_user_store_path``, or ``--vhost-user-store DIR``), read into a :class:`VhostUserStore`
for each call; the core's ``HostContext`` no longer carries it.

Every stat goes through ``HostContext.stat``: that is Kata's ``GetVhostUserNodeStat`` (a package
variable its tests overwrite to fake device nodes); tests here pass ``HostContext(stat=...)``, e.g.
``FakeHost.fake_stat``, so they need no ``mknod`` and run as any user. The directory listing and
symlink resolution are real file-system operations on the store directory.

Better than Kata: only block device nodes match (not any file whose rdev happens to match);
dangling entries are skipped instead of aborting the lookup; two nodes with the same numbers are
an error instead of "the first one wins"; the socket must be a socket; and neither the node nor
the socket may resolve outside the store (``..`` in a symlink, a symlink out).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

import attrs

from vmdev.errors import ResolveError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.settings import SandboxSettings
from vmdev_vhostuser.device import VhostUserDeviceAttrs
from vmdev_vhostuser.kinds import STORE_MAJORS
from vmdev_vhostuser.settings import (
    DEFAULT_VHOST_USER_STORE_PATH,
    check_socket_path,
    store_enabled,
    store_path,
)

FIELD: Final = "major:minor"
#: host_facts keys
SOCKET_FACT: Final = "socket"
NODE_FACT: Final = "store node"


@attrs.frozen(kw_only=True)
class VhostUserStore:
    """Kata's ``enable_vhost_user_store`` and ``vhost_user_store_path``."""

    enabled: bool = False
    path: Path = attrs.field(default=Path(DEFAULT_VHOST_USER_STORE_PATH), converter=Path)

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> VhostUserStore:
        return cls(enabled=store_enabled(settings), path=Path(store_path(settings)))

    def claims(self, info: DeviceInfo) -> bool:
        """A block device with a vhost-user pseudo major while the store is enabled.

        With the store disabled, 241-254 are ordinary "local use" majors: left to others.
        """
        return self.enabled and info.dev_type == "b" and info.major in STORE_MAJORS

    def socket_for(self, info: DeviceInfo, host: HostContext) -> str:
        """The socket of the store node numbered like ``info``; :class:`ResolveError` otherwise."""
        devices = self.path / "block" / "devices"
        name = _node_name(info, host, devices)
        _check_inside(self.path, devices / name, info, "device node")
        socket = self.path / "block" / "sockets" / name
        _check_inside(self.path, socket, info, "socket")
        try:
            result = host.stat(str(socket))
        except FileNotFoundError:
            message = f"vhost-user store has no socket {socket} for device node {devices / name}"
            raise _error(info, message) from None
        except OSError as exc:
            raise _error(info, f"cannot stat vhost-user socket {socket}: {exc.strerror}") from None
        if not stat.S_ISSOCK(result.st_mode):
            raise _error(info, f"{socket} is not a UNIX socket (a vhost-user backend listens there)")
        return check_socket_path(str(socket), device=info.container_path, field=FIELD, error=ResolveError)


def _node_name(info: DeviceInfo, host: HostContext, devices: Path) -> str:
    try:
        names = sorted(os.listdir(devices))
    except FileNotFoundError:
        raise _error(info, f"the vhost-user store has no device directory {devices}") from None
    except OSError as exc:
        raise _error(info, f"cannot list the vhost-user store's {devices}: {exc.strerror}") from None
    matches = [name for name in names if _is_node(info, host, devices / name)]
    if not matches:
        raise _error(
            info, f"required device node ({info.major}:{info.minor}) doesn't exist under directory {devices}"
        )
    if len(matches) > 1:
        raise _error(
            info,
            f"device nodes {', '.join(matches)} under {devices} all have the numbers "
            f"{info.major}:{info.minor}; which socket is meant is ambiguous",
        )
    return matches[0]


def _is_node(info: DeviceInfo, host: HostContext, entry: Path) -> bool:
    try:
        result = host.stat(str(entry))
    except (FileNotFoundError, NotADirectoryError):
        return False  # a dangling symlink is no node; it must not hide the others
    except OSError as exc:
        raise _error(info, f"cannot stat {entry}: {exc.strerror}") from None
    return (
        stat.S_ISBLK(result.st_mode)
        and os.major(result.st_rdev) == info.major
        and os.minor(result.st_rdev) == info.minor
    )


def _check_inside(store: Path, path: Path, info: DeviceInfo, what: str) -> None:
    root = Path(os.path.realpath(store))
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise _error(info, f"the {what} {path} resolves to {real}, outside the vhost-user store {store}")


def _error(info: DeviceInfo, message: str) -> ResolveError:
    return ResolveError(message, device=info.container_path, field=FIELD)


# --- host facts ------------------------------------------------------------------------------------
def host_facts(device: VhostUserDeviceAttrs, host: HostContext) -> dict[str, str]:
    """What on the host decided a store device: its socket is a socket, and the store's node of
    the same name has the requested numbers (``block 241:0``).

    The device manager records these at build and reports a change later (the backend went
    away, the store entry was re-pointed). The sockets of the sandbox's fs and net devices are
    settings, and their daemons may start after planning: no facts for them.
    """
    if not device.from_store:
        return {}
    socket = Path(device.socket_path)
    node = socket.parent.parent / "devices" / socket.name
    return {SOCKET_FACT: _file_kind(host, socket), NODE_FACT: _file_kind(host, node)}


_KINDS: Final = (
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISBLK, "block"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISREG, "regular file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "fifo"),
)


def _file_kind(host: HostContext, path: Path) -> str:
    """``socket``, ``block 241:0``, ``regular file``, ..., ``missing`` or ``unreadable (...)``."""
    try:
        result = host.stat(str(path))
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    kind = next((name for test, name in _KINDS if test(result.st_mode)), "other")
    if kind in ("block", "char"):
        return f"{kind} {os.major(result.st_rdev)}:{os.minor(result.st_rdev)}"
    return kind
