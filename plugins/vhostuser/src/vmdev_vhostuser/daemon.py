"""The virtiofsd a virtio-fs share needs, as the plan's ``daemons`` section (``finish_plan``).

Kata starts virtiofsd itself for ``shared_fs = "virtio-fs"`` (virtcontainers/virtiofsd.go):
``virtio_fs_daemon --syslog --cache=<virtio_fs_cache> --shared-dir=<share path> --fd=3
<virtio_fs_extra_args...> [--xattr]`` on a listening socket it opened itself
(``/run/vc/vm/<sandbox id>/vhost-fs.sock`` for QEMU, ``virtiofsd.sock`` for Cloud Hypervisor),
``--xattr`` when ``disable_guest_selinux = false``. vmdev plans that daemon instead of starting
it: each entry of the plan's ``daemons`` list is ``{id, program, args, socket, for, directories}``
(``for`` is the id of the device that connects to it; ``directories`` must exist before it
starts, as Kata creates them). Start ``[program, *args]`` exactly as given, wait for ``socket``,
then start the hypervisor.

Where the command line differs from Kata's, and why:

* The syntax is QEMU's C virtiofsd's (Debian 12's ``/usr/lib/qemu/virtiofsd``): ``-o source=DIR``
  and ``-o cache=MODE`` instead of the Rust daemon's ``--shared-dir``/``--cache``. Kata's Rust
  virtiofsd still accepts this legacy form (deprecated, with a warning), so one plan serves
  both. Kata's ``never`` is spelled ``none`` (the C spelling, which the Rust one maps to
  never); ``metadata`` exists in the Rust daemon only.
* ``--socket-path=SOCKET`` instead of ``--fd=3``: the daemon creates the socket (as runtime-rs
  does), so whoever starts it needs no listening socket to pass.
* ``virtio_fs_extra_args`` go on as they are. Kata's Go files say ``--announce-submounts``,
  which only the Rust daemon knows; the C one needs ``-o announce_submounts`` (the spelling of
  Kata's runtime-rs files, which both accept).
* ``--xattr`` is ``-o xattr``, added for every hypervisor (Kata's Go runtime adds it for QEMU
  only; runtime-rs for all).
* No ``--syslog``: the daemon logs to its stderr, which whoever starts it keeps. QEMU 7.2's C
  virtiofsd with ``--syslog`` on a host without ``/dev/log`` is killed by its own seccomp filter
  (SIGSYS on socket(2), when syslog(3) retries the connection after the sandbox is up) and QEMU
  fails with "vhost_backend_init failed: Protocol error" (seen on this project's test machine).
  Add ``--syslog`` to ``virtio_fs_extra_args`` for Kata's behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from vmdev_vhostuser.config import FsDaemon, SharedFs
from vmdev_vhostuser.device import VHOST_USER_FS, VhostUserDeviceAttrs

#: the plan section this module fills
DAEMONS_SECTION: Final = "daemons"
VIRTIOFSD_ID: Final = "virtiofsd"
#: Kata's cache modes in the C daemon's spelling (never is none there)
C_CACHE_MODES: Final = {"never": "none"}


@attrs.frozen(kw_only=True)
class PlannedDaemon:
    """One daemon the plan needs started before the hypervisor."""

    id: str
    program: str
    args: tuple[str, ...]
    socket: str
    #: the id of the device that connects to it
    for_device: str
    directories: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "program": self.program,
            "args": list(self.args),
            "socket": self.socket,
            "for": self.for_device,
            "directories": list(self.directories),
        }


def virtiofsd_args(daemon: FsDaemon, socket: str) -> list[str]:
    """virtiofsd's arguments, in Kata's order, in the syntax both daemons accept (see above)."""
    args = [
        "-o",
        f"cache={C_CACHE_MODES.get(daemon.cache, daemon.cache)}",
        "-o",
        f"source={daemon.shared_dir}",
        f"--socket-path={socket}",
        *daemon.extra_args,
    ]
    return [*args, "-o", "xattr"] if daemon.xattr else args


def virtiofsd(share: SharedFs, device_id: str) -> PlannedDaemon | None:
    """The daemon of ``share`` (None when its daemon is someone else's: ``virtio_fs_socket``)."""
    daemon = share.daemon
    if daemon is None:
        return None
    return PlannedDaemon(
        id=VIRTIOFSD_ID,
        program=daemon.program,
        args=tuple(virtiofsd_args(daemon, share.socket)),
        socket=share.socket,
        for_device=device_id,
        directories=(daemon.runtime_dir, daemon.shared_dir),
    )


def daemons_section(share: SharedFs | None, devices: Sequence[object]) -> dict[str, Any] | None:
    """``{"daemons": [...]}`` for the plan whose devices are ``devices``, or None.

    The daemon is planned for the share's device on its socket; a plan without that device (a
    backend that refused it would have failed already) gets no daemon.
    """
    if share is None or share.daemon is None:
        return None
    for device in devices:
        if (
            isinstance(device, VhostUserDeviceAttrs)
            and device.type == VHOST_USER_FS
            and device.socket_path == share.socket
        ):
            planned = virtiofsd(share, device.id)
            return {DAEMONS_SECTION: [planned.to_json()]} if planned is not None else None
    return None
