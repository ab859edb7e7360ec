"""Helpers for vmdev-cdi's tests: spec directories under tmp_path and a fake stat(2)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from vmdev_cdi.testing import FakeStat


@pytest.fixture
def fake_stat() -> FakeStat:
    found = FakeStat()
    found.add("/dev/null", "c", 1, 3, 0o666)
    found.add("/dev/zero", "c", 1, 5, 0o666)
    return found


SpecDirs = Callable[..., list[str]]


@pytest.fixture
def spec_dirs(tmp_path: Path) -> SpecDirs:
    """``spec_dirs(etc={...}, run={...})``: the directories ``etc`` and ``run`` under tmp_path with
    these files (text is dedented), in that order of priority; a None directory is not created."""

    def make(etc: Mapping[str, str] | None = None, run: Mapping[str, str] | None = None) -> list[str]:
        dirs = []
        for name, files in (("etc", etc), ("run", run)):
            directory = tmp_path / name
            if files is not None:
                directory.mkdir(exist_ok=True)
                for file, text in files.items():
                    (directory / file).write_text(textwrap.dedent(text), encoding="utf-8")
            dirs.append(str(directory))
        return dirs

    return make
