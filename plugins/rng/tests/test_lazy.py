"""Loading vmdev-rng costs no family import beyond the light modules (issue 13, cold start).

Each test runs a fresh interpreter (``sys.modules`` of this one holds every module the other tests
imported) with only vmdev-rng installed (the ``startup_probe`` fixture of :mod:`vmdev.testing`),
and lists the family's modules it imported and the modules whose attrs classes it created.
"""

from __future__ import annotations

import pytest

from vmdev.testing import StartupProbe

#: the modules loading the plugin may import: the package, its entry module, the light constants
LIGHT = ["vmdev_rng", "vmdev_rng.kinds", "vmdev_rng.plugin", "vmdev_rng.settings"]


def test_loading_the_plugin_imports_none_of_the_family_modules(startup_probe: StartupProbe) -> None:
    report = startup_probe("vmdev-rng")
    assert (report.of("vmdev_rng"), report.classes_of("vmdev_rng")) == (LIGHT, [])


def test_a_plan_without_an_rng_imports_no_device_model(startup_probe: StartupProbe, null_plan: list[str]) -> None:
    # an s390x CCW guest gets no RNG (as in Kata): nothing of the family beyond the light modules
    report = startup_probe("vmdev-rng", *null_plan, "--machine-type", "s390-ccw-virtio")
    assert report.code == 0
    assert (report.of("vmdev_rng"), report.classes_of("vmdev_rng")) == (LIGHT, [])


@pytest.mark.parametrize(("hypervisor", "renderer"), [
    ("qemu", "render_qemu"), ("cloud-hypervisor", "render_clh"), ("firecracker", "render_firecracker"),
])
def test_a_plan_with_the_rng_imports_only_the_renderer_of_its_backend(
        startup_probe: StartupProbe, null_plan: list[str], hypervisor: str, renderer: str) -> None:
    report = startup_probe("vmdev-rng", *null_plan, "--hypervisor", hypervisor)
    wanted = ["vmdev_rng.device", "vmdev_rng.host", f"vmdev_rng.{renderer}"]
    assert report.code == 0
    assert report.of("vmdev_rng") == sorted([*LIGHT, *wanted])
    assert report.classes_of("vmdev_rng") == ["vmdev_rng.device"]
