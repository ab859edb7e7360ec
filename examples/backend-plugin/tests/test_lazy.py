"""``vmdev plan`` imports every installed plugin's entry module for every container, whatever the
hypervisor, so this one must register its backend without importing the target, the plan, the
option syntax or the family renderers. Measured in a fresh interpreter planning for QEMU (the
``startup_probe`` and ``null_plan`` fixtures of :mod:`vmdev.testing`), against
the same plan with no plugin: the shape backend vendors copy."""

from __future__ import annotations

import json

import acme_vmdev_stratovirt
from vmdev.testing import StartupProbe

#: what a QEMU plan may import of this distribution: the entry module and its constants
ALLOWED = {"acme_vmdev_stratovirt", "acme_vmdev_stratovirt.plugin", "acme_vmdev_stratovirt.constants"}


def test_a_qemu_plan_imports_only_the_entry_module_and_its_constants(
        startup_probe: StartupProbe, null_plan: list[str]) -> None:
    report = startup_probe("acme-vmdev-stratovirt", *null_plan)
    without = startup_probe("", *null_plan)
    assert (report.code, without.code) == (0, 0)
    plan = json.loads(report.stdout)
    assert plan["hypervisor"] == "qemu"
    assert [d["container_path"] for d in plan["devices"]] == ["/dev/null"]
    assert set(report.of("acme_vmdev_stratovirt")) == ALLOWED
    added = set(report.modules) - set(without.modules)
    assert not {m for m in added if not m.startswith("acme_vmdev_stratovirt")}


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in acme_vmdev_stratovirt.__all__:
        assert getattr(acme_vmdev_stratovirt, name) is not None
    from acme_vmdev_stratovirt import NAME, StratoVirtTarget

    assert StratoVirtTarget.hypervisor == NAME
