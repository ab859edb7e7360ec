"""Every ``vmdev plan`` imports the entry module of every installed plugin, whatever the
hypervisor, so vmdev-libvirt's must register its backend without importing the render target, the
domain, the family renderers or the live driver (nor ``vmdev.state``, which the target needs).
Measured in a fresh interpreter planning for QEMU, against the same plan with no plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import vmdev_libvirt
from vmdev.plugins import PluginManager
from vmdev_libvirt.settings import SETTINGS

#: the modules of the family a QEMU plan may import: the entry module and its light settings
ALLOWED = {"vmdev_libvirt", "vmdev_libvirt.plugin", "vmdev_libvirt.settings", "vmdev_libvirt.constants"}

SCRIPT = """
import io, json, sys
from vmdev.cli import main
sys.argv = ["vmdev", "plan", "--format", "json", "--sysfs-root", sys.argv[1], sys.argv[2]]
out, sys.stdout = sys.stdout, io.StringIO()
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
plan, sys.stdout = sys.stdout.getvalue(), out
print(json.dumps({"code": code, "plan": plan, "modules": sorted(sys.modules)}))
"""


def plan_modules(tmp_path: Path, plugins: str) -> tuple[dict[str, Any], set[str]]:
    """Plan one /dev/null device for QEMU on a fake sysfs with only ``plugins`` loaded."""
    sysfs = tmp_path / "sys"
    (sysfs / "dev" / "char" / "1:3").mkdir(parents=True, exist_ok=True)
    (sysfs / "dev" / "char" / "1:3" / "uevent").write_text("MAJOR=1\nMINOR=3\nDEVNAME=null\n")
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/"},
                                "root": {"path": "rootfs"},
                                "linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMDEV_")}
    env["VMDEV_PLUGINS"] = plugins
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(sysfs), str(spec)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["code"] == 0, done.stderr
    return json.loads(result["plan"]), set(result["modules"])


def test_a_qemu_plan_imports_only_the_entry_module_and_its_settings(tmp_path: Path) -> None:
    plan, modules = plan_modules(tmp_path, "vmdev-libvirt")
    _, without = plan_modules(tmp_path, "")
    assert plan["hypervisor"] == "qemu"
    assert [d["container_path"] for d in plan["devices"]] == ["/dev/null"]
    assert {m for m in modules if m.split(".")[0] == "vmdev_libvirt"} == ALLOWED
    assert not {m.split(".")[0] for m in modules - without} - {"vmdev_libvirt"}
    assert "vmdev.state" not in modules - without


def test_the_backend_and_its_keys_are_registered_as_before(pm: PluginManager) -> None:
    backend = pm.backend("libvirt")
    assert (backend.name, backend.kata_sections, backend.plan_key) == ("libvirt", ("libvirt",), "libvirt")
    assert [(o.name, o.flag, o.metavar, o.required) for o in backend.live_options] == [
        ("domain", "--domain", "NAME", True), ("connect", "--connect", "URI", False)]
    assert backend.live is not None
    ours = [d.setting for d in pm.declared_settings() if d.setting.name in {s.name for s in SETTINGS}
            and d.plugin == "libvirt"]
    assert len(ours) == len(SETTINGS) and all(s.backends == ("libvirt",) for s in ours)


def test_every_public_name_is_still_importable_from_the_package() -> None:
    for name in vmdev_libvirt.__all__:
        assert getattr(vmdev_libvirt, name) is not None
    assert set(vmdev_libvirt.__all__) <= set(dir(vmdev_libvirt))
    from vmdev_libvirt import LibvirtTarget

    assert LibvirtTarget.hypervisor == vmdev_libvirt.NAME
