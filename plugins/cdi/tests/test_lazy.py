"""Every ``vmdev plan`` imports the entry module of every installed plugin, so vmdev-cdi's must not
import the CDI library (registry, spec decoding, yaml, the model's attrs classes) for a plan that
asks for no CDI device. Measured in a fresh interpreter, against the same plan with no plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import vmdev_cdi

#: the modules of the family a plan without CDI may import: the entry module and its light settings
ALLOWED = {"vmdev_cdi", "vmdev_cdi.plugin", "vmdev_cdi.settings", "vmdev_cdi.constants"}

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
    """Plan one /dev/null device on a fake sysfs with only ``plugins`` loaded: (plan, modules)."""
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


def test_a_plan_without_cdi_imports_only_the_entry_module_and_its_settings(tmp_path: Path) -> None:
    plan, modules = plan_modules(tmp_path, "vmdev-cdi")
    _, without = plan_modules(tmp_path, "")
    assert [d["container_path"] for d in plan["devices"]] == ["/dev/null"]
    assert {m for m in modules if m.split(".")[0] == "vmdev_cdi"} == ALLOWED
    assert not {m.split(".")[0] for m in modules - without} - {"vmdev_cdi"}, "no yaml, cattrs, click, logging"


def test_vmdev_help_lists_the_cdi_group_without_importing_it(tmp_path: Path) -> None:
    script = ("import sys\nfrom click.testing import CliRunner\nfrom vmdev.cli import main\n"
              "out = CliRunner().invoke(main, ['--help']).output\n"
              "print(out); print(' '.join(sorted(sys.modules)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMDEV_")}
    env["VMDEV_PLUGINS"] = "vmdev-cdi"
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          check=True)
    *help_lines, modules = done.stdout.rstrip("\n").split("\n")
    assert any(line.split()[:2] == ["cdi", "Container"] for line in help_lines), help_lines
    assert not {"vmdev_cdi.cli", "vmdev_cdi.registry", "yaml", "jsonschema"} & set(modules.split())


def test_every_public_name_is_still_importable_from_the_package() -> None:
    for name in vmdev_cdi.__all__:
        assert getattr(vmdev_cdi, name) is not None
    assert set(vmdev_cdi.__all__) <= set(dir(vmdev_cdi))
    from vmdev_cdi import ANNOTATION_PREFIX, Registry  # noqa: F401 - the import is the test
