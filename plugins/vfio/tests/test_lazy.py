"""Loading vmdev-vfio costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-vfio installed (the ``startup_probe`` fixture of :mod:`vmdev.testing`),
and lists the family's modules it imported and the modules whose attrs classes it created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmdev.testing import StartupProbe

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_vfio", "vmdev_vfio.kinds", "vmdev_vfio.plugin", "vmdev_vfio.settings"]


def test_loading_the_plugin_imports_none_of_the_family_modules(startup_probe: StartupProbe) -> None:
    report = startup_probe("vmdev-vfio")
    assert (report.of("vmdev_vfio"), report.classes_of("vmdev_vfio")) == (LIGHT, [])


@pytest.mark.parametrize("hypervisor", ["qemu", "cloud-hypervisor", "firecracker"])
def test_a_plan_of_dev_null_imports_none_of_the_family_modules(
        startup_probe: StartupProbe, null_plan: list[str], hypervisor: str) -> None:
    report = startup_probe("vmdev-vfio", *null_plan, "--hypervisor", hypervisor)
    assert report.code == 0
    assert (report.of("vmdev_vfio"), report.classes_of("vmdev_vfio")) == (LIGHT, [])


def test_the_vfio_control_node_is_declined_without_importing_the_family(
        startup_probe: StartupProbe, null_plan: list[str]) -> None:
    sysfs = Path(null_plan[null_plan.index("--sysfs-root") + 1])
    uevent = sysfs / "dev" / "char" / "10:196" / "uevent"
    uevent.parent.mkdir(parents=True)
    uevent.write_text("MAJOR=10\nMINOR=196\nDEVNAME=vfio/vfio\n")
    spec = json.loads(Path(null_plan[-1]).read_text())
    spec["linux"]["devices"].append({"path": "/dev/vfio/vfio", "type": "c", "major": 10, "minor": 196})
    Path(null_plan[-1]).write_text(json.dumps(spec))
    report = startup_probe("vmdev-vfio", *null_plan)
    assert report.code == 0
    assert (report.of("vmdev_vfio"), report.classes_of("vmdev_vfio")) == (LIGHT, [])
