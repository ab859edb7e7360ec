"""Every ``vmdev plan`` imports the entry module of every installed plugin, so vmdev-cdi's must not
import the CDI library (registry, spec decoding, yaml, the model's attrs classes) for a plan that
asks for no CDI device. Measured in a fresh interpreter, against the same plan with no plugin."""

from __future__ import annotations

import json

import vmdev_cdi
from vmdev.testing import StartupProbe

#: the modules of the family a plan without CDI may import: the entry module and its light settings
ALLOWED = {"vmdev_cdi", "vmdev_cdi.plugin", "vmdev_cdi.settings", "vmdev_cdi.constants"}


def test_a_plan_without_cdi_imports_only_the_entry_module_and_its_settings(
        startup_probe: StartupProbe, null_plan: list[str]) -> None:
    report = startup_probe("vmdev-cdi", *null_plan)
    without = startup_probe("", *null_plan)
    assert (report.code, without.code) == (0, 0)
    assert [d["container_path"] for d in json.loads(report.stdout)["devices"]] == ["/dev/null"]
    assert set(report.of("vmdev_cdi")) == ALLOWED
    added = set(report.modules) - set(without.modules)
    assert not {m.split(".")[0] for m in added} - {"vmdev_cdi"}, "no yaml, cattrs, click, logging"


def test_vmdev_help_lists_the_cdi_group_without_importing_it(startup_probe: StartupProbe) -> None:
    report = startup_probe("vmdev-cdi", "--help")
    help_lines = report.stdout.splitlines()
    assert report.code == 0
    assert any(line.split()[:2] == ["cdi", "Container"] for line in help_lines), help_lines
    assert not {"vmdev_cdi.cli", "vmdev_cdi.registry", "yaml", "jsonschema"} & set(report.modules)


def test_every_public_name_is_still_importable_from_the_package() -> None:
    for name in vmdev_cdi.__all__:
        assert getattr(vmdev_cdi, name) is not None
    assert set(vmdev_cdi.__all__) <= set(dir(vmdev_cdi))
    from vmdev_cdi import ANNOTATION_PREFIX, Registry  # noqa: F401 - the import is the test
