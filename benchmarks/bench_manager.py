"""Speed of the device manager, printed as figures (run: python benchmarks/bench_manager.py).

Issue 13 (measured only: the manager and its state are being rewritten): one recorded change (a
generic device attached and released, each step saved to the state file) in a sandbox that already
holds 1,000 devices, against the same change in a sandbox of one device, as a paired ratio of CPU
time.

Measures, against the in-process fake QEMU (``vmdev.fakeqmp``), so the figures are vmdev's own cost:
* an attach + detach cycle that hot-plugs and unplugs (port discovery, two QMP steps each way),
  without a journal and with every change saved to a state file (what the CLI does),
* ``StateFile.save`` (encode, write, fsync, rename, fsync of the directory) and ``load`` for
  sandboxes of 1, 100 and 1000 devices,
* one ``vmdev attach`` + ``vmdev detach`` through the command line, process start included,
  against the fake QEMU served on a QMP socket.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from _timing import Report, cpu, paired, timed

from vmdev.fakehost import FakeHost
from vmdev.fakeqmp import FakeQemu, FakeQmpServer
from vmdev.manager import DeviceManager
from vmdev.models import DeviceInfo
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.qemu import QmpCommand
from vmdev.qmp import QmpHotPlugger
from vmdev.settings import SandboxSettings
from vmdev.state import Attachment, AttachPhase, DeviceRecord, SandboxState, StateFile


def sandbox_state(devices: int) -> SandboxState:
    records = [
        DeviceRecord(
            id=f"drive-{n:014x}", key=f"block 8:{n}", kind="block", plugin="block",
            container_path=f"/dev/vd{n}", host_path=f"/dev/sd{n}", device={"index": n}, ref_count=1,
            attach_count=1,
            attachment=Attachment(
                phase=AttachPhase.ATTACHED, buses=[f"rp{n}"],
                hotplug=[QmpCommand("blockdev-add", {"node-name": f"drive-{n:014x}", "driver": "raw"}),
                         QmpCommand("device_add", {"driver": "virtio-blk-pci", "id": f"virtio-{n}"})],
                unplug=[QmpCommand("device_del", {"id": f"virtio-{n}"})],
            ),
        )
        for n in range(devices)
    ]
    return SandboxState(settings=SandboxSettings(), devices=records)


def manager_cycle(tmp: Path, journal: bool) -> Callable[[], None]:
    qemu = FakeQemu().add_port("rp0").add_port("rp1")
    pm = PluginManager(LoadPolicy(only=("vmdev-rng",))).load()
    file = StateFile(tmp / f"cycle-{journal}.json")
    manager = DeviceManager(SandboxSettings(), plugins=pm, hotplugger=QmpHotPlugger(qemu),
                            journal=file.save if journal else None)

    def cycle() -> None:
        manager.add_sandbox_device("rng")
        manager.release_device("rng0")

    return cycle


def change_in_sandbox(tmp: Path, devices: int) -> Callable[[], float]:
    """CPU seconds of one attach and detach, each journaled to a state file, in a sandbox that
    already holds ``devices`` generic devices (built through the public manager API)."""
    host = FakeHost(tmp / f"host-{devices}")
    host.dev_file("urandom")
    for minor in range(devices + 1):
        host.char_device(500, minor, f"held{minor}")
    pm = PluginManager(LoadPolicy(only=("vmdev-rng",))).load()
    file = StateFile(tmp / f"sandbox-{devices}.json")
    manager = DeviceManager(SandboxSettings(), host=host.context(), plugins=pm, journal=file.save)
    for minor in range(devices):
        info = DeviceInfo(container_path=f"/dev/held{minor}", dev_type="c", major=500, minor=minor)
        manager.add_device(info)

    extra = DeviceInfo(container_path="/dev/extra", dev_type="c", major=500, minor=devices)

    def change() -> None:
        manager.release_device(manager.add_device(extra).id)

    return lambda: cpu(change)


def cli_cycle(tmp: Path, vmdev: str) -> Callable[[], None]:
    state = tmp / "cli.json"
    common = ["--state", str(state), "--qmp", str(tmp / "q.sock"), "--sandbox-device", "rng"]

    def cycle() -> None:
        for command in ("attach", "detach"):
            subprocess.run([vmdev, command, *common], check=True, capture_output=True,
                           env={"VMDEV_PLUGINS": "vmdev-rng", "PATH": "/usr/bin:/bin"})

    return cycle


def main() -> None:
    print(f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="vmb") as name:
        tmp = Path(name)
        small, large = change_in_sandbox(tmp, 1), change_in_sandbox(tmp, 1000)
        Report().ratio("one recorded change: sandbox of 1 device -> of 1,000 devices (measured only)",
                       paired(small, large, 7))
        for journal in (False, True):
            med, best = timed(manager_cycle(tmp, journal), 200)
            label = "each change saved to a state file" if journal else "no journal"
            print(f"attach + detach with hot plug and unplug ({label}): median {med * 1000:.2f} ms, "
                  f"best {best * 1000:.2f} ms")
        for devices in (1, 100, 1000):
            file = StateFile(tmp / f"s{devices}.json")
            state = sandbox_state(devices)
            med, best = timed(partial(file.save, state), 20)
            size = file.path.stat().st_size
            lmed, _ = timed(file.load, 20)
            print(f"state of {devices:4d} devices ({size / 1024:.0f} KiB): save median {med * 1000:.2f} ms "
                  f"(best {best * 1000:.2f}), load median {lmed * 1000:.2f} ms")
        vmdev = str(Path(sys.executable).with_name("vmdev"))
        fake: Any = FakeQemu().add_port("rp0")
        with FakeQmpServer(fake, tmp / "q.sock"):
            med, best = timed(cli_cycle(tmp, vmdev), 5)
        print(f"vmdev attach + vmdev detach (two processes, fake QEMU): median {med * 1000:.0f} ms, "
              f"best {best * 1000:.0f} ms")


if __name__ == "__main__":
    main()
