"""Boot real guests under QEMU (TCG) and drive them over QMP."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import argv as qargv
from .errors import GuestBootError, GuestError, GuestTimeoutError, QMPCommandError
from .initramfs import DEFAULT_MODULES, OPTIONAL_MODULES, build_initramfs
from .kernel import DEFAULT_FLAVOUR, KernelInfo, default_cache_dir, ensure_kernel
from .qmpsync import Event, QMPSession
from .report import GuestReport, parse_reports

QEMU = "qemu-system-x86_64"
READY_LINE = "QH-READY-FOR-HOTPLUG"
_SERIAL_TAIL_LINES = 40
_POLL = 0.1
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
T = TypeVar("T")


@dataclass(frozen=True)
class BootResult:
    rc: int
    serial_text: str
    report: GuestReport  # the "boot" report
    reports: list[GuestReport]  # every complete report, in order
    duration: float  # seconds from spawning QEMU to its exit
    stderr: str
    command: list[str]


class Rig:
    """Boots the rig's guest kernel + initramfs under QEMU with caller-supplied device options.

    The kernel and initramfs are fetched/built lazily (on first use) and cached in ``cache_dir``
    (default ``$VMDEV_TEST_CACHE`` or ``~/.cache/vmdev-tests``). ``flavour`` "generic" selects
    the bigger Debian kernel (9p, e1000e, AHCI, ...); ``kernel`` passes an already resolved one
    (e.g. from check_prerequisites). ``modules`` must all exist; ``optional_modules`` are
    loaded when the kernel has them.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        flavour: str = DEFAULT_FLAVOUR,
        modules: Sequence[str] = DEFAULT_MODULES,
        optional_modules: Sequence[str] = OPTIONAL_MODULES,
        qemu: str = QEMU,
        kernel: KernelInfo | None = None,
    ) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.flavour = kernel.flavour if kernel is not None else flavour
        self.modules = tuple(modules)
        self.optional_modules = tuple(optional_modules)
        self.qemu = qemu
        self._kernel = kernel
        self._initramfs: Path | None = None

    @property
    def kernel(self) -> KernelInfo:
        if self._kernel is None:
            self._kernel = ensure_kernel(self.cache_dir, self.flavour)
        return self._kernel

    @property
    def initramfs(self) -> Path:
        if self._initramfs is None:
            self._initramfs = build_initramfs(
                self.kernel,
                self.cache_dir,
                modules=self.modules,
                optional_modules=self.optional_modules,
            )
        return self._initramfs

    def prepare(self) -> None:
        """Fetch the kernel and build the initramfs now (RigSetupError on failure)."""
        _ = self.initramfs

    def qemu_prefix(self, *, append: str = "", serial: str = "stdio") -> list[str]:
        """The rig's base command; ``append`` is the complete kernel command line.

        With -nodefaults QEMU creates no serial port, so the rig adds one (``serial`` is a
        ``-serial`` spec: "stdio", "file:PATH", ...); the guest's console is ttyS0.
        """
        return [
            self.qemu,
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-accel",
            "tcg",
            "-no-reboot",
            "-serial",
            serial,
            "-kernel",
            str(self.kernel.vmlinuz),
            "-initrd",
            str(self.initramfs),
            "-append",
            append or qargv.BASE_APPEND,
        ]

    def command(
        self,
        argv: Sequence[str],
        *,
        append: str = "",
        serial: str = "stdio",
        bios: str | None = None,
    ) -> list[str]:
        """The full QEMU command line for booting the guest with ``argv``'s devices.

        Accelerator options in ``argv`` are dropped (TCG is forced). ``append`` is added to the
        rig's kernel command line. ``bios``: None = qboot on q35/pc unless argv has -bios,
        "" = QEMU's default firmware, else a firmware path.
        """
        prefix = self.qemu_prefix(append=qargv.kernel_append(argv, append), serial=serial)
        return prefix + qargv.firmware_args(argv, bios) + qargv.force_tcg(argv)

    def boot(
        self,
        argv: Sequence[str],
        *,
        append: str = "",
        timeout: float = 90.0,
        bios: str | None = None,
    ) -> BootResult:
        """Boot a guest with ``argv``, wait for it to power off and return its report.

        Raises GuestBootError (with QEMU's stderr) if QEMU exits before the guest printed its
        boot report, GuestTimeoutError (QEMU killed, serial tail attached) on timeout.
        """
        with _WorkDir() as work:
            serial_log, stderr_log = work.path / "serial.log", work.path / "qemu.log"
            cmd = self.command(argv, append=append, serial=f"file:{serial_log}", bios=bios)
            started = time.monotonic()
            proc = _spawn(cmd, stderr_log)
            try:
                rc = _wait(proc, timeout, serial_log, stderr_log)
            finally:
                _kill(proc)
            duration = time.monotonic() - started
            serial, stderr = _read(serial_log), _read(stderr_log)
        reports = parse_reports(serial)
        boot = next((r for r in reports if r.tag == "boot"), None)
        if boot is None:
            raise GuestBootError(
                "QEMU exited before the guest printed its boot report",
                rc=rc,
                stderr=stderr,
                serial_tail=_tail(serial),
            )
        return BootResult(rc, serial, boot, reports, duration, stderr, cmd)

    def start(
        self,
        argv: Sequence[str],
        *,
        wait_seconds: int = 60,
        append: str = "",
        bios: str | None = None,
        timeout: float = 90.0,
    ) -> RunningGuest:
        """Boot a guest that stays up for hotplug: QMP connected, QH-READY-FOR-HOTPLUG seen.

        The guest polls for device changes for ``wait_seconds`` after its boot report, then
        powers off. ``timeout`` bounds the wait for the ready line.
        """
        work = _WorkDir()
        socket = work.path / "qmp.sock"
        cmd = self.command(
            argv,
            append=f"qh.wait={wait_seconds} {append}".strip(),
            serial=f"file:{work.path / 'serial.log'}",
            bios=bios,
        )
        cmd += ["-qmp", f"unix:{socket},server=on,wait=off"]
        try:
            session = QMPSession()
            try:
                proc = _spawn(cmd, work.path / "qemu.log")
            except BaseException:
                session.close()
                raise
        except BaseException:
            work.cleanup()
            raise
        guest = RunningGuest(proc, work, cmd, session)
        try:
            guest.connect_qmp(socket, timeout)
            guest.wait_serial(READY_LINE, timeout)
        except BaseException:
            guest.stop()
            raise
        return guest

    def _stopped_qemu(self, argv: Sequence[str]) -> list[str]:
        """A QEMU that builds the machine but never runs it (-S), with QMP on stdio."""
        return [
            self.qemu,
            "-S",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-accel",
            "tcg",
            "-qmp",
            "stdio",
            *argv,
        ]

    def dry_run(self, argv: Sequence[str], *, timeout: float = 30.0) -> tuple[int, str]:
        """Let QEMU build (not run: -S) the machine from ``argv``, then quit: (rc, stderr).

        rc 0 means QEMU accepted every option, property, backend and bus; otherwise stderr
        holds QEMU's error text. Takes ~50 ms.
        """
        cmd = self._stopped_qemu(qargv.force_tcg(argv))
        commands = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
        proc = _run(cmd, commands, timeout)
        return proc.returncode, proc.stderr

    def qmp_oneshot(
        self,
        commands: Sequence[tuple[str, Mapping[str, object] | None]],
        *,
        argv: Sequence[str] = ("-machine", "none"),
        timeout: float = 30.0,
    ) -> list[Any]:
        """Run QMP commands on a stopped (-S) QEMU over stdio; their results, in order."""
        lines: list[dict[str, object]] = [{"execute": "qmp_capabilities"}]
        lines += [
            {"execute": name, "arguments": dict(args or {}), "id": index}
            for index, (name, args) in enumerate(commands)
        ]
        lines.append({"execute": "quit"})
        cmd = self._stopped_qemu(argv)
        proc = _run(cmd, "".join(json.dumps(line) + "\n" for line in lines), timeout)
        replies = _qmp_replies(proc.stdout)
        results: list[Any] = []
        for index, (name, _) in enumerate(commands):
            if index not in replies:
                raise GuestBootError(
                    f"QEMU gave no reply to QMP {name}", rc=proc.returncode, stderr=proc.stderr
                )
            results.append(_qmp_result(name, replies[index]))
        return results

    def device_properties(self, typename: str) -> list[dict[str, Any]]:
        """QMP ``device-list-properties`` for a device type (on ``-machine none``)."""
        result: list[dict[str, Any]] = self.qmp_oneshot([("device-list-properties", {"typename": typename})])[
            0
        ]
        return result

    def object_properties(self, typename: str) -> list[dict[str, Any]]:
        """QMP ``qom-list-properties`` for an object type, e.g. memory-backend-file."""
        result: list[dict[str, Any]] = self.qmp_oneshot([("qom-list-properties", {"typename": typename})])[0]
        return result


class RunningGuest:
    """A guest started by ``Rig.start``; always ``stop()`` it (or use it as a context manager)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], work: _WorkDir, command: list[str], session: QMPSession
    ) -> None:
        self.proc = proc
        self.command = command
        self._work = work
        self._qmp = session
        self._stopped = False
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def serial_text(self) -> str:
        return _read(self._work.path / "serial.log")

    def stderr_text(self) -> str:
        return _read(self._work.path / "qemu.log")

    def reports(self) -> list[GuestReport]:
        return parse_reports(self.serial_text())

    def latest_report(self) -> GuestReport:
        reports = self.reports()
        if not reports:
            raise self._error(GuestBootError, "the guest has printed no complete report yet")
        return reports[-1]

    def connect_qmp(self, socket: Path, timeout: float = 30.0) -> None:
        """Connect the QMP session, retrying until QEMU has created the socket."""
        self._poll(
            lambda: True if socket.exists() and self._qmp.try_connect(socket) else None,
            timeout,
            f"connect to QMP socket {socket}",
        )

    def wait_serial(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears on the guest's serial console."""
        self._poll(
            lambda: True if text in self.serial_text() else None,
            timeout,
            f"see {text!r} on the serial console",
        )

    def wait_report(self, predicate: Callable[[GuestReport], bool], timeout: float = 60.0) -> GuestReport:
        """Wait until the guest's latest report (its current device state) satisfies
        ``predicate``; the guest prints a new one shortly after each device change."""

        def check() -> GuestReport | None:
            reports = self.reports()
            return reports[-1] if reports and predicate(reports[-1]) else None

        return self._poll(check, timeout, "print a report satisfying the predicate")

    def execute(
        self, command: str, arguments: Mapping[str, object] | None = None, *, timeout: float = 30.0
    ) -> Any:
        """Run a QMP command; QMPCommandError (error class + description) if it fails."""
        try:
            return self._qmp.execute(command, arguments, timeout)
        except QMPCommandError:
            raise
        except GuestError as exc:
            raise self._error(type(exc), str(exc)) from exc

    def run(self, commands: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Execute ``{"execute": name, "arguments": {...}}`` dicts in order; their results."""
        return [self.execute(str(c["execute"]), c.get("arguments")) for c in commands]

    def wait_event(self, name: str, timeout: float = 30.0, match: Mapping[str, Any] | None = None) -> Event:
        """The oldest not yet returned QMP event ``name`` whose ``data`` contains ``match``
        (events are recorded from connection time on, so it may predate this call)."""
        return self._qmp.wait_event(name, timeout, match)

    def events(self) -> list[Event]:
        return self._qmp.events()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Quit QEMU (killed if it does not exit in ``timeout``) and clean up; idempotent."""
        if self._stopped:
            return self.returncode
        self._stopped = True
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(GuestError, QMPCommandError):
                    self._qmp.execute("quit", timeout=5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        finally:
            _kill(self.proc)
            self.returncode = self.proc.returncode
            self._qmp.close()
            self._work.cleanup()
        return self.returncode

    def __enter__(self) -> RunningGuest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _poll(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            if self.proc.poll() is not None:
                raise self._error(GuestBootError, f"QEMU exited while waiting to {what}")
            if time.monotonic() > deadline:
                raise self._error(GuestTimeoutError, f"timed out after {timeout:.0f} s waiting to {what}")
            time.sleep(_POLL)

    def _error(self, kind: type[GuestError], message: str) -> GuestError:
        return kind(
            message,
            rc=self.proc.poll(),
            stderr=self.stderr_text(),
            serial_tail=_tail(self.serial_text()),
        )


class _WorkDir:
    """A private temporary directory (short path: it holds UNIX sockets)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="vmdev-rig-"))
        if len(str(self.path / "qmp.sock")) > _MAX_SOCKET_PATH:
            self.cleanup()
            raise ValueError(
                f"temporary directory path too long for UNIX sockets: {self.path}"
                " (set TMPDIR to a shorter directory)"
            )

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> _WorkDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        try:
            return subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        except OSError as exc:
            raise GuestBootError(f"cannot start {cmd[0]}: {exc}") from exc


def _wait(proc: subprocess.Popen[bytes], timeout: float, serial_log: Path, stderr_log: Path) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise GuestTimeoutError(
            f"guest did not power off within {timeout:.0f} s; QEMU killed",
            stderr=_read(stderr_log),
            serial_tail=_tail(_read(serial_log)),
        ) from None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process (by its PID) if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _run(cmd: list[str], stdin: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child
        raise GuestTimeoutError(f"QEMU did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise GuestBootError(f"cannot start {cmd[0]}: {exc}") from exc


def _qmp_replies(stdout: str) -> dict[int, dict[str, Any]]:
    replies: dict[int, dict[str, Any]] = {}
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict) and isinstance(message.get("id"), int):
            replies[message["id"]] = message
    return replies


def _qmp_result(command: str, reply: dict[str, Any]) -> Any:
    if "error" in reply:
        error = reply["error"]
        raise QMPCommandError(command, str(error.get("class")), str(error.get("desc")))
    return reply.get("return")


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = _SERIAL_TAIL_LINES) -> str:
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])
