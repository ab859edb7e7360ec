"""QEMU's live driver: hot plug into a running QEMU over QMP, with roll-back.

:class:`QmpHotPlugger` implements :class:`vmdev.live.HotPlugger` for the QEMU backend
(``vmdev attach --qmp SOCKET``). It runs the QMP commands a plugin rendered (``QemuAttach.hotplug``,
saved in the sandbox's state as their JSON) one after another. When QEMU refuses a step, the steps
already done are undone in reverse order, and the error names the step and QEMU's answer. The undo
commands are derived from the commands themselves, so the core needs to know nothing about device
families:

==================  =========================================================
done                undone with
==================  =========================================================
``object-add``      ``object-del {id}``
``blockdev-add``    ``blockdev-del {node-name}``
``chardev-add``     ``chardev-remove {id}``
``netdev_add``      ``netdev_del {id}``
``device_add``      ``device_del {id}``, then wait for ``DEVICE_DELETED``
``getfd``           ``closefd {fdname}``
==================  =========================================================

The same table tells the device manager which object each step creates or removes and what it
refers to (:meth:`QmpHotPlugger.step_objects`), so objects several devices' steps create are
shared. A sequence with a step that cannot be undone (a command not in the table, a
``device_add`` without an id) before its last step is refused before anything runs. Unplugging
(``QemuAttach.unplug``) waits for QEMU's ``DEVICE_DELETED`` after each ``device_del`` (with a
timeout) before the backends are removed; steps whose object is already gone are skipped, so an
interrupted detach can simply be run again.

The transport is :class:`QmpSession`, a small synchronous QMP client (blocking socket I/O and a
reader thread; no asyncio), which the QEMU backend opens when a command first needs it
(:class:`DeferredSession`). Tests pass any object with the :class:`QmpTransport`
methods instead (:class:`vmdev.fakeqmp.FakeQemu`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, TypeAlias

from vmdev.backends.qemu import SHARED_RAM_ID
from vmdev.errors import UnsupportedError, VmdevError
from vmdev.live import DetachTimeoutError, HotplugError, Progress, StepObjects, VmUnreachableError
from vmdev.qemu import QemuAttach, QmpCommand, split_opts
from vmdev.state import PortRecord, Step

if TYPE_CHECKING:
    import socket

#: how each creating command is undone: (undo command, argument naming the object)
UNDO: Final[Mapping[str, tuple[str, str]]] = {
    "object-add": ("object-del", "id"),
    "blockdev-add": ("blockdev-del", "node-name"),
    "chardev-add": ("chardev-remove", "id"),
    "netdev_add": ("netdev_del", "id"),
    "device_add": ("device_del", "id"),
    "getfd": ("closefd", "fdname"),
}
#: QOM types of the ports a device can be hot-plugged into, by port kind
PORT_TYPES: Final[Mapping[str, str]] = {
    "pcie-root-port": "root-port",
    "ioh3420": "root-port",
    "xio3130-downstream": "switch-port",
}
PERIPHERAL: Final = "/machine/peripheral"
DEFAULT_COMMAND_TIMEOUT: Final = 30.0
DEFAULT_UNPLUG_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: the longest message read from QEMU (query-qmp-schema, the largest answer, is about 200 KiB)
_MAX_MESSAGE: Final = 64 * 2**20
#: the events a session keeps, the latest ones. A guest makes QEMU send events (a tray opened,
#: a watchdog, a NIC filter changed), some of them unthrottled: kept without a limit, a flood
#: during a 30 s unplug wait would grow the runtime's memory without bound. A hot plug waits for
#: one DEVICE_DELETED at a time, sent within a few events of its device_del.
MAX_EVENTS: Final = 10_000

Event = Mapping[str, Any]
#: a step as the manager passes it (JSON) or as a plugin rendered it
AnyStep: TypeAlias = Step | QmpCommand


# --- errors ------------------------------------------------------------------------------------------
class QmpError(VmdevError):
    """Talking to QEMU failed."""


class QmpCommandError(QmpError):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str, *, device: str = "") -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QEMU refused {command}: {desc} ({error_class})", device=device, field="qmp")


class QmpConnectionError(QmpError):
    """QEMU cannot be reached, the connection broke, or a command got no answer."""


class QmpTimeoutError(QmpError):
    """An awaited QMP event did not come in time."""


# --- commands ----------------------------------------------------------------------------------------
#: how each removing command names its object
REMOVES: Final[Mapping[str, str]] = {undo: key for undo, key in UNDO.values()}
#: arguments that name the command's own object, not another one it refers to
_OWN_NAME: Final = frozenset({"id", "node-name", "fdname"})


def command(step: AnyStep) -> QmpCommand:
    """``step`` as a :class:`QmpCommand` (``{"execute": ..., "arguments": {...}}`` as saved)."""
    if isinstance(step, QmpCommand):
        return step
    execute, arguments = step.get("execute"), step.get("arguments", {})
    if not isinstance(execute, str) or not isinstance(arguments, Mapping):
        raise UnsupportedError(f"not a QMP command: {dict(step)!r}", field="hotplug")
    return QmpCommand(execute, arguments)


def undo_command(command: QmpCommand) -> QmpCommand | None:
    """The command that undoes ``command``, or None when it creates nothing known."""
    entry = UNDO.get(command.execute)
    if entry is None:
        return None
    undo, key = entry
    name = command.arguments.get(key)
    if not isinstance(name, str) or not name:
        return None
    return QmpCommand(undo, {key: name})


def undo_steps(done: Sequence[QmpCommand]) -> tuple[QmpCommand, ...]:
    """The undo commands of ``done``, last first (commands that create nothing are skipped)."""
    return tuple(u for u in (undo_command(c) for c in reversed(done)) if u is not None)


def step_objects(step: AnyStep) -> StepObjects:
    """What ``step`` creates or removes (per :data:`UNDO`) and every name its arguments mention
    (a bus ``scsi0.0`` also names its controller ``scsi0``)."""
    cmd = command(step)
    undo = undo_command(cmd)
    creates = next(iter(undo.arguments.values())) if undo is not None else ""
    key = REMOVES.get(cmd.execute)
    removes = cmd.arguments.get(key) if key is not None else None
    refers: set[str] = set()
    for name, value in cmd.arguments.items():
        if name not in _OWN_NAME:
            refers |= _names(value)
    refers.discard(creates)
    return StepObjects(
        creates=creates, removes=removes if isinstance(removes, str) else "", refers=frozenset(refers),
        undo=undo.to_json() if undo is not None else None,
    )


def _names(value: Any) -> set[str]:
    if isinstance(value, str):
        parent, dot, bus = value.rpartition(".")
        return {value, parent} if dot and parent and bus.isdigit() else {value}
    if isinstance(value, Mapping):
        return {n for item in value.values() for n in _names(item)}
    if isinstance(value, list | tuple):
        return {n for item in value for n in _names(item)}
    return set()


def describe(command: QmpCommand) -> str:
    """``device_add (driver=e1000e id=nic0 bus=rp0)``: the command and what it names."""
    keys = ("qom-type", "driver", "id", "node-name", "fdname", "bus")
    shown = [f"{k}={command.arguments[k]}" for k in keys if isinstance(command.arguments.get(k), str)]
    return f"{command.execute} ({' '.join(shown)})" if shown else command.execute


def _describe_all(commands: Sequence[QmpCommand]) -> str:
    return ", ".join(describe(c) for c in commands)


# --- transport ---------------------------------------------------------------------------------------
class QmpTransport(Protocol):
    """What :class:`QmpHotPlugger` needs from a QMP connection."""

    def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = ...
    ) -> Any:
        """The command's ``return`` value; :class:`QmpCommandError` if QEMU answers with an error,
        :class:`QmpConnectionError` if there is no answer."""

    def event_mark(self) -> int:
        """A position in the stream of events received so far."""

    def wait_event(
        self, name: str, match: Mapping[str, Any], *, after: int, timeout: float
    ) -> Event:
        """The first event ``name`` after position ``after`` whose data contains ``match``;
        :class:`QmpTimeoutError` when none comes within ``timeout`` seconds,
        :class:`QmpConnectionError` as soon as the connection is lost."""

    def close(self) -> None: ...


def _event_matches(event: Event, name: str, match: Mapping[str, Any]) -> bool:
    data = event.get("data", {})  # an object: the reader thread checked
    return event.get("event") == name and all(data.get(k) == v for k, v in match.items())


#: no message yet
_NOTHING: Final = object()


def _message_problem(message: Any) -> str:
    """What is wrong with the shape of a message after the greeting ("" if nothing): the reader thread
    files answers by ``id`` and events by name, and :meth:`QmpSession.wait_event` looks into their
    ``data``."""
    if not isinstance(message, dict):
        return f"QEMU sent {_excerpt(message)} (expected a JSON object)"
    if "event" in message and (
        not isinstance(message["event"], str) or not isinstance(message.get("data", {}), dict)
    ):
        return f"QEMU sent an event {_excerpt(message)} (expected an event name and a data object)"
    return ""


def _excerpt(value: Any, limit: int = 80) -> str:
    """``value`` as JSON (so escaped), cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class QmpSession:
    """A QMP connection usable synchronously from any thread: blocking socket I/O and one reader
    thread that files QEMU's answers by command id and records the events from the moment of
    connection on (the latest :data:`MAX_EVENTS` of them).

    QMP is newline-delimited JSON on a UNIX socket (QEMU's docs/interop/qmp-spec): a greeting,
    ``qmp_capabilities``, then commands carrying an ``id`` that QEMU echoes in its answer, with
    events interleaved. That is all a hot plug needs, so vmdev speaks it itself instead of running
    ``qemu.qmp``'s asyncio client on a private event loop: importing asyncio and ``qemu.qmp``
    cost ``vmdev attach`` about 40 ms of CPU per call, more than the rest of its start-up
    (issue 13). ``vmdev check`` (:mod:`vmdev.preflight`) talks to its probe QEMU over pipes; no
    part of vmdev imports ``qemu.qmp`` (the e2e tests use it as an independent client).

    The peer is not trusted: every wait (the greeting included) has a deadline for the whole
    message, a message the reader thread cannot read or file (invalid or too deeply nested JSON,
    longer than 64 MiB, not an object, an event without a name or with non-object data) ends the
    connection with that reason, which every waiting caller reports at once, and answers to ids
    nobody awaits are dropped.
    """

    def __init__(self, socket_path: str, *, name: str = "vmdev") -> None:
        self.socket_path = socket_path
        self._name = name
        self._sock: socket.socket | None = None
        self._cond = threading.Condition()
        self._send = threading.Lock()
        self._events: list[Event] = []
        #: how many of the oldest events were let go (a position counts them too)
        self._dropped = 0
        self._answers: dict[str, Mapping[str, Any]] = {}
        #: ids of the commands awaiting an answer (answers to others are dropped)
        self._pending: set[str] = set()
        #: the first message QEMU sent (_NOTHING until it comes)
        self._greeting: Any = _NOTHING
        #: why the connection is gone (None while it is up)
        self._lost: str | None = None
        self._count = 0
        self._reader: threading.Thread | None = None
        self._closed = False

    @classmethod
    def connect(
        cls, socket_path: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT, name: str = "vmdev"
    ) -> QmpSession:
        """Connect to QEMU's QMP UNIX socket and negotiate capabilities."""
        session = cls(socket_path, name=name)
        try:
            session._open(timeout)
        except BaseException:
            session.close()
            raise
        return session

    def _open(self, timeout: float) -> None:
        import socket  # 2 ms of CPU (its enums), paid only by a command that talks to QEMU

        sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            raise self._error(f"cannot connect to QEMU's QMP socket: {_reason(exc)}") from None
        # the reader thread reads the greeting too, so that waiting for it has a deadline for the
        # whole message: a socket timeout bounds each recv, and a peer sending a byte now and then
        # would keep a blocking readline going forever
        sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, args=(sock.makefile("rb"),),
                                        name=f"{self._name}-qmp", daemon=True)
        self._reader.start()
        greeting = self._greeting_within(timeout)
        if not isinstance(greeting, dict) or "QMP" not in greeting:
            raise self._error("cannot connect to QEMU's QMP socket: it sent no QMP greeting")
        self.execute("qmp_capabilities", timeout=timeout)

    def _greeting_within(self, timeout: float) -> Any:
        return self._wait(
            lambda: self._greeting, timeout,
            lost=lambda why: self._error(f"cannot connect to QEMU's QMP socket: {why}"),
            late=lambda: self._error(
                f"QEMU did not greet within {timeout:g} s on this QMP socket (a QMP socket serves one "
                "client at a time: is another one connected? give vmdev a -qmp socket of its own)"),
        )

    def _wait(self, found: Callable[[], Any], timeout: float, *, lost: Callable[[str], Exception],
              late: Callable[[], Exception]) -> Any:
        """What ``found()`` gives (under the lock) once it is not :data:`_NOTHING`, waiting for the
        reader thread at most ``timeout`` seconds for the whole of it: ``lost(why)`` when the
        connection ends first, ``late()`` when the time is up."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (value := found()) is _NOTHING:
                if self._lost is not None:
                    raise lost(self._lost)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise late()
                self._cond.wait(remaining)
            return value

    def _read(self, stream: BinaryIO) -> None:
        """The reader thread: every message QEMU sends, until the connection ends or a message cannot
        be read. It never ends with a traceback: why it ended is kept in ``_lost``, which every
        waiting caller then reports."""
        try:
            reason = self._read_all(stream)
        except RecursionError:
            reason = "QEMU sent JSON nested too deeply to read"
        except MemoryError:
            reason = "QEMU sent a message too large to read"
        except Exception as exc:  # noqa: BLE001 - a thread's exception would only be printed
            reason = _reason(exc)
        with self._cond:
            self._lost = reason
            self._cond.notify_all()

    def _read_all(self, stream: BinaryIO) -> str:
        """Read messages until the connection ends; why it did."""
        for line in iter(partial(stream.readline, _MAX_MESSAGE), b""):
            if not line.strip():
                continue
            if len(line) >= _MAX_MESSAGE and not line.endswith(b"\n"):
                return f"QEMU sent a message longer than {_MAX_MESSAGE >> 20} MiB"
            message = json.loads(line)
            problem = "" if self._greeting is _NOTHING else _message_problem(message)
            if problem:
                return problem
            with self._cond:
                if self._greeting is _NOTHING:
                    self._greeting = message
                elif "event" in message:
                    self._keep(message)
                elif isinstance(ident := message.get("id"), str) and ident in self._pending:
                    self._answers[ident] = message
                self._cond.notify_all()
        return "QEMU closed the connection"

    def _error(self, message: str) -> QmpConnectionError:
        return QmpConnectionError(message, device=self.socket_path, field="qmp")

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> Any:
        with self._cond:
            if self._sock is None or self._closed:
                raise self._error("not connected")
            self._count += 1
            ident = f"{self._name}-{self._count}"
            self._pending.add(ident)
        request: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            request["arguments"] = dict(arguments)
        try:
            try:
                with self._send:
                    self._sock.sendall(json.dumps(request).encode() + b"\n")
            except OSError as exc:
                raise self._error(f"connection to QEMU lost during {command}: {_reason(exc)}") from None
            answer = self._answer(ident, command, timeout)
        finally:
            with self._cond:
                self._pending.discard(ident)
        return self._outcome(command, answer)

    def _outcome(self, command: str, answer: Mapping[str, Any]) -> Any:
        """The ``return`` of ``answer``, or the error it carries."""
        if "error" in answer:
            error = answer["error"]
            if not isinstance(error, dict) or not isinstance(error.get("desc"), str) or not isinstance(
                error.get("class", ""), str
            ):
                raise self._error(f"QEMU answered {command} with error {_excerpt(error)} (expected an "
                                  "object with class and desc strings)")
            raise QmpCommandError(command, error.get("class", ""), error["desc"], device=self.socket_path)
        if "return" not in answer:
            raise self._error(f"QEMU answered {command} with {_excerpt(answer)} (expected a return or an "
                              "error)")
        return answer["return"]

    def _answer(self, ident: str, command: str, timeout: float) -> Mapping[str, Any]:
        answer: Mapping[str, Any] = self._wait(
            lambda: self._answers.pop(ident, _NOTHING), timeout,
            lost=lambda why: self._error(f"connection to QEMU lost during {command}: {why}"),
            late=lambda: self._error(f"QEMU gave no answer to {command} within {timeout:g} s"),
        )
        return answer

    def _keep(self, event: Event) -> None:
        """Record an event (under the lock); past :data:`MAX_EVENTS`, the older half goes."""
        self._events.append(event)
        if len(self._events) > MAX_EVENTS:
            half = len(self._events) // 2
            del self._events[:half]
            self._dropped += half

    def event_mark(self) -> int:
        with self._cond:
            return self._dropped + len(self._events)

    def events(self) -> list[Event]:
        """The events received, the latest :data:`MAX_EVENTS` at most."""
        with self._cond:
            return list(self._events)

    def wait_event(self, name: str, match: Mapping[str, Any], *, after: int, timeout: float) -> Event:
        position = after

        def found() -> Any:
            nonlocal position
            start, position = max(position - self._dropped, 0), self._dropped + len(self._events)
            return next((e for e in self._events[start:] if _event_matches(e, name, match)), _NOTHING)

        event: Event = self._wait(
            found, timeout,
            lost=lambda why: self._error(f"connection to QEMU lost while waiting for {name}: {why}"),
            late=lambda: QmpTimeoutError(f"no {name} event matching {dict(match)} within {timeout:g} s",
                                         device=self.socket_path, field="qmp"),
        )
        return event

    def close(self) -> None:
        """Disconnect and stop the reader thread (idempotent; never raises)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        if self._sock is not None:
            import socket  # imported already: there is a socket

            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            if self._reader is not None:
                self._reader.join(5.0)
            self._sock.close()

    def __enter__(self) -> QmpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeferredSession:
    """A :class:`QmpTransport` that connects (:meth:`QmpSession.connect`) when it is first used.

    ``vmdev attach`` and ``detach`` open the sandbox's live driver before they know whether the
    device needs QEMU at all; most devices of a container spec are generic ones, which stay in the
    container and never reach the VM. Connecting on first use spares those commands the socket,
    the greeting and ``qmp_capabilities`` (and the import of :mod:`socket`): about 3 ms of CPU, a
    twentieth of the command (issue 13). Kata's device manager does not call the hypervisor for
    them either. A device that needs QEMU meets the same connection errors as before, raised by the
    first command instead of by the constructor. Safe to use from several threads; once closed it
    does not connect again.
    """

    def __init__(
        self, socket_path: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT, name: str = "vmdev"
    ) -> None:
        self.socket_path = socket_path
        self._timeout = timeout
        self._name = name
        self._lock = threading.Lock()
        self._session: QmpSession | None = None
        self._closed = False

    def _live(self) -> QmpSession:
        with self._lock:
            if self._session is None:
                if self._closed:
                    raise QmpConnectionError("not connected", device=self.socket_path, field="qmp")
                self._session = QmpSession.connect(self.socket_path, timeout=self._timeout, name=self._name)
            return self._session

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> Any:
        return self._live().execute(command, arguments, timeout=timeout)

    def event_mark(self) -> int:
        return self._live().event_mark()

    def wait_event(self, name: str, match: Mapping[str, Any], *, after: int, timeout: float) -> Event:
        return self._live().wait_event(name, match, after=after, timeout=timeout)

    def close(self) -> None:
        """Close the session if one was opened (idempotent; never raises)."""
        with self._lock:
            self._closed = True
            session = self._session
        if session is not None:
            session.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text or type(exc).__name__


# --- the hot plugger ---------------------------------------------------------------------------------
class QmpHotPlugger:
    """Hot plug and unplug over a :class:`QmpTransport`, with roll-back (see the module doc).

    Steps are QMP commands as JSON (``{"execute": ..., "arguments": {...}}``, as the state saves
    them) or :class:`~vmdev.qemu.QmpCommand` values."""

    def __init__(
        self,
        transport: QmpTransport,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        unplug_timeout: float = DEFAULT_UNPLUG_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.command_timeout = command_timeout
        self.unplug_timeout = unplug_timeout

    # --- what the VM has --------------------------------------------------------------------------
    def _qmp(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        return self.transport.execute(command, arguments, timeout=self.command_timeout)

    def _objects(self, command: str, arguments: Mapping[str, Any] | None, keys: str) -> list[dict[str, Any]]:
        """The answer to a query that returns a list of objects, each with the string members
        ``keys`` (space-separated): checked, as QEMU's answers are not trusted blindly."""
        answer = self._qmp(command, arguments)
        wanted = keys.split()
        if not isinstance(answer, list) or not all(_has_strings(item, wanted) for item in answer):
            raise QmpConnectionError(
                f"QEMU answered {command} with {_excerpt(answer)} (expected a list of objects with "
                f"{' and '.join(wanted)} strings)",
                device=str(getattr(self.transport, "socket_path", "")),
                field="qmp",
            )
        return answer

    def _children(self, path: str) -> dict[str, str]:
        """``qom-list`` of ``path``: child name -> QOM type, for ``child<...>`` properties."""
        out: dict[str, str] = {}
        for prop in self._objects("qom-list", {"path": path}, "name type"):
            kind = prop["type"]
            if kind.startswith("child<") and kind.endswith(">"):
                out[prop["name"]] = kind[len("child<") : -1]
        return out

    def _links(self, path: str) -> list[str]:
        names = [prop["name"] for prop in self._objects("qom-list", {"path": path}, "name type")]
        return [name for name in names if name.startswith("child[")]

    def free_ports(self) -> list[PortRecord]:
        free: list[PortRecord] = []
        for dev_id, qom_type in self._children(PERIPHERAL).items():
            kind = PORT_TYPES.get(qom_type)
            if kind is None:
                continue
            children = self._children(f"{PERIPHERAL}/{dev_id}")
            buses = [name for name, child_type in children.items() if child_type.startswith("PCI")]
            if buses and not any(self._links(f"{PERIPHERAL}/{dev_id}/{bus}") for bus in buses):
                free.append(PortRecord(id=dev_id, kind=kind))
        return sorted(free, key=lambda p: _natural(p.id))

    def close(self) -> None:
        """Close the transport (the QMP session)."""
        self.transport.close()

    step_objects = staticmethod(step_objects)

    def check_ready(self, attach: Any, *, device: str) -> None:
        if not isinstance(attach, QemuAttach):
            raise UnsupportedError(
                f"QEMU's live driver hot-plugs QEMU renderings, not {type(attach).__name__}",
                device=device,
                field="hypervisor",
            )
        for key, args in attach.shared_args.items():
            self._check_shared(key, args, device)
        if attach.memory.shared:
            objects = self._children("/objects")
            share = objects.get(SHARED_RAM_ID) is not None and self._qmp(
                "qom-get", {"path": f"/objects/{SHARED_RAM_ID}", "property": "share"}
            )
            if not share:
                raise UnsupportedError(
                    f"needs the guest RAM in a shared memory backend ({SHARED_RAM_ID}, share=on) from "
                    "boot, which this VM does not have: boot it from a plan with a device that needs it",
                    device=device,
                    field="memory",
                )
        for key, value in attach.machine.items():
            self._check_machine(key, value, device)

    def _check_shared(self, key: str, args: Sequence[str], device: str) -> None:
        for option, value in zip(args[::2], args[1::2], strict=False):
            parts = split_opts(value)
            ids = [p[len("id=") :] for p in parts[1:] if p.startswith("id=")]
            if not ids or option not in ("-device", "-object"):
                continue
            where = PERIPHERAL if option == "-device" else "/objects"
            if ids[0] not in self._children(where):
                raise UnsupportedError(
                    f"needs {option} {value} ({key}) from boot, which this VM does not have: boot it "
                    "from a plan that includes it",
                    device=device,
                    field="hotplug",
                )

    def _check_machine(self, key: str, value: object, device: str) -> None:
        try:
            actual = self._qmp("qom-get", {"path": "/machine", "property": key})
        except QmpCommandError:
            actual = None
        wanted = value if isinstance(value, bool) else str(value)
        if (actual if isinstance(wanted, bool) else str(actual)) != wanted:
            raise UnsupportedError(
                f"needs -machine {key}={_shown(value)} from boot, but this VM's machine has "
                f"{key}={_shown(actual)}",
                device=device,
                field="machine",
            )

    def _absent(self, undo: QmpCommand) -> bool:
        """Whether the object ``undo`` would remove is gone already (unknown: False)."""
        name = next(iter(undo.arguments.values()), "")
        if undo.execute == "device_del":
            return name not in self._children(PERIPHERAL)
        if undo.execute == "object-del":
            return name not in self._children("/objects")
        if undo.execute == "blockdev-del":
            nodes = self._objects("query-named-block-nodes", None, "node-name")
            return name not in {n["node-name"] for n in nodes}
        if undo.execute == "chardev-remove":
            return name not in {c["label"] for c in self._objects("query-chardev", None, "label")}
        return False

    def presence(self, steps: Sequence[AnyStep]) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        for cmd in map(command, steps):
            undo = undo_command(cmd)
            if undo is not None and undo.execute != "closefd":
                name = next(iter(undo.arguments.values()))
                out.append((f"{cmd.execute} {name}", not self._absent(undo)))
        return out

    # --- changing it --------------------------------------------------------------------------------
    def _reach(self) -> None:
        """Open the connection before a first step. QEMU's backend gives a :class:`DeferredSession`,
        which connects on first use: a QEMU that cannot be reached must be an error with nothing
        done and nothing uncertain, as it was when vmdev connected first, not a step whose outcome
        is unknown (the manager would keep its undo steps to clean up). ``event_mark`` is the
        cheapest call every transport answers; a session that is open already does nothing."""
        try:
            self.transport.event_mark()
        except QmpConnectionError as exc:
            raise VmUnreachableError(exc.message, device=exc.device, field=exc.field) from None

    def plug(self, steps: Sequence[AnyStep], *, device: str, progress: Progress) -> None:
        commands = [command(step) for step in steps]
        self._check_undoable(commands, device)
        self._reach()
        total = len(commands)
        for index, cmd in enumerate(commands):
            step = f"hot plug step {index + 1} of {total}, {describe(cmd)}"
            try:
                self._qmp(cmd.execute, cmd.arguments)
            except QmpCommandError as exc:
                raise self._rolled_back(f"{step}, failed: QEMU: {exc.desc} ({exc.error_class})",
                                        commands[:index], device) from None
            except QmpConnectionError as exc:
                raise HotplugError(
                    f"{step}: {exc.message}; QEMU's state is unknown and nothing was rolled back",
                    device=device,
                    steps_done=index,
                    leftovers=undo_steps(commands[: index + 1]),
                    uncertain=True,
                ) from None
            progress(index + 1)

    def _check_undoable(self, commands: Sequence[QmpCommand], device: str) -> None:
        for cmd in commands[:-1]:
            if undo_command(cmd) is None:
                raise UnsupportedError(
                    f"cannot hot-plug safely: step {describe(cmd)} cannot be undone if a later step "
                    f"fails (undoable: {', '.join(sorted(UNDO))}, each naming its object)",
                    device=device,
                    field="hotplug",
                )

    def _rolled_back(self, message: str, done: Sequence[QmpCommand], device: str) -> HotplugError:
        undone, left, problems = self._rollback(done)
        if not done:
            message += "; nothing to roll back"
        elif not left:
            message += f"; rolled back: {_describe_all(undone)}"
        else:
            message += f"; roll-back incomplete, left in the VM: {'; '.join(problems)}"
        return HotplugError(message, device=device, steps_done=len(done), leftovers=left)

    def _rollback(self, done: Sequence[QmpCommand]) -> tuple[list[QmpCommand], list[QmpCommand], list[str]]:
        """Undo ``done`` last first; (undone, left over, problems)."""
        undone: list[QmpCommand] = []
        left: list[QmpCommand] = []
        problems: list[str] = []
        steps = undo_steps(done)
        for index, undo in enumerate(steps):
            try:
                self._remove(undo)
                undone.append(undo)
            except QmpConnectionError as exc:
                left += steps[index:]
                problems.append(f"{_describe_all(steps[index:])} ({exc.message})")
                break
            except QmpError as exc:
                left.append(undo)
                problems.append(f"{describe(undo)} ({exc.message})")
        return undone, left, problems

    def _remove(self, undo: QmpCommand) -> None:
        """Run one undo/unplug command unless its object is gone; wait out a ``device_del``."""
        if self._absent(undo):
            return
        if undo.execute != "device_del":
            self._qmp(undo.execute, undo.arguments)
            return
        mark = self.transport.event_mark()
        try:
            self._qmp(undo.execute, undo.arguments)
        except QmpCommandError:
            if self._absent(undo):
                return
            # an unplug requested earlier may still be pending: wait for it like for ours
        dev_id = undo.arguments.get("id")
        try:
            self.transport.wait_event("DEVICE_DELETED", {"device": dev_id}, after=mark,
                                      timeout=self.unplug_timeout)
        except QmpTimeoutError:
            if not self._absent(undo):
                raise QmpTimeoutError(
                    f"the guest did not release {dev_id}: no DEVICE_DELETED within {self.unplug_timeout:g} s",
                    field="qmp",
                ) from None

    def unplug(self, steps: Sequence[AnyStep], *, device: str, progress: Progress) -> None:
        commands = [command(step) for step in steps]
        _check_removals(commands, device)
        self._reach()
        total = len(commands)
        for index, cmd in enumerate(commands):
            step = f"unplug step {index + 1} of {total}, {describe(cmd)}"
            try:
                self._remove(cmd)
            except QmpTimeoutError as exc:
                raise DetachTimeoutError(
                    f"{step}: {exc.message}; the device stays attached (detach again to retry)",
                    device=device,
                    steps_done=index,
                    leftovers=commands[index:],
                ) from None
            except QmpCommandError as exc:
                raise HotplugError(
                    f"{step}, failed: QEMU: {exc.desc} ({exc.error_class})",
                    device=device,
                    steps_done=index,
                    leftovers=commands[index:],
                ) from None
            except QmpConnectionError as exc:
                raise HotplugError(
                    f"{step}: {exc.message}", device=device, steps_done=index, leftovers=commands[index:],
                    uncertain=True,
                ) from None
            progress(index + 1)

    def cleanup(self, steps: Sequence[AnyStep], *, device: str) -> None:
        self._reach()
        _, left, problems = self._rollback([command(step) for step in steps])
        if left:
            raise HotplugError(
                f"cannot clean up an interrupted attach: {'; '.join(problems)}",
                device=device,
                leftovers=left,
            )


def _check_removals(commands: Sequence[QmpCommand], device: str) -> None:
    """Unplug steps come back from the sandbox's state file, so before any runs each must be a
    removal of the undo table naming one object (``device_del {"id": ...}``...), as every unplug a
    plugin renders and every roll-back step is: a state file edited to hold another command
    (``human-monitor-command`` runs anything QEMU's monitor can) is refused, not sent."""
    for cmd in commands:
        key = REMOVES.get(cmd.execute)
        if key is None or set(cmd.arguments) != {key} or not isinstance(cmd.arguments[key], str):
            raise UnsupportedError(
                f"cannot unplug: step {_excerpt(cmd.to_json())} "
                f"is not a removal naming one object (removals: {', '.join(sorted(REMOVES))})",
                device=device,
                field="unplug",
            )


def _has_strings(item: Any, keys: Sequence[str]) -> bool:
    return isinstance(item, dict) and all(isinstance(item.get(key), str) for key in keys)


def _shown(value: object) -> str:
    """A property value as on a QEMU command line (``on``/``off`` for booleans)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "(none)" if value is None else str(value)


def _natural(name: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2)), "") if match else (name, -1, name)


__all__ = [
    "PORT_TYPES",
    "REMOVES",
    "UNDO",
    "QmpCommandError",
    "QmpConnectionError",
    "QmpError",
    "QmpHotPlugger",
    "QmpSession",
    "QmpTimeoutError",
    "QmpTransport",
    "command",
    "describe",
    "step_objects",
    "undo_command",
    "undo_steps",
]
