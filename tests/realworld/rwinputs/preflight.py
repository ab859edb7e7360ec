"""The QEMU pre-flight: a real QEMU builds (never runs: ``-S``) the machine a plan describes.

It uses the e2e rig (``tests/e2e/vmdev_rig``, read-only use): ``Rig.dry_run`` starts
``qemu-system-<arch> -S -nodefaults -no-user-config -display none -accel tcg -qmp stdio <argv>``
and quits over QMP; ``Rig.qmp_oneshot`` does the same and first sends the plan's hot-plug QMP
commands, so a hot plan is checked with its devices really added. The binary follows the plan's
machine type (``s390-ccw-virtio`` needs ``qemu-system-s390x``). Identical plans are checked once.

A plan's ``daemons`` (the virtiofsd that serves its virtio-fs share) must be listening before
QEMU starts, and a virtio-9p share's directory must exist, as Kata provides both. Their program (Kata's Rust virtiofsd under /opt/kata) is not
installed here, so each is stood in for by the host's virtiofsd (the rig's ``virtiofsd_command``,
QEMU's C virtiofsd) on a socket in a private directory: the socket path is replaced by that one,
the same way in the QEMU arguments and the hot-plug commands, so that a run never touches the
plan's /run/vc or /run/kata-containers and two runs never share a socket. A 9p share's directory
is likewise an empty directory of its own. Nothing else changes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from vmdev_rig import Rig, RigError
from vmdev_rig.argv import machine_type
from vmdev_rig.daemon import Daemon, virtiofsd_command

BINARIES: Final = {"x86_64": "qemu-system-x86_64", "s390x": "qemu-system-s390x"}


def binary_for(argv: Sequence[str]) -> str:
    return BINARIES["s390x"] if machine_type(argv).startswith("s390-ccw") else BINARIES["x86_64"]


class Preflight:
    """Runs and remembers pre-flights (thread-safe; one QEMU per distinct plan)."""

    def __init__(self) -> None:
        self._results: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self.runs = 0

    def check(self, plan: Mapping[str, Any], qemu_part: Mapping[str, Any], *, hotplug: bool) -> str | None:
        """None when QEMU accepted the plan, else QEMU's complaint (one paragraph)."""
        argv = list(qemu_part.get("argv") or [])
        commands = list(qemu_part.get("hotplug") or []) if hotplug else []
        daemons = list(plan.get("daemons") or [])
        shares = sorted({str(d.get("host_path")) for d in plan.get("devices") or []
                         if d.get("kind") == "virtio-9p" and d.get("host_path")})
        key = json.dumps([argv, commands, [d.get("socket") for d in daemons], shares])
        with self._lock:
            if key in self._results:
                return self._results[key]
        result = self._run(argv, commands, daemons, shares)
        with self._lock:
            self._results[key] = result
            self.runs += 1
        return result

    @staticmethod
    def _run(argv: list[str], commands: list[Mapping[str, Any]], daemons: Sequence[Mapping[str, Any]],
             shares: Sequence[str]) -> str | None:
        with tempfile.TemporaryDirectory(prefix="vmdev-rw-pf-") as tmp:
            started: list[Daemon] = []
            try:
                moved: dict[str, str] = {}
                for index, share in enumerate(shares):
                    moved[share] = str(Path(tmp) / f"9p{index}")
                    Path(moved[share]).mkdir()
                for index, planned in enumerate(daemons):
                    socket = str(planned.get("socket") or "")
                    if not socket:
                        continue
                    if "virtiofsd" not in f"{planned.get('id', '')} {planned.get('program', '')}":
                        return f"no stand-in for the planned daemon {planned.get('id')!r} ({planned.get('program')})"
                    source = Path(tmp) / f"share{index}"
                    source.mkdir()
                    stand_in = Path(tmp) / f"daemon{index}.sock"
                    moved[socket] = str(stand_in)
                    started.append(Daemon(virtiofsd_command(stand_in, source), ready=stand_in))
                return _qemu(_moved(argv, moved), _moved(commands, moved))
            except RigError as exc:
                return f"{type(exc).__name__}: {exc}"
            finally:
                for running in started:
                    running.stop()


def _moved(value: Any, moved: Mapping[str, str]) -> Any:
    text = json.dumps(value)
    for old, new in sorted(moved.items(), key=lambda item: -len(item[0])):  # longest first: no prefix clash
        text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
    return json.loads(text)


def _qemu(argv: list[str], commands: list[Mapping[str, Any]]) -> str | None:
    rig = Rig(qemu=binary_for(argv))
    try:
        if not commands:
            rc, stderr = rig.dry_run(argv)
            return None if rc == 0 else f"QEMU exited {rc}: {stderr.strip()}"
        rig.qmp_oneshot([(c["execute"], c.get("arguments")) for c in commands], argv=argv)
        return None
    except RigError as exc:
        return f"{type(exc).__name__}: {exc}"


def missing_tools() -> list[str]:
    from vmdev_rig.daemon import VIRTIOFSD

    tools = {**{b: "qemu-system-x86" if "x86" in b else "qemu-system-misc" for b in BINARIES.values()},
             VIRTIOFSD: "qemu-system-common"}
    return [f"{tool} (Debian package {pkg})" for tool, pkg in tools.items() if shutil.which(tool) is None]
