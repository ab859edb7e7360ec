"""Loading vmdev-rng costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-rng installed, and lists the family's modules it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_rng", "vmdev_rng.kinds", "vmdev_rng.plugin", "vmdev_rng.settings"]

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
    "modules": sorted(m for m in sys.modules if m == "vmdev_rng" or m.startswith("vmdev_rng.")),
    "classes": sorted(m for m in built if m.startswith("vmdev_rng")),
}))
"""


def probe(tmp_path: Path, *args: str) -> dict[str, list[str]]:
    """The family's modules and attrs classes after loading vmdev-rng (and running ``vmdev args``)."""
    env = {**os.environ, "VMDEV_PLUGINS": "vmdev-rng"}
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


def test_a_plan_without_an_rng_imports_no_device_model(tmp_path: Path, null_plan: list[str]) -> None:
    # an s390x CCW guest gets no RNG (as in Kata): nothing of the family beyond the light modules
    assert probe(tmp_path, *null_plan, "--machine-type", "s390-ccw-virtio") == {"modules": LIGHT, "classes": []}


@pytest.mark.parametrize(("hypervisor", "renderer"), [
    ("qemu", "render_qemu"), ("cloud-hypervisor", "render_clh"), ("firecracker", "render_firecracker"),
])
def test_a_plan_with_the_rng_imports_only_the_renderer_of_its_backend(
        tmp_path: Path, null_plan: list[str], hypervisor: str, renderer: str) -> None:
    found = probe(tmp_path, *null_plan, "--hypervisor", hypervisor)
    wanted = ["vmdev_rng.device", "vmdev_rng.host", f"vmdev_rng.{renderer}"]
    assert found == {"modules": sorted([*LIGHT, *wanted]), "classes": ["vmdev_rng.device"]}
