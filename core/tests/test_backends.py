"""Hypervisor backends are plugins: registered through register_backends, chosen by name or by
the configuration file, listed by `vmdev backends`, and removable by disabling their plugin."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from click.testing import CliRunner

from vmdev import hookimpl
from vmdev.backend import Backend, RenderContext
from vmdev.cli import main
from vmdev.errors import ConfigError, PluginError
from vmdev.models import Device, GenericDevice
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings, load_settings
from vmdev.targets import RenderTarget

BUILT_INS = ["cloud-hypervisor", "firecracker", "qemu"]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VMDEV_PLUGINS", "")

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return run


# --- a small backend, as a third party would write it ------------------------------------------------
@attrs.frozen(kw_only=True)
class ToyAttach:
    line: str = ""
    hotplugged: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.define
class ToyTarget(RenderTarget):
    hypervisor: ClassVar[str] = "toy"
    attach_type: ClassVar[type[Any]] = ToyAttach


@attrs.frozen
class ToyPlan:
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"lines": list(self.lines)}


def _toy_assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> ToyPlan:
    return ToyPlan(tuple(d.attach.line for d in devices if d.attach.line))


TOY = Backend(name="toy", description="a toy", kata_sections=("toyvisor",),
              target=lambda settings, context: ToyTarget(settings, context), assemble=_toy_assemble)


class ToyBackendPlugin:
    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        register(TOY)

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget) -> ToyAttach | None:
        if isinstance(target, ToyTarget) and isinstance(device, GenericDevice):
            return ToyAttach(line=f"node {device.container_path}")
        return None


class Unrendered:
    """A family plugin whose devices no backend renders."""

    @hookimpl(tryfirst=True)
    def build_device(self, info: Any) -> Device | None:
        if info.container_path == "/dev/odd":
            return OddDevice(id="odd0")
        return None


@attrs.frozen
class OddDevice:
    kind: ClassVar[str] = "odd"
    id: str


def manager(*plugins: tuple[str, object], disabled: frozenset[str] = frozenset()) -> PluginManager:
    return PluginManager(LoadPolicy(only=(), disabled=disabled), plugins=list(plugins)).load()


SPEC = parse_spec({"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}})


# --- tests ---------------------------------------------------------------------------------------------
def test_vmdev_backends_lists_the_three_built_ins_with_plugin_and_distribution(cli: Any) -> None:
    rows = json.loads(cli("backends", "--json").stdout)
    assert [(r["name"], r["plugin"], r["distribution"], r["live"]) for r in rows] == [
        ("cloud-hypervisor", "vmdev.backend.cloud-hypervisor", "vmdev", False),
        ("firecracker", "vmdev.backend.firecracker", "vmdev", False),
        ("qemu", "vmdev.backend.qemu", "vmdev", True),
    ]
    assert [r["kata_sections"] for r in rows] == [["clh"], ["firecracker"], ["qemu"]]


def test_disabling_a_built_in_backend_plugin_makes_its_hypervisor_a_one_line_error(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VMDEV_DISABLE_PLUGINS", "vmdev.backend.firecracker")
    spec = tmp_path / "config.json"
    spec.write_text("{}")
    result = cli("plan", "--hypervisor", "firecracker", str(spec))
    assert result.exit_code == 1
    assert result.stderr == ("vmdev: error: hypervisor: no installed backend is called 'firecracker' "
                             "(installed: cloud-hypervisor, qemu)\n")
    assert [r["name"] for r in json.loads(cli("backends", "--json").stdout)] == ["cloud-hypervisor", "qemu"]


def test_a_third_party_backend_plans_without_any_change_to_the_core() -> None:
    pm = manager(("toy", ToyBackendPlugin()))
    assert pm.backends().names() == [*BUILT_INS, "toy"]
    result = plan(SPEC, SandboxSettings(hypervisor="toy", options={"entropy_source": ""}), plugins=pm)
    assert result.to_json()["toy"] == {"lines": ["node /dev/null"]}
    assert result.devices[0].plugin == "vmdev.generic"


def test_a_device_nobody_renders_for_the_backend_is_an_error_naming_both() -> None:
    pm = manager(("toy", ToyBackendPlugin()), ("odd", Unrendered()))
    spec = parse_spec({"linux": {"devices": [{"path": "/dev/odd", "type": "c", "major": 10, "minor": 1}]}})
    with pytest.raises(PluginError) as exc:
        plan(spec, SandboxSettings(hypervisor="toy"), plugins=pm)
    assert exc.value.device == "/dev/odd"
    assert "no plugin renders odd devices for the toy backend" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_two_plugins_registering_one_backend_name_is_an_error_naming_both() -> None:
    pm = manager(("toy", ToyBackendPlugin()), ("toy-again", ToyBackendPlugin()))
    with pytest.raises(PluginError, match="plugins 'toy-again' and 'toy' both register a backend called 'toy'"):
        pm.backends()


def test_a_backend_registers_only_backend_objects() -> None:
    class Bad:
        @hookimpl
        def register_backends(self, register: Callable[[Any], None]) -> None:
            register("qemu-but-a-string")

    with pytest.raises(PluginError, match=r"plugin 'bad' registered str, not a vmdev\.backend\.Backend"):
        manager(("bad", Bad())).backends()


def test_backend_names_are_checked_when_registered() -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        Backend(name="Toy Visor", description="", target=TOY.target, assemble=TOY.assemble)


# --- the configuration file chooses the backend -------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "configuration.toml"
    path.write_text(text)
    return path


def test_a_file_with_one_hypervisor_section_chooses_its_backend(tmp_path: Path) -> None:
    pm = manager()
    settings = load_settings(write(tmp_path, "[hypervisor.clh]\ndefault_memory = 1024\n"), plugins=pm)
    assert (settings.hypervisor, settings.memory_mib) == ("cloud-hypervisor", 1024)


def test_a_third_party_backend_is_chosen_by_its_kata_section(tmp_path: Path) -> None:
    pm = manager(("toy", ToyBackendPlugin()))
    settings = load_settings(write(tmp_path, "[hypervisor.toyvisor]\nmachine_type = 'q35'\n"), plugins=pm)
    assert settings.hypervisor == "toy"


def test_a_flag_that_contradicts_the_file_is_an_error_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path, "[hypervisor.clh]\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, hypervisor="qemu", plugins=manager())
    assert exc.value.field == "hypervisor"
    assert "configures [hypervisor.clh], not qemu" in exc.value.message


def test_a_file_for_a_hypervisor_no_backend_reads_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "[hypervisor.dragonball]\n"), plugins=manager())
    assert str(exc.value).endswith(
        "hypervisor: the file is for hypervisor 'dragonball' ([hypervisor.dragonball]), and no installed "
        "backend reads it (installed: cloud-hypervisor, firecracker, qemu)"
    )


def test_plan_without_hypervisor_flag_plans_for_the_files_backend(cli: Any, tmp_path: Path) -> None:
    config = write(tmp_path, "[hypervisor.firecracker]\n")
    spec = tmp_path / "config.json"
    spec.write_text("{}")
    data = json.loads(cli("plan", "--config", str(config), str(spec)).stdout)
    assert data["hypervisor"] == "firecracker" and "firecracker" in data and "qemu" not in data


def test_a_backend_target_gets_the_plans_notes() -> None:
    context = RenderContext()
    target = ToyTarget(SandboxSettings(), context)
    target.record("k", "a", "1")
    assert target.record("k", "b", "2") == {"a": "1", "b": "2"}
