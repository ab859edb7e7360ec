"""Lazy names and light plans (issue 13, cold start): a package's names are imported where they live
when first asked for (:mod:`vmdev.lazy`), and a plain QEMU plan creates none of the classes only
other hypervisors' plans or ``vmdev explain`` use."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from vmdev.testing import StartupProbe

PACKAGE = """
from vmdev.lazy import lazy_exports

__all__ = ["Heavy", "LIGHT"]
LIGHT = 1
__getattr__, __dir__ = lazy_exports(__name__, {"Heavy": "lazypkg.heavy"})
"""


@pytest.fixture
def lazypkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "lazypkg").mkdir()
    (tmp_path / "lazypkg" / "__init__.py").write_text(PACKAGE)
    (tmp_path / "lazypkg" / "heavy.py").write_text("class Heavy:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("lazypkg", "lazypkg.heavy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("lazypkg")


def test_a_lazy_name_is_imported_from_its_module_when_first_asked_for(lazypkg: Any) -> None:
    assert "lazypkg.heavy" not in sys.modules
    assert "Heavy" in dir(lazypkg) and "LIGHT" in dir(lazypkg)
    heavy = lazypkg.Heavy
    assert heavy is sys.modules["lazypkg.heavy"].Heavy and vars(lazypkg)["Heavy"] is heavy
    from lazypkg import Heavy  # type: ignore[import-not-found]  # made by the fixture

    assert Heavy is heavy


def test_an_unknown_name_is_an_attribute_error_naming_the_package(lazypkg: Any) -> None:
    with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'Hevy'"):
        lazypkg.Hevy  # noqa: B018 - the lookup is the test


def test_a_plain_qemu_plan_creates_no_class_of_other_backends_or_of_explain(
    startup_probe: StartupProbe, null_plan: list[str]
) -> None:
    report = startup_probe("", *null_plan)
    assert report.code == 0 and '"/dev/null"' in report.stdout
    for unused in ("vmdev.explain", "vmdev.backends.clh_target", "vmdev.backends.firecracker_target",
                   "vmdev.state", "vmdev.manager", "vmdev.qmp"):
        assert unused not in report.modules, unused
    assert set(report.classes) <= {m for m in report.modules if m.split(".")[0] == "vmdev"}


def test_a_cloud_hypervisor_plan_creates_its_backend_s_classes_only_then(
    startup_probe: StartupProbe, null_plan: list[str]
) -> None:
    report = startup_probe("", *null_plan, "--hypervisor", "cloud-hypervisor")
    assert report.code == 0 and report.classes_of("vmdev.backends.clh_target")
    assert "vmdev.backends.firecracker_target" not in report.modules


def test_a_backend_names_its_parts_and_they_are_imported_when_first_called(lazypkg: Any) -> None:
    from vmdev.backend import Backend

    backend = Backend(name="lazy", description="d", target="lazypkg.heavy:Heavy", assemble="lazypkg:Heavy")
    assert "lazypkg.heavy" not in sys.modules and backend.live is None
    made: Any = backend.target  # a class standing in for a target factory
    assert type(made()).__name__ == "Heavy" and "lazypkg.heavy" in sys.modules


def test_a_reference_that_is_no_module_attribute_is_refused() -> None:
    from vmdev.lazy import load_reference

    assert load_reference("vmdev.lazy:load_reference") is load_reference
    with pytest.raises(ValueError, match="is not 'module' or 'module:attribute'"):
        load_reference("not a reference")
