"""QmpSession and QmpHotPlugger against a hostile or broken QMP peer: whatever it sends, vmdev ends with
a one-line QmpError naming what went wrong, in time, and never with a traceback, a hang or an
internal error. The peer is a scripted monitor on a UNIX socket in tmp_path, run by a thread."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from vmdev import qmp
from vmdev.qmp import QmpCommandError, QmpConnectionError, QmpError, QmpHotPlugger, QmpSession

GREETING = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\n'
DEEP = b"[" * 100_000 + b"]" * 100_000 + b"\n"
Script = Callable[[socket.socket, BinaryIO], None]


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "qmp.sock"


@pytest.fixture(autouse=True)
def thread_failures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every exception that ends a thread (the reader thread must never die of one)."""
    failures: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(repr(args.exc_value)))
    yield failures
    assert failures == []


def peer(path: Path, script: Script) -> threading.Thread:
    """A monitor that runs ``script(conn, reader)`` for its one client, from the first byte on."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server, contextlib.suppress(OSError):  # the client hung up
            script(conn, conn.makefile("rb"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def send(conn: socket.socket, message: Any) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def greet(conn: socket.socket, reader: BinaryIO) -> None:
    conn.sendall(GREETING)
    send(conn, {"return": {}, "id": json.loads(reader.readline())["id"]})


def answering(make: Callable[[str], bytes]) -> Script:
    """A monitor that greets, then answers each command with ``make(its id)``."""
    def script(conn: socket.socket, reader: BinaryIO) -> None:
        greet(conn, reader)
        for line in reader:
            conn.sendall(make(json.loads(line)["id"]))

    return script


def sends(wire: bytes, *, greeting: bool = True) -> Script:
    """A monitor that greets unless told not to, sends ``wire`` (after the first command when it
    greeted), then waits for the client to hang up."""
    def script(conn: socket.socket, reader: BinaryIO) -> None:
        if greeting:
            greet(conn, reader)
            reader.readline()
        conn.sendall(wire)
        reader.readline()

    return script


def one_line(error: QmpError, sock: Path) -> str:
    text = str(error)
    assert "\n" not in text and error.device == str(sock) and error.field == "qmp"
    return text


# --- the greeting --------------------------------------------------------------------------------------
def test_a_greeting_dripped_a_byte_at_a_time_still_times_out_on_time(sock: Path) -> None:
    def drip(conn: socket.socket, reader: BinaryIO) -> None:
        for _ in range(200):
            conn.sendall(b" ")
            time.sleep(0.05)

    peer(sock, drip)
    start = time.monotonic()
    with pytest.raises(QmpConnectionError, match=r"QEMU did not greet within 0\.3 s") as exc:
        QmpSession.connect(str(sock), timeout=0.3)
    assert time.monotonic() - start < 2.0
    one_line(exc.value, sock)


def test_a_greeting_nested_too_deeply_is_refused_in_one_line(sock: Path) -> None:
    peer(sock, sends(DEEP, greeting=False))
    with pytest.raises(QmpConnectionError) as exc:
        QmpSession.connect(str(sock), timeout=5.0)
    assert one_line(exc.value, sock).endswith(
        "cannot connect to QEMU's QMP socket: QEMU sent JSON nested too deeply to read"
    )


def test_a_peer_that_hangs_up_before_greeting_is_named(sock: Path) -> None:
    peer(sock, lambda conn, reader: None)
    with pytest.raises(QmpConnectionError, match="cannot connect to QEMU's QMP socket: QEMU closed the connection"):
        QmpSession.connect(str(sock), timeout=5.0)


# --- messages the reader thread cannot file ----------------------------------------------------------
@pytest.mark.parametrize(("wire", "reason"), [
    (DEEP, "QEMU sent JSON nested too deeply to read"),
    (b'[1, 2]\n', "QEMU sent [1, 2] (expected a JSON object)"),
    (b'{"event": "DEVICE_DELETED", "data": [1]}\n',
     'QEMU sent an event {"event": "DEVICE_DELETED", "data": [1]} (expected an event name and a data object)'),
    (b'{"event": 5}\n', 'QEMU sent an event {"event": 5} (expected an event name and a data object)'),
    (b'"' + b"a" * 2**21, "QEMU sent a message longer than 1 MiB"),
])
def test_a_message_the_reader_cannot_file_ends_the_connection_and_the_waiting_command_at_once(
    sock: Path, monkeypatch: pytest.MonkeyPatch, wire: bytes, reason: str
) -> None:
    monkeypatch.setattr(qmp, "_MAX_MESSAGE", 2**20)
    peer(sock, sends(wire))
    with QmpSession.connect(str(sock), timeout=5.0) as session:
        start = time.monotonic()
        with pytest.raises(QmpConnectionError) as exc:
            session.execute("query-status", timeout=5.0)
        assert time.monotonic() - start < 2.0
    assert one_line(exc.value, sock).endswith(f"connection to QEMU lost during query-status: {reason}")


def test_a_wait_for_an_event_ends_as_soon_as_the_connection_is_lost(sock: Path) -> None:
    def script(conn: socket.socket, reader: BinaryIO) -> None:
        greet(conn, reader)
        time.sleep(0.2)
        conn.sendall(DEEP)
        reader.readline()

    peer(sock, script)
    with QmpSession.connect(str(sock), timeout=5.0) as session:
        start = time.monotonic()
        with pytest.raises(QmpConnectionError) as exc:
            session.wait_event("DEVICE_DELETED", {"device": "d0"}, after=session.event_mark(), timeout=5.0)
        assert time.monotonic() - start < 2.0
    assert one_line(exc.value, sock).endswith(
        "connection to QEMU lost while waiting for DEVICE_DELETED: QEMU sent JSON nested too deeply to read"
    )


def test_answers_to_commands_nobody_asked_are_dropped(sock: Path) -> None:
    def script(conn: socket.socket, reader: BinaryIO) -> None:
        greet(conn, reader)
        for line in reader:
            for ident in ("vmdev-99", 5, ["x"]):
                send(conn, {"return": "spoofed", "id": ident})
            send(conn, {"return": "ok", "id": json.loads(line)["id"]})

    peer(sock, script)
    with QmpSession.connect(str(sock), timeout=5.0) as session:
        assert session.execute("query-status", timeout=5.0) == "ok"
        assert session.execute("query-status", timeout=5.0) == "ok"
        assert session._answers == {}


# --- answers of the wrong shape --------------------------------------------------------------------------
@pytest.mark.parametrize(("answer", "expected"), [
    ({"error": ["x"]}, 'QEMU answered query-status with error ["x"] (expected an object with class and desc '
                       'strings)'),
    ({"error": {"class": "GenericError", "desc": 5}}, "QEMU answered query-status with error"),
    ({"error": {"class": [], "desc": "no"}}, "QEMU answered query-status with error"),
    ({"result": 1}, 'QEMU answered query-status with {"result": 1, "id": "vmdev-2"} (expected a return or an '
                    "error)"),
])
def test_an_answer_of_the_wrong_shape_is_a_connection_error_naming_the_command(
    sock: Path, answer: dict[str, Any], expected: str
) -> None:
    peer(sock, answering(lambda ident: json.dumps({**answer, "id": ident}).encode() + b"\n"))
    with QmpSession.connect(str(sock), timeout=5.0) as session, pytest.raises(QmpConnectionError) as exc:
        session.execute("query-status", timeout=5.0)
    assert f"qmp: {expected}" in one_line(exc.value, sock)


def test_an_error_that_would_forge_log_lines_is_escaped_in_one_line(sock: Path) -> None:
    bad = {"error": {"class": "GenericError\nX", "desc": "bad\nforged: line\x1b[2J"}}
    peer(sock, answering(lambda ident: json.dumps({**bad, "id": ident}).encode() + b"\n"))
    with QmpSession.connect(str(sock), timeout=5.0) as session, pytest.raises(QmpCommandError) as exc:
        session.execute("query-status", timeout=5.0)
    assert one_line(exc.value, sock) == rf"{sock}: qmp: QEMU refused query-status: bad\nforged: line\x1b[2J (GenericError\nX)"


@pytest.mark.parametrize("returned", [
    [1, "x", None, {"name": 5, "type": []}],
    "str",
    {"name": "rp0", "type": "child<pcie-root-port>"},
    [{"name": "rp0"}],
])
def test_a_qom_list_of_the_wrong_shape_is_reported_not_an_internal_error(sock: Path, returned: Any) -> None:
    peer(sock, answering(lambda ident: json.dumps({"return": returned, "id": ident}).encode() + b"\n"))
    with QmpSession.connect(str(sock), timeout=5.0) as session, pytest.raises(QmpConnectionError) as exc:
        QmpHotPlugger(session, command_timeout=5.0).free_ports()
    assert one_line(exc.value, sock).startswith(
        f"{sock}: qmp: QEMU answered qom-list with {json.dumps(returned)[:40]}"
    )
    assert exc.value.message.endswith("(expected a list of objects with name and type strings)")


@pytest.mark.parametrize(("undo", "query"), [
    ({"execute": "blockdev-del", "arguments": {"node-name": "drive-a"}}, "query-named-block-nodes"),
    ({"execute": "chardev-remove", "arguments": {"id": "chr0"}}, "query-chardev"),
])
def test_a_query_of_the_wrong_shape_during_cleanup_is_reported(sock: Path, undo: Any, query: str) -> None:
    peer(sock, answering(lambda ident: json.dumps({"return": [{"node-name": 1}, "x"], "id": ident}).encode()
                         + b"\n"))
    with QmpSession.connect(str(sock), timeout=5.0) as session, pytest.raises(QmpConnectionError) as exc:
        QmpHotPlugger(session, command_timeout=5.0).presence([undo | {"execute": _creating(undo)}])
    assert f"QEMU answered {query} with" in one_line(exc.value, sock)


def _creating(undo: Any) -> str:
    return {"blockdev-del": "blockdev-add", "chardev-remove": "chardev-add"}[undo["execute"]]
