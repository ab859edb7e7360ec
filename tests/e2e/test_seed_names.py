"""Every name of Kata's device package is importable where docs/seed-names.md says (all
distributions installed, as in this suite's environment)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "seed-names.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| `from (?P<module>[\w.]+) import (?P<attr>\w+)`(?P<rest>[^|]*)\|$")


def rows() -> list[tuple[str, str, str]]:
    found = [(m["name"], m["module"], m["attr"]) for line in DOC.read_text(encoding="utf-8").splitlines()
             if (m := ROW.match(line))]
    return found


def test_the_table_has_a_row_for_every_seed_model_and_helper() -> None:
    names = " ".join(name for name, _, _ in rows())
    for seed in ("DeviceInfo", "BlockDrive", "VFIODev", "VFIODeviceType", "VhostUserDeviceAttrs", "RNGDev",
                 "GetHostPath", "GetVhostUserNodeStat", "PmemDeviceInfo", "SysDevPrefix", "SetLogger"):
        assert f"`{seed}`" in names, seed


@pytest.mark.parametrize(("name", "module", "attr"), rows(), ids=[r[0] for r in rows()])
def test_each_seed_name_imports_as_documented(name: str, module: str, attr: str) -> None:
    assert hasattr(importlib.import_module(module), attr), f"{name}: from {module} import {attr}"
