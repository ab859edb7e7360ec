"""Kata's own configuration file through vmdev into a real guest: the pieces.

* :data:`KATA_QEMU`: Kata 4.1.0's ``configuration-qemu.toml`` (Go runtime, amd64) as its Makefile
  renders it (tests/realworld/kata, read-only);
* :func:`loop_device`: ``losetup`` on a marked image (the guest finds the disk by its marker);
* :func:`podman_spec`: the config.json podman itself writes for ``podman create --device ...``
  (tests/realworld/rwinputs' private podman: no registry, private storage, removed afterwards);
* :func:`planned_daemon`: starts a plan's ``daemons`` entry exactly as given (its directories
  made first, as Kata makes them), waits for its socket and stops it by PID.

Missing programs or a failing podman FAIL the test with the reason; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vmdev_rig.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
KATA_QEMU = REPO / "tests" / "realworld" / "kata" / "go" / "amd64" / "configuration-qemu.toml"
#: QEMU 7.2's C virtiofsd (Debian package qemu-system-common)
C_VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
#: Kata's virtio_fs_extra_args in the C daemon's spelling (its Go files say --announce-submounts,
#: which only the Rust daemon knows; runtime-rs' files already use this form)
C_EXTRA_ARGS = ("--thread-pool-size=1", "-o", "announce_submounts")


class SupportError(RuntimeError):
    """A prerequisite of these tests is missing or failed (the message says which)."""


def require(program: str, package: str) -> str:
    found = shutil.which(program) if not program.startswith("/") else (program if Path(program).exists()
                                                                        else None)
    if found is None:
        raise SupportError(f"{program} is not installed: run `apt-get install --no-install-recommends {package}`")
    return found


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """``losetup --find --show image``; detached again on exit."""
    losetup = require("losetup", "mount")
    done = subprocess.run([losetup, "--find", "--show", str(image)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SupportError(f"losetup failed ({done.returncode}): {done.stderr.strip()}")
    node = done.stdout.strip()
    try:
        yield node
    finally:
        subprocess.run([losetup, "--detach", node], capture_output=True, check=False)


def _realworld() -> Any:
    """tests/realworld/rwinputs/engines.py (the real-world inputs' engine driver)."""
    path = str(REPO / "tests" / "realworld")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("rwinputs.engines")


def _image_tarball(workdir: Path) -> Path:
    """A one-file image (an empty executable /true; nothing is ever started)."""
    tarball = workdir / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("true")
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(b""))
    return tarball


def podman_spec(workdir: Path, *devices: str) -> dict[str, Any]:
    """The OCI spec podman writes for a container created with ``--device D`` for each device."""
    require("podman", "podman")
    require("runc", "runc")
    engines = _realworld()
    # rwinputs' Podman took its directory and now makes its own short one under /tmp (podman
    # refuses a long run root); both are accepted while that module settles
    takes_dir = bool(inspect.signature(engines.Podman).parameters)
    podman = engines.Podman(workdir / "podman") if takes_dir else engines.Podman()
    try:
        podman.load_image(_image_tarball(workdir))
        flags = [arg for device in devices for arg in ("--device", device)]
        _, text = podman.spec("vmdev-kata-e2e", flags)
    except engines.EngineError as exc:
        raise SupportError(str(exc)) from None
    finally:
        podman.cleanup()
    spec: dict[str, Any] = json.loads(text)
    return spec


@contextlib.contextmanager
def planned_daemon(entry: Mapping[str, Any], timeout: float = 15.0) -> Iterator[Daemon]:
    """Start ``[program, *args]`` of a plan's ``daemons`` entry as given; wait for its socket."""
    for directory in entry["directories"]:
        Path(directory).mkdir(parents=True, exist_ok=True)
    daemon = Daemon([entry["program"], *entry["args"]], ready=Path(entry["socket"]), timeout=timeout)
    try:
        yield daemon
    finally:
        daemon.stop()


def kata_flags(runtime_dir: Path, shared_dir: Path) -> list[str]:
    """vmdev's own flags that adapt Kata's file to this machine (and nothing else):

    ``--memory 256`` (a TCG guest; the file says 2048), the C virtiofsd Debian ships instead of
    Kata's /opt/kata/libexec/virtiofsd with Kata's extra arguments in its spelling, and the
    sandbox's runtime and shared directories in a temporary directory.
    """
    return [
        "--config", str(KATA_QEMU), "--memory", "256",
        "--virtio-fs-daemon", C_VIRTIOFSD,
        *[f"--virtio-fs-extra-arg={arg}" for arg in C_EXTRA_ARGS],
        "--runtime-dir", str(runtime_dir), "--shared-dir", str(shared_dir),
    ]
