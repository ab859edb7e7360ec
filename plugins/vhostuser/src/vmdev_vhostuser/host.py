"""The vhost-user store: block device requests with majors 241/242 name a socket.

Layout (Kata's ``getVhostUserHostPath``)::

    <store>/block/devices/<name>   a block device node whose rdev is the requested major:minor
    <store>/block/sockets/<name>   the vhost-user socket of that device

Every stat goes through ``host.stat`` (Kata's ``GetVhostUserNodeStat``), so tests can fake nodes.
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

from vmdev.errors import ResolveError
from vmdev.host import HostContext
from vmdev.models import (
    VHOST_USER_BLK,
    VHOST_USER_BLK_MAJOR,
    VHOST_USER_SCSI,
    VHOST_USER_SCSI_MAJOR,
    DeviceInfo,
)
from vmdev_vhostuser.settings import check_socket_path

#: pseudo major -> vhost-user device type
STORE_MAJORS: Final = {VHOST_USER_BLK_MAJOR: VHOST_USER_BLK, VHOST_USER_SCSI_MAJOR: VHOST_USER_SCSI}
FIELD: Final = "major:minor"


def is_store_request(info: DeviceInfo, host: HostContext) -> bool:
    """A block device with a vhost-user pseudo major while the store is enabled."""
    return host.vhost_user_store.enabled and info.dev_type == "b" and info.major in STORE_MAJORS


def store_socket(info: DeviceInfo, host: HostContext) -> str:
    """The socket of the store node numbered like ``info``; :class:`ResolveError` otherwise."""
    store = host.vhost_user_store.path
    devices = store / "block" / "devices"
    name = _node_name(info, host, devices)
    _check_inside(store, devices / name, info, "device node")
    socket = store / "block" / "sockets" / name
    _check_inside(store, socket, info, "socket")
    try:
        result = host.stat(str(socket))
    except FileNotFoundError:
        raise ResolveError(
            f"vhost-user store has no socket {socket} for device node {devices / name}",
            device=info.container_path,
            field=FIELD,
        ) from None
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
