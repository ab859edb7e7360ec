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
