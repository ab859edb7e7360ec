"""Every ``vmdev plan`` imports the entry module of every installed plugin, whatever the
hypervisor, so vmdev-libvirt's must register its backend without importing the render target, the
domain, the family renderers or the live driver (nor ``vmdev.state``, which the target needs).
Measured in a fresh interpreter planning for QEMU, against the same plan with no plugin."""

from __future__ import annotations

import json

import vmdev_libvirt
from vmdev.plugins import PluginManager
from vmdev.testing import StartupProbe
from vmdev_libvirt.settings import SETTINGS

#: the modules of the family a QEMU plan may import: the entry module and its light settings
ALLOWED = {"vmdev_libvirt", "vmdev_libvirt.plugin", "vmdev_libvirt.settings", "vmdev_libvirt.constants"}


def test_a_qemu_plan_imports_only_the_entry_module_and_its_settings(
        startup_probe: StartupProbe, null_plan: list[str]) -> None:
    report = startup_probe("vmdev-libvirt", *null_plan)
    without = startup_probe("", *null_plan)
    assert (report.code, without.code) == (0, 0)
    plan = json.loads(report.stdout)
    assert plan["hypervisor"] == "qemu"
    assert [d["container_path"] for d in plan["devices"]] == ["/dev/null"]
    assert set(report.of("vmdev_libvirt")) == ALLOWED
    added = set(report.modules) - set(without.modules)
    assert not {m.split(".")[0] for m in added} - {"vmdev_libvirt"}
    assert "vmdev.state" not in added


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
