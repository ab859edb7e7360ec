"""``vmdev plan`` imports every installed plugin's entry module for every container, so this one
must not import the watchdog's model or renderers (nor QEMU's, Cloud Hypervisor's or Firecracker's
backend classes) for a plan without a watchdog. Measured in a fresh interpreter, against the same
plan with no plugin: the shape vendors copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import acme_vmdev_watchdog

#: what a plan without a watchdog may import of this distribution: the entry module, its constants
ALLOWED = {"acme_vmdev_watchdog", "acme_vmdev_watchdog.plugin", "acme_vmdev_watchdog.constants"}

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


def test_a_plan_without_a_watchdog_imports_only_the_entry_module_and_its_constants(tmp_path: Path) -> None:
    plan, modules = plan_modules(tmp_path, "acme-vmdev-watchdog")
    _, without = plan_modules(tmp_path, "")
    assert [d["container_path"] for d in plan["devices"]] == ["/dev/null"]
    assert {m for m in modules if m.split(".")[0] == "acme_vmdev_watchdog"} == ALLOWED
    assert not {m for m in modules - without if not m.startswith("acme_vmdev_watchdog")}


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in acme_vmdev_watchdog.__all__:
        assert getattr(acme_vmdev_watchdog, name) is not None
    from acme_vmdev_watchdog import KIND, WatchdogDev

    assert WatchdogDev.kind == KIND
