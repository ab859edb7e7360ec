"""Helpers for the device manager's real-guest tests: the real ``vmdev attach/detach/status`` CLI on
a sandbox (state file + a QMP socket of its own), a paused QEMU without a guest for fault
injection, and snapshots of what QEMU holds (block nodes, chardevs, objects, devices).

A QMP socket serves one client at a time, so the guest gets a second ``-qmp`` socket for vmdev
(:func:`qmp_args`); the rig keeps its own. Missing prerequisites fail the test with the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vmdev_cli import run_vmdev

QEMU = "qemu-system-x86_64"
#: QMP: run one command, return its result
Execute = Callable[[str, Mapping[str, Any] | None], Any]


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (UNIX socket paths hold 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vmm-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def qmp_args(socket: Path) -> list[str]:
    """A QMP monitor of its own for vmdev (QEMU accepts several ``-qmp`` options)."""
    return ["-qmp", f"unix:{socket},server=on,wait=off"]


@dataclass(frozen=True)
class Sandbox:
    """One sandbox as the CLI sees it: its state file and its QMP socket."""

    state: Path
    qmp: Path

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_vmdev(command, "--state", str(self.state), "--qmp", str(self.qmp), *args)

    def ok(self, command: str, *args: str) -> dict[str, Any]:
        """``vmdev COMMAND --state S --qmp Q ARGS --json``: must succeed; its JSON."""
        done = self.run(command, *args, "--json")
        assert done.returncode == 0, f"vmdev {command} failed ({done.returncode}): {done.stderr.strip()}"
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def fails(self, command: str, *args: str) -> str:
        """``vmdev COMMAND ...``: must fail with exit status 1 and one line on stderr; that line."""
        done = self.run(command, *args)
        assert done.returncode == 1, f"expected exit 1, got {done.returncode}: {done.stdout}{done.stderr}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vmdev: error: "), done.stderr
        return lines[0]


def holdings(execute: Execute) -> dict[str, set[str]]:
    """What QEMU holds that a hot plug creates: block nodes, chardevs, QOM objects and devices."""
    nodes = {str(n.get("node-name")) for n in execute("query-named-block-nodes", None)}
    chardevs = {str(c.get("label")) for c in execute("query-chardev", None)}

    def children(path: str) -> set[str]:
        return {str(p["name"]) for p in execute("qom-list", {"path": path}) if str(p["type"]).startswith("child<")}

    return {
        "nodes": nodes,
        "chardevs": chardevs,
        "objects": children("/objects"),
        "devices": children("/machine/peripheral"),
    }


def added_since(before: Mapping[str, set[str]], after: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """What ``after`` holds that ``before`` did not (empty sets: nothing left behind)."""
    return {key: set(after[key]) - set(before[key]) for key in before}


@dataclass
class PausedQemu:
    """A QEMU that builds the machine and waits (``-S``): no guest, QMP on ``socket``."""

    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def paused_qemu(argv: Sequence[str], directory: Path) -> Iterator[PausedQemu]:
    """``qemu-system-x86_64 -S`` (TCG) with ``argv`` and a QMP socket in ``directory``."""
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} is not installed. Fix: `apt-get install --no-install-recommends qemu-system-x86`",
                    pytrace=False)
    socket, log = directory / "qmp.sock", directory / "qemu.log"
    cmd = [QEMU, "-S", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", *argv,
           *qmp_args(socket)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    qemu = PausedQemu(proc, socket, log)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"QEMU did not start: {log.read_text(errors='replace')}", pytrace=False)
            time.sleep(0.02)
        yield qemu
    finally:
        qemu.kill()
