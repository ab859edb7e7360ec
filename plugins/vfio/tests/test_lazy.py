"""Loading vmdev-vfio costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-vfio installed, and lists the family's modules it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_vfio", "vmdev_vfio.kinds", "vmdev_vfio.plugin", "vmdev_vfio.settings"]

_PROBE = """
import json, sys
import attr._make as make
built = []
build_class = make._ClassBuilder.build_class
def counting(self):
    cls = build_class(self)
    built.append(cls.__module__)
    return cls
make._ClassBuilder.build_class = counting
from vmdev.plugins import PluginManager
if sys.argv[1:]:
    from vmdev.cli import main
    try:
        main(sys.argv[1:], standalone_mode=False)
    except SystemExit as exc:  # an error is a failed plan, not a measurement
        if exc.code:
            raise
else:
    PluginManager().load()
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m == "vmdev_vfio" or m.startswith("vmdev_vfio.")),
    "classes": sorted(m for m in built if m.startswith("vmdev_vfio")),
}))
"""


def probe(tmp_path: Path, *args: str) -> dict[str, list[str]]:
    """The family's modules and attrs classes after loading vmdev-vfio (and running ``vmdev args``)."""
    env = {**os.environ, "VMDEV_PLUGINS": "vmdev-vfio"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    found: dict[str, list[str]] = json.loads(out.splitlines()[-1])
    return found


@pytest.fixture
def null_plan(tmp_path: Path) -> list[str]:
    """``vmdev plan`` arguments for a spec of one /dev/null (char 1:3) on a fake sysfs."""
    uevent = tmp_path / "sys" / "dev" / "char" / "1:3" / "uevent"
    uevent.parent.mkdir(parents=True)
    uevent.write_text("MAJOR=1\nMINOR=3\nDEVNAME=null\n")
    spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/"}, "root": {"path": "rootfs"},
            "linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return ["plan", "--format", "json", "--sysfs-root", str(tmp_path / "sys"), str(tmp_path / "spec.json")]


def test_loading_the_plugin_imports_none_of_the_family_modules(tmp_path: Path) -> None:
    assert probe(tmp_path) == {"modules": LIGHT, "classes": []}


@pytest.mark.parametrize("hypervisor", ["qemu", "cloud-hypervisor", "firecracker"])
def test_a_plan_of_dev_null_imports_none_of_the_family_modules(
        tmp_path: Path, null_plan: list[str], hypervisor: str) -> None:
    assert probe(tmp_path, *null_plan, "--hypervisor", hypervisor) == {"modules": LIGHT, "classes": []}


def test_the_vfio_control_node_is_declined_without_importing_the_family(
        tmp_path: Path, null_plan: list[str]) -> None:
    uevent = tmp_path / "sys" / "dev" / "char" / "10:196" / "uevent"
    uevent.parent.mkdir(parents=True)
    uevent.write_text("MAJOR=10\nMINOR=196\nDEVNAME=vfio/vfio\n")
    spec = json.loads(Path(null_plan[-1]).read_text())
    spec["linux"]["devices"].append({"path": "/dev/vfio/vfio", "type": "c", "major": 10, "minor": 196})
    Path(null_plan[-1]).write_text(json.dumps(spec))
    assert probe(tmp_path, *null_plan) == {"modules": LIGHT, "classes": []}
