"""Loading vmdev-vhostuser costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-vhostuser installed (the ``startup_probe`` fixture of :mod:`vmdev.testing`),
and lists the family's modules it imported and the modules whose attrs classes it created.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmdev.testing import StartupProbe

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_vhostuser", "vmdev_vhostuser.kinds", "vmdev_vhostuser.plugin", "vmdev_vhostuser.settings"]


def test_loading_the_plugin_imports_none_of_the_family_modules(startup_probe: StartupProbe) -> None:
    report = startup_probe("vmdev-vhostuser")
    assert (report.of("vmdev_vhostuser"), report.classes_of("vmdev_vhostuser")) == (LIGHT, [])


@pytest.mark.parametrize("hypervisor", ["qemu", "cloud-hypervisor", "firecracker"])
def test_a_plan_of_dev_null_imports_none_of_the_family_modules(
        startup_probe: StartupProbe, null_plan: list[str], hypervisor: str) -> None:
    report = startup_probe("vmdev-vhostuser", *null_plan, "--hypervisor", hypervisor)
    assert report.code == 0
    assert (report.of("vmdev_vhostuser"), report.classes_of("vmdev_vhostuser")) == (LIGHT, [])


def test_an_enabled_store_and_no_share_import_none_of_the_family_modules(
        startup_probe: StartupProbe, null_plan: list[str], tmp_path: Path) -> None:
    # the store claims only majors 241 and 242; "none" asks for no share
    report = startup_probe("vmdev-vhostuser", *null_plan, "--vhost-user-store", str(tmp_path / "store"),
                           "--shared-fs", "none")
    assert report.code == 0
    assert (report.of("vmdev_vhostuser"), report.classes_of("vmdev_vhostuser")) == (LIGHT, [])


def test_a_9p_share_imports_only_its_model_and_the_renderer_of_its_backend(
        startup_probe: StartupProbe, null_plan: list[str], tmp_path: Path) -> None:
    report = startup_probe("vmdev-vhostuser", *null_plan, "--shared-fs", "virtio-9p", "--shared-dir", str(tmp_path))
    wanted = ["vmdev_vhostuser.config", "vmdev_vhostuser.device", "vmdev_vhostuser.render_qemu"]
    assert report.code == 0
    assert report.of("vmdev_vhostuser") == sorted([*LIGHT, *wanted])
