"""``vmdev plan`` imports every installed plugin's entry module for every container, whatever the
hypervisor, so this one must register its backend without importing the target, the plan, the
option syntax or the family renderers. Measured in a fresh interpreter planning for QEMU, against
the same plan with no plugin: the shape backend vendors copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import acme_vmdev_stratovirt

#: what a QEMU plan may import of this distribution: the entry module and its constants
ALLOWED = {"acme_vmdev_stratovirt", "acme_vmdev_stratovirt.plugin", "acme_vmdev_stratovirt.constants"}

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


def test_a_qemu_plan_imports_only_the_entry_module_and_its_constants(tmp_path: Path) -> None:
    plan, modules = plan_modules(tmp_path, "acme-vmdev-stratovirt")
    _, without = plan_modules(tmp_path, "")
    assert plan["hypervisor"] == "qemu"
    assert [d["container_path"] for d in plan["devices"]] == ["/dev/null"]
    assert {m for m in modules if m.split(".")[0] == "acme_vmdev_stratovirt"} == ALLOWED
    assert not {m for m in modules - without if not m.startswith("acme_vmdev_stratovirt")}


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in acme_vmdev_stratovirt.__all__:
        assert getattr(acme_vmdev_stratovirt, name) is not None
    from acme_vmdev_stratovirt import NAME, StratoVirtTarget

    assert StratoVirtTarget.hypervisor == NAME
