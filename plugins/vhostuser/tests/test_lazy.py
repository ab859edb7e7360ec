"""Loading vmdev-vhostuser costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-vhostuser installed, and lists the family's modules it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_vhostuser", "vmdev_vhostuser.kinds", "vmdev_vhostuser.plugin", "vmdev_vhostuser.settings"]

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
    "modules": sorted(m for m in sys.modules if m == "vmdev_vhostuser" or m.startswith("vmdev_vhostuser.")),
    "classes": sorted(m for m in built if m.startswith("vmdev_vhostuser")),
}))
"""


def probe(tmp_path: Path, *args: str) -> dict[str, list[str]]:
    """The family's modules and attrs classes after loading vmdev-vhostuser (and running ``vmdev args``)."""
    env = {**os.environ, "VMDEV_PLUGINS": "vmdev-vhostuser"}
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


def test_an_enabled_store_and_no_share_import_none_of_the_family_modules(
        tmp_path: Path, null_plan: list[str]) -> None:
    # the store claims only majors 241 and 242; "none" asks for no share
    args = [*null_plan, "--vhost-user-store", str(tmp_path / "store"), "--shared-fs", "none"]
    assert probe(tmp_path, *args) == {"modules": LIGHT, "classes": []}


def test_a_9p_share_imports_only_its_model_and_the_renderer_of_its_backend(
        tmp_path: Path, null_plan: list[str]) -> None:
    found = probe(tmp_path, *null_plan, "--shared-fs", "virtio-9p", "--shared-dir", str(tmp_path))
    wanted = ["vmdev_vhostuser.config", "vmdev_vhostuser.device", "vmdev_vhostuser.render_qemu"]
    assert found["modules"] == sorted([*LIGHT, *wanted])
