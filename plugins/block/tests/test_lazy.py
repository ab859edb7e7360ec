"""Loading vmdev-block costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-block installed (the ``startup_probe`` fixture of :mod:`vmdev.testing`),
and lists the family's modules it imported and the modules whose attrs classes it created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmdev.testing import StartupProbe

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_block", "vmdev_block.constants", "vmdev_block.plugin", "vmdev_block.settings"]


def test_loading_the_plugin_imports_none_of_the_family_modules(startup_probe: StartupProbe) -> None:
    report = startup_probe("vmdev-block")
    assert (report.of("vmdev_block"), report.classes_of("vmdev_block")) == (LIGHT, [])


@pytest.mark.parametrize("hypervisor", ["qemu", "cloud-hypervisor", "firecracker"])
def test_a_plan_of_dev_null_imports_none_of_the_family_modules(
        startup_probe: StartupProbe, null_plan: list[str], hypervisor: str) -> None:
    # /dev/null is a character device: build_device declines it from dev_type alone
    report = startup_probe("vmdev-block", *null_plan, "--hypervisor", hypervisor)
    assert report.code == 0
    assert (report.of("vmdev_block"), report.classes_of("vmdev_block")) == (LIGHT, [])


def test_ordinary_mounts_import_none_of_the_family_modules(startup_probe: StartupProbe, null_plan: list[str]) -> None:
    spec = json.loads(Path(null_plan[-1]).read_text())
    spec["mounts"] = [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
                      {"destination": "/proc", "type": "proc", "source": "proc"}]
    Path(null_plan[-1]).write_text(json.dumps(spec))
    report = startup_probe("vmdev-block", *null_plan)
    assert report.code == 0
    assert (report.of("vmdev_block"), report.classes_of("vmdev_block")) == (LIGHT, [])
