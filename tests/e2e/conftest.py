"""Fixtures for vmdev's real-guest tests (QEMU under TCG booting a Debian kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmdev_rig import Rig, RigSetupError, check_prerequisites
from vmdev_rig import make_disk as write_disk
from vmdev_rig.images import MakeDisk


@pytest.fixture(scope="session")
def rig() -> Rig:
    """A ready Rig: guest kernel fetched, initramfs built (cached across runs).

    Missing prerequisites make the tests FAIL (never skip) with the command that fixes them.
    """
    try:
        ready = Rig(kernel=check_prerequisites())
        ready.prepare()
        return ready
    except RigSetupError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)  # outside `except`: no chained traceback noise


@pytest.fixture
def make_disk(tmp_path: Path) -> MakeDisk:
    """``make_disk(path, size_mib, marker) -> Path``: a raw image with ``marker`` at offset 0.

    A relative ``path`` is placed in the test's tmp_path. The guest reports the marker of every
    disk, which proves which backing file reached which guest disk.
    """

    def make(path: str | Path, size_mib: int, marker: str) -> Path:
        target = Path(path)
        return write_disk(target if target.is_absolute() else tmp_path / target, size_mib, marker)

    return make
