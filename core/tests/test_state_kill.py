"""A process killed in the middle of save(), many times at random points: the file always loads
as the old or the new state, never as a mix or as garbage."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmdev.qemu import QmpCommand
from vmdev.settings import SandboxSettings
from vmdev.state import Attachment, AttachPhase, DeviceRecord, SandboxState, StateFile, encode

#: kills at least; more (up to MAX_KILLS) until WRITE_KILLS of them hit a temporary file being written
KILLS = 30
WRITE_KILLS = 3
MAX_KILLS = 200

#: saves the two states in turn, forever, until it is killed
WRITER = """
import sys
from pathlib import Path
from vmdev.state import StateFile, decode

path, first, second = sys.argv[1:4]
states = [decode(Path(first).read_bytes()), decode(Path(second).read_bytes())]
target = StateFile(path)
print("ready", flush=True)
while True:
    for state in states:
        target.save(state)
"""


def big_state(tag: str, devices: int = 200, blob_mib: int = 12) -> SandboxState:
    """A state large enough (some MiB, in a setting) that writing it takes tens of milliseconds."""
    records = [
        DeviceRecord(
            id=f"drive-{tag}-{n}",
            key=f"block 8:{n}",
            kind="block",
            plugin="block",
            container_path=f"/dev/{tag}{n}",
            host_path=f"/dev/sd{n}",
            device={"id": f"drive-{tag}-{n}", "index": n, "tag": tag},
            ref_count=1 + n % 3,
            attach_count=n % 2,
            attachment=Attachment(
                phase=AttachPhase.ATTACHED,
                hotplug=[QmpCommand("blockdev-add", {"node-name": f"drive-{tag}-{n}", "driver": "raw"})],
                unplug=[QmpCommand("blockdev-del", {"node-name": f"drive-{tag}-{n}"})],
            ) if n % 2 else None,
        )
        for n in range(devices)
    ]
    blob = tag[0] * (blob_mib * 1024 * 1024)
    return SandboxState(settings=SandboxSettings(options={"tag": tag, "blob": blob}), devices=records,
                        allocations={"block.index": {str(n): f"{tag}{n}" for n in range(devices)}})


def test_killing_save_at_random_points_leaves_the_old_or_the_new_state(tmp_path: Path) -> None:
    old, new = big_state("old"), big_state("new")
    (tmp_path / "old.json").write_bytes(encode(old))
    (tmp_path / "new.json").write_bytes(encode(new))
    state_dir = tmp_path / "sandbox"
    target = StateFile(state_dir / "state.json")
    target.save(old)
    rng = random.Random(20261125)
    seen = {"old": 0, "new": 0}
    interrupted_writes = kills = 0
    while kills < KILLS or (interrupted_writes < WRITE_KILLS and kills < MAX_KILLS):
        kills += 1
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target.path), str(tmp_path / "old.json"), str(tmp_path / "new.json")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
        temps = [name for name in os.listdir(state_dir) if name.startswith(".state.json.tmp-")]
        interrupted_writes += bool(temps)
        loaded = target.load()  # never raises: the file is complete
        assert loaded in (old, new)
        seen["old" if loaded == old else "new"] += 1
    # the kills hit the writes themselves (a temporary file was left behind) and both outcomes occurred
    assert interrupted_writes >= WRITE_KILLS, f"only {interrupted_writes} of {kills} kills hit a write"
    assert seen["old"] > 0 and seen["new"] > 0, seen
    target.save(new)  # the next save of a live process removes what the killed ones left
    assert os.listdir(state_dir) == ["state.json"]


# --- the journal ---------------------------------------------------------------------------------------
#: changes one of three devices per step (generation ``gen`` goes to ``dev{gen % 3}``, with a blob that
#: says the generation in every byte) and prints ``ack <gen>`` once the journal has it; started with
#: ``<call>:<n>`` it is killed at the n-th call of ``os.<call>`` (``write``: after writing half)
JOURNAL_WRITER = """
import os, signal, sys
from vmdev.settings import SandboxSettings
from vmdev.state import DeviceRecord, SandboxState, StateChange, StateFile, StateJournal

path, blob, crash, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def record(gen):
    return DeviceRecord(id=f"dev{gen % 3}", key=f"k{gen % 3}", kind="block", plugin="block", container_path=None,
                        host_path="", device={"gen": gen, "blob": chr(97 + gen % 26) * blob})

if crash != "-":
    name, count = crash.split(":")
    real, calls = getattr(os, name), [0]
    def dying(*args):
        calls[0] += 1
        if calls[0] == int(count):
            if name == "write":
                real(args[0], bytes(args[1][: len(args[1]) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    setattr(os, name, dying)
file = StateFile(path)
with file.locked():
    state = file.load()
    journal = StateJournal(file)
    journal.begin(state, continues=True)
    gen = max(r.device["gen"] for r in state.devices)
    print("ready", gen, flush=True)
    while steps:
        steps -= 1
        gen += 1
        devices = {r.id: r for r in state.devices}
        devices[f"dev{gen % 3}"] = record(gen)
        after = SandboxState(settings=state.settings, devices=tuple(devices.values()))
        journal.record(StateChange(put=[devices[f"dev{gen % 3}"]]), lambda: after)
        state = after
        print("ack", gen, flush=True)
"""
JOURNAL_BLOB = 256 * 1024


def generation_state(path: Path, blob: int = JOURNAL_BLOB) -> SandboxState:
    """Three devices at generations 0, 1 and 2, saved to ``path``."""
    state = SandboxState(settings=SandboxSettings(), devices=[
        DeviceRecord(id=f"dev{gen}", key=f"k{gen}", kind="block", plugin="block", container_path=None,
                     host_path="", device={"gen": gen, "blob": chr(97 + gen) * blob})
        for gen in range(3)
    ])
    StateFile(path).save(state)
    return state


def journal_writer(path: Path, crash: str = "-", steps: int = -1) -> subprocess.Popen[str]:
    writer = subprocess.Popen([sys.executable, "-c", JOURNAL_WRITER, str(path), str(JOURNAL_BLOB), crash, str(steps)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    return writer


def acknowledged(output: str) -> int:
    """The last generation the writer had on the disk (acknowledged, or loaded when it started).
    Only whole lines count: the writer may be killed in the middle of printing one."""
    lines = [line.split() for line in output.splitlines(keepends=True) if line.endswith("\n")]
    return max(int(words[1]) for words in lines if len(words) == 2 and words[0] in ("ack", "ready"))


def check_generations(path: Path, acked: int) -> int:
    """The state loads (never an error), is the one after some change (never a mix), and holds every
    acknowledged change (at most the one in flight more); its newest generation."""
    state = StateFile(path).load()
    gens = [record.device["gen"] for record in state.devices]
    newest = max(gens)
    assert sorted(gens) == [newest - 2, newest - 1, newest], gens
    for record in state.devices:
        gen = record.device["gen"]
        assert record.id == f"dev{gen % 3}" and record.device["blob"] == chr(97 + gen % 26) * JOURNAL_BLOB
    assert acked <= newest <= acked + 1, (acked, newest)
    return newest


def crash_marks(path: Path) -> tuple[bool, bool]:
    """(a torn last line, a temporary file of an interrupted compaction) left in ``path``'s directory."""
    torn = not path.read_bytes().endswith(b"\n")
    temp = any(name.startswith(f".{path.name}.tmp-") for name in os.listdir(path.parent))
    return torn, temp


@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
def test_a_journal_killed_at_any_write_loads_as_before_or_after_the_change(tmp_path: Path, call: str) -> None:
    path = tmp_path / "state.json"
    generation_state(path)
    marks = set()
    for count in range(1, 9):  # appends and compactions alternate: 256 KiB lines, a 768 KiB snapshot
        writer = journal_writer(path, f"{call}:{count}")
        output, _ = writer.communicate(timeout=60)
        assert writer.returncode == -signal.SIGKILL, output
        marks.add(crash_marks(path))
        newest = check_generations(path, acknowledged(output))
        for steps in (1, 3):  # a torn line or a stale temporary file is no obstacle to the next changes
            after = journal_writer(path, steps=steps)
            output, _ = after.communicate(timeout=60)
            newest += steps
            assert after.returncode == 0 and check_generations(path, acknowledged(output)) == newest
            assert crash_marks(path) == (False, False)
    if call == "write":  # half an append and half a compaction were each left behind at some count
        assert (True, False) in marks and (False, True) in marks, marks


def test_killing_a_journal_at_random_points_keeps_every_acknowledged_change(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    generation_state(path)
    rng = random.Random(20261130)
    newest = 2
    for _ in range(15):
        writer = journal_writer(path)
        try:
            assert writer.stdout is not None
            ready = writer.stdout.readline()
            assert ready.startswith("ready")
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            output, _ = writer.communicate()
        newest = check_generations(path, acknowledged(ready + output))
    assert newest > 2  # the writers got on (each started from what the killed one left)
