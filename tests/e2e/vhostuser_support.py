"""Real vhost-user backends for the vhost-user plugin's guest tests, started and stopped by PID.

* :func:`storage_daemon` - ``qemu-storage-daemon --export type=vhost-user-blk`` (qemu-system-common);
* :func:`virtiofsd` - ``/usr/lib/qemu/virtiofsd`` (qemu-system-common); one-shot per QEMU;
* :func:`dpdk_testpmd` - DPDK's ``dpdk-testpmd`` with a ``net_vhost`` port (Debian package dpdk-dev);
* :class:`HandshakeBackend` - a vhost-user backend that only answers the control handshake, for
  ``-S`` dry runs of devices Debian has no backend for (vhost-user-scsi).

Missing programs raise :class:`BackendMissing` with the apt command that installs them: tests
fail with it, they never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vmdev_rig.daemon import terminate

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
QSD = "qemu-storage-daemon"
TESTPMD = "dpdk-testpmd"
APT = "apt-get install --no-install-recommends"


class BackendMissing(RuntimeError):
    """A backend program is not installed (the message names the package)."""


class Backend:
    """A started backend process; :meth:`stop` ends it by its PID (idempotent)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, socket_path: Path) -> None:
        self.proc = proc
        self.log = log
        self.socket = socket_path

    def output(self) -> str:
        try:
            return self.log.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        terminate(self.proc, timeout)
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def wait_output(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(0.1)
        return text in self.output()


def _program(name: str | Path, package: str) -> str:
    found = (
        shutil.which(str(name))
        if not Path(name).is_absolute()
        else (str(name) if Path(name).exists() else None)
    )
    if found is None:
        raise BackendMissing(f"{name} is not installed: run `{APT} {package}` (as root)")
    return found


def _start(
    argv: Sequence[str], log: Path, socket_path: Path, *, stdin: bool = False, timeout: float = 30.0
) -> Backend:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            start_new_session=True,
        )
    backend = Backend(proc, log, socket_path)
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            backend.stop()
            raise RuntimeError(
                f"{argv[0]} did not create {socket_path} (rc={proc.returncode}):\n{backend.output()[-3000:]}"
            )
        time.sleep(0.05)
    return backend


@contextlib.contextmanager
def storage_daemon(image: Path, socket_path: Path, *, num_queues: int = 1) -> Iterator[Backend]:
    """Export ``image`` as a vhost-user-blk device on ``socket_path`` (the daemon survives QEMUs)."""
    qsd = _program(QSD, "qemu-system-common")
    export = {
        "type": "vhost-user-blk",
        "id": "exp0",
        "node-name": "raw0",
        "addr": {"type": "unix", "path": str(socket_path)},
        "writable": True,
        "num-queues": num_queues,
    }
    argv = [
        qsd,
        "--blockdev",
        json.dumps({"driver": "file", "node-name": "file0", "filename": str(image)}),
        "--blockdev",
        json.dumps({"driver": "raw", "node-name": "raw0", "file": "file0"}),
        "--export",
        json.dumps(export),
    ]
    backend = _start(argv, socket_path.parent / f"{socket_path.name}.qsd.log", socket_path)
    try:
        yield backend
    finally:
        backend.stop()


@contextlib.contextmanager
def virtiofsd(source: Path, socket_path: Path) -> Iterator[Backend]:
    """Serve ``source`` on ``socket_path``; it exits when its QEMU disconnects (one-shot)."""
    daemon = _program(VIRTIOFSD, "qemu-system-common")
    argv = [daemon, f"--socket-path={socket_path}", "-o", f"source={source}", "-o", "cache=none"]
    backend = _start(argv, socket_path.parent / "virtiofsd.log", socket_path)
    try:
        yield backend
    finally:
        backend.stop()


@contextlib.contextmanager
def dpdk_testpmd(socket_path: Path) -> Iterator[Backend]:
    """DPDK testpmd serving one ``net_vhost`` port on ``socket_path`` (no hugepages, no PCI).

    Its stdin stays open (testpmd exits on EOF); forwarding is not started, so no core spins.
    """
    program = _program(TESTPMD, "dpdk-dev")
    prefix = f"vmdev{os.getpid()}-{socket_path.parent.name}"
    argv = [
        program,
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix",
        prefix,
        "-l",
        "0-1",
        "--vdev",
        f"net_vhost0,iface={socket_path},queues=1",
        "--",
        "--total-num-mbufs=2048",
        "--stats-period=0",
    ]
    backend = _start(argv, socket_path.parent / "testpmd.log", socket_path, stdin=True)
    try:
        yield backend
    finally:
        backend.stop()
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


@contextlib.contextmanager
def short_dir(prefix: str = "vhu-") -> Iterator[Path]:
    """A directory with a short path (UNIX socket paths hold at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_store_node(store: Path, name: str, major: int, minor: int) -> Path:
    """``<store>/block/devices/<name>``: a block node numbered major:minor (mknod; needs root)."""
    devices = store / "block" / "devices"
    devices.mkdir(parents=True, exist_ok=True)
    (store / "block" / "sockets").mkdir(parents=True, exist_ok=True)
    node = devices / name
    os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))
    return store / "block" / "sockets" / name


def vmdev_plan(workdir: Path, devices: list[dict[str, Any]], *extra: str, config: str = "") -> dict[str, Any]:
    """Run the real CLI ``vmdev plan --format json`` on an OCI config.json written here."""
    spec = workdir / "config.json"
    spec.write_text(json.dumps({"linux": {"devices": devices}}))
    argv = [sys.executable, "-m", "vmdev.cli", "plan", "--format", "json", "--memory", "256", *extra]
    if config:
        settings = workdir / "vmdev.toml"
        settings.write_text(config)
        argv += ["--config", str(settings)]
    env = {**os.environ, "VMDEV_PLUGINS": "vmdev-vhostuser"}
    proc = subprocess.run([*argv, str(spec)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"vmdev plan failed (rc={proc.returncode}): {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# --- a handshake-only vhost-user backend ---------------------------------------------------------

_GET_FEATURES = 1
_GET_VRING_BASE = 11
_GET_PROTOCOL_FEATURES = 15
_GET_QUEUE_NUM = 17
_REPLY_FLAG = 0x4 | 0x1  # reply bit, version 1
_VIRTIO_F_VERSION_1 = 1 << 32
_VHOST_USER_F_PROTOCOL_FEATURES = 1 << 30


class HandshakeBackend:
    """Listens on a UNIX socket and answers vhost-user control messages, nothing more.

    It offers VIRTIO_F_VERSION_1 and the protocol-features bit with no protocol features, which
    is what QEMU needs to realize a vhost-user device. It serves no I/O, so use it for ``-S`` dry
    runs only; :attr:`requests` records the message numbers QEMU sent.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.requests: list[int] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(socket_path))
        self._server.listen(4)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HandshakeBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                header = _recv_exact(conn, 12)
            except TimeoutError:
                continue
            if header is None:
                return
            request, _flags, size = struct.unpack("<III", header)
            payload = _recv_exact(conn, size) if size else b""
            if payload is None:
                return
            self.requests.append(request)
            reply = self._answer(request, payload)
            if reply is not None:
                conn.sendall(struct.pack("<III", request, _REPLY_FLAG, len(reply)) + reply)

    @staticmethod
    def _answer(request: int, payload: bytes) -> bytes | None:
        if request == _GET_FEATURES:
            return struct.pack("<Q", _VIRTIO_F_VERSION_1 | _VHOST_USER_F_PROTOCOL_FEATURES)
        if request in (_GET_PROTOCOL_FEATURES,):
            return struct.pack("<Q", 0)
        if request == _GET_QUEUE_NUM:
            return struct.pack("<Q", 8)
        if request == _GET_VRING_BASE:
            return payload[:4] + struct.pack("<I", 0)
        return None


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk, ancillary, _, _ = conn.recvmsg(size - len(data), socket.CMSG_SPACE(64))
        except TimeoutError:
            if not data:
                raise
            continue
        for level, kind, fds in ancillary:  # QEMU passes eventfds; this backend does not use them
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                for fd in struct.unpack(f"<{len(fds) // 4}i", fds[: len(fds) // 4 * 4]):
                    os.close(fd)
        if not chunk:
            return None
        data += chunk
    return data
