"""``vmdev plan`` imports every installed plugin's entry module for every container, so this one
must not import the watchdog's model or renderers (nor QEMU's, Cloud Hypervisor's or Firecracker's
backend classes) for a plan without a watchdog. Measured in a fresh interpreter (the
``startup_probe`` and ``null_plan`` fixtures of :mod:`vmdev.testing`), against the same
plan with no plugin: the shape vendors copy."""

from __future__ import annotations

import json

import acme_vmdev_watchdog
from vmdev.testing import StartupProbe

#: what a plan without a watchdog may import of this distribution: the entry module, its constants
ALLOWED = {"acme_vmdev_watchdog", "acme_vmdev_watchdog.plugin", "acme_vmdev_watchdog.constants"}


def test_a_plan_without_a_watchdog_imports_only_the_entry_module_and_its_constants(
        startup_probe: StartupProbe, null_plan: list[str]) -> None:
    report = startup_probe("acme-vmdev-watchdog", *null_plan)
    without = startup_probe("", *null_plan)
    assert (report.code, without.code) == (0, 0)
    assert [d["container_path"] for d in json.loads(report.stdout)["devices"]] == ["/dev/null"]
    assert set(report.of("acme_vmdev_watchdog")) == ALLOWED
    added = set(report.modules) - set(without.modules)
    assert not {m for m in added if not m.startswith("acme_vmdev_watchdog")}


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in acme_vmdev_watchdog.__all__:
        assert getattr(acme_vmdev_watchdog, name) is not None
    from acme_vmdev_watchdog import KIND, WatchdogDev

    assert WatchdogDev.kind == KIND
