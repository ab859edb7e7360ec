"""Backend daemons (virtiofsd, qemu-storage-daemon) that a guest's vhost-user devices connect to.

Each one runs for one test: start it before booting the guest, stop it afterwards (or use it as a
context manager); it is killed by PID. virtiofsd serves a single QEMU connection, then exits.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .errors import GuestBootError, GuestTimeoutError

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # QEMU 7.2's C virtiofsd (package qemu-system-common)
STORAGE_DAEMON = "qemu-storage-daemon"


def virtiofsd_command(socket: Path, source: Path, *, cache: str = "none") -> list[str]:
    """virtiofsd sharing ``source`` on ``socket`` (guest: vhost-user-fs-pci + qh.virtiofs=TAG)."""
    return [VIRTIOFSD, f"--socket-path={socket}", "-o", f"source={source}", "-o", f"cache={cache}"]


def vhost_user_blk_command(
    socket: Path, image: Path, *, writable: bool = True, logical_block_size: int = 512
) -> list[str]:
    """qemu-storage-daemon exporting raw ``image`` as vhost-user-blk on ``socket``."""
    export = (
        f"type=vhost-user-blk,id=exp0,node-name=raw0,addr.type=unix,addr.path={socket},"
        f"writable={'on' if writable else 'off'},logical-block-size={logical_block_size}"
    )
    return [
        STORAGE_DAEMON,
        "--blockdev",
        f"driver=file,node-name=file0,filename={image},read-only={'off' if writable else 'on'}",
        "--blockdev",
        f"driver=raw,node-name=raw0,file=file0,read-only={'off' if writable else 'on'}",
        "--export",
        export,
    ]


class Daemon:
    """A background process; ``ready`` (a socket path) must appear within ``timeout``."""

    def __init__(
        self, argv: Sequence[str], *, ready: Path | None = None, timeout: float = 15.0
    ) -> None:
        self.argv = list(argv)
        self.log = Path(f"{ready}.log") if ready is not None else None
        out = open(self.log, "wb") if self.log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        except OSError as exc:
            raise GuestBootError(f"cannot start {self.argv[0]}: {exc}") from exc
        finally:
            if not isinstance(out, int):
                out.close()
        if ready is not None:
            self._wait_ready(ready, timeout)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            if self.log is not None:
                return self.log.read_text(errors="replace")
        return ""

    def stop(self, timeout: float = 5.0) -> int:
        """Terminate (then kill) the process by its PID; its exit code."""
        return terminate(self.proc, timeout)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, socket: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not socket.exists():
            exited = self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                self.stop()
                kind = GuestBootError if exited else GuestTimeoutError
                raise kind(
                    f"{self.argv[0]} did not create {socket}: {self.log_text().strip()}",
                    rc=self.proc.returncode,
                )
            time.sleep(0.02)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM the process (by its PID), SIGKILL it after ``timeout`` s; reap it; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
