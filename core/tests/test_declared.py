"""Declared settings: each plugin declares its keys once; the core parses them once, typed, with
one-line errors naming the key; `vmdev settings` lists them; flags come from the declarations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev import hookimpl
from vmdev.cli import main
from vmdev.declared import BOOLEAN, INTEGER, NUMBER, STRING, STRINGS, TABLES, Setting
from vmdev.errors import ConfigError, PluginError
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings

WIDGET = Setting(name="widget_mode", type=STRING, default="fast", choices=("fast", "safe"),
                 aliases={"quick": "fast"}, description="how widgets work", kata_key="widget_mode",
                 flag="--widget-mode")


class Widgets:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def register_settings(self, register: Callable[[Setting], None]) -> None:
        register(WIDGET)
        register(Setting(name="widget_count", type=INTEGER, default=1, minimum=0, maximum=8,
                         description="how many"))

    @hookimpl
    def check_settings(self, settings: SandboxSettings) -> None:
        self.seen.append((settings.value("widget_mode"), settings.value("widget_count")))


def manager(*plugins: tuple[str, object]) -> PluginManager:
    return PluginManager(LoadPolicy(only=()), plugins=list(plugins)).load()


@pytest.mark.parametrize(
    ("setting", "raw", "value"),
    [
        (Setting(name="s", type=STRING, default="", description=""), "x", "x"),
        (WIDGET, "quick", "fast"),
        (Setting(name="i", type=INTEGER, default=0, description=""), 7, 7),
        (Setting(name="b", type=BOOLEAN, default=False, description=""), True, True),
        (Setting(name="n", type=NUMBER, default=0.0, description=""), 3, 3.0),
        (Setting(name="l", type=STRINGS, default=(), description=""), ["a", "b"], ("a", "b")),
        (Setting(name="t", type=TABLES, default=(), description=""), [{"a": 1}], ({"a": 1},)),
    ],
)
def test_each_type_parses_what_toml_gives(setting: Setting, raw: Any, value: Any) -> None:
    assert setting.parse(raw) == value


@pytest.mark.parametrize(
    ("setting", "raw", "message"),
    [
        (WIDGET, 5, "widget_mode: must be a string, got 5"),
        (WIDGET, "slow", "widget_mode: 'slow' is not one of 'fast', 'safe'"),
        (Setting(name="i", type=INTEGER, default=0, description=""), True, "i: must be an integer, got True"),
        (Setting(name="i", type=INTEGER, default=0, description="", maximum=8), 9, "i: must be a number up to 8, got 9"),
        (Setting(name="i", type=INTEGER, default=0, description=""), 2**70, "i: must be a number up to 18446744073709551615"),
        (Setting(name="b", type=BOOLEAN, default=False, description=""), "yes", "b: must be true or false, got 'yes'"),
        (Setting(name="l", type=STRINGS, default=(), description=""), ["a", 1], "l: item 1 must be a string, got 1"),
        (Setting(name="n", type=NUMBER, default=0.0, description=""), float("nan"), "n: must be a number, got nan"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_key(setting: Setting, raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        setting.parse(raw)
    assert str(exc.value).startswith(message)
    assert exc.value.field == setting.name and "\n" not in str(exc.value)


def test_prepared_settings_hand_typed_values_and_defaults_to_the_hooks() -> None:
    widgets = Widgets()
    pm = manager(("widgets", widgets))
    prepared = pm.prepare_settings(SandboxSettings(options={"widget_mode": "quick"}))
    assert (prepared.value("widget_mode"), prepared.value("widget_count")) == ("fast", 1)
    assert widgets.seen == [("fast", 1)]


def test_a_wrong_type_in_the_file_never_reaches_a_plugin() -> None:
    widgets = Widgets()
    with pytest.raises(ConfigError, match="widget_count: must be an integer, got '3'"):
        manager(("widgets", widgets)).prepare_settings(SandboxSettings(options={"widget_count": "3"}))
    assert widgets.seen == []


def test_reading_an_undeclared_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="undeclared_key: is not a declared settings key"):
        SandboxSettings().value("undeclared_key")


def test_two_plugins_declaring_one_key_is_an_error_naming_both() -> None:
    pm = manager(("widgets", Widgets()), ("copycat", Widgets()))
    with pytest.raises(PluginError, match="plugins 'copycat' and 'widgets' both declare the settings key 'widget_mode'"):
        pm.declared_settings()


def test_two_backends_may_declare_the_same_kata_key_for_themselves() -> None:
    class QemuKey:
        @hookimpl
        def register_settings(self, register: Callable[[Setting], None]) -> None:
            register(Setting(name="hugepages_like", type=BOOLEAN, default=False, description="", backends=("qemu",)))

    class OtherKey:
        @hookimpl
        def register_settings(self, register: Callable[[Setting], None]) -> None:
            register(Setting(name="hugepages_like", type=STRING, default="no", description="",
                             backends=("firecracker",)))

    pm = manager(("q", QemuKey()), ("o", OtherKey()))
    assert pm.prepare_settings(SandboxSettings(options={"hugepages_like": True})).value("hugepages_like") is True
    fc = pm.prepare_settings(SandboxSettings(hypervisor="firecracker", options={"hugepages_like": "yes"}))
    assert fc.value("hugepages_like") == "yes"
    with pytest.raises(ConfigError, match="hugepages_like: must be true or false"):
        pm.prepare_settings(SandboxSettings(options={"hugepages_like": "yes"}))


def test_runtime_section_keys_are_read_from_kata_runtime_table() -> None:
    class Runtime:
        @hookimpl
        def register_settings(self, register: Callable[[Setting], None]) -> None:
            register(Setting(name="vfio_like", type=STRING, default="a", section="runtime", description=""))

    pm = manager(("rt", Runtime()))
    prepared = pm.prepare_settings(SandboxSettings(options={"vfio_like": "ignored"}, runtime={"vfio_like": "b"}))
    assert prepared.value("vfio_like") == "b"


def test_vmdev_settings_lists_every_key_with_its_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", "")
    rows = json.loads(CliRunner().invoke(main, ["settings", "--json"], catch_exceptions=False).stdout)
    row = next(r for r in rows if r["name"] == "hotplug_root_ports")
    assert (row["plugin"], row["type"], row["default"], row["section"]) == (
        "vmdev.backend.qemu", "integer", 0, "hypervisor")


def test_vmdev_settings_says_which_backends_a_backend_s_key_is_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kata's [hypervisor.X] keys are per hypervisor: two backends may declare one (libvirt and QEMU
    both declare firmware), and the text listing must tell them apart."""
    monkeypatch.setenv("VMDEV_PLUGINS", "")
    text = CliRunner().invoke(main, ["settings"], catch_exceptions=False).stdout.splitlines()
    rows = json.loads(CliRunner().invoke(main, ["settings", "--json"], catch_exceptions=False).stdout)
    scoped = [row for row in rows if row.get("backends")]
    assert {"enable_hugepages", "default_vcpus"} <= {row["name"] for row in scoped}
    for row in scoped:
        (line,) = [ln for ln in text if ln.startswith(f"{row['name']} = ") and ln.endswith(f"; {row['plugin']})")]
        assert f", for {', '.join(row['backends'])} only;" in line


WIDGET_DIST = """
from vmdev import hookimpl
from vmdev.declared import Setting, STRING

@hookimpl
def register_settings(register):
    register(Setting(name="widget_mode", type=STRING, default="fast", choices=("fast", "safe"),
                     description="how widgets work", flag="--widget-mode"))

@hookimpl
def sandbox_devices(settings):
    print("widget_mode=" + settings.value("widget_mode"))
"""


def test_a_plugins_flag_is_an_option_of_vmdev_plan(
    make_dist: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make_dist("widget-dist", {"widget": "widget_mod"}, {"widget_mod": WIDGET_DIST})
    monkeypatch.setenv("VMDEV_PLUGINS", "widget-dist")
    spec = tmp_path / "config.json"
    spec.write_text("{}")
    runner = CliRunner()
    assert "--widget-mode TEXT" in runner.invoke(main, ["plan", "--help"]).stdout
    result = runner.invoke(main, ["plan", "--widget-mode", "safe", str(spec)], catch_exceptions=False)
    assert result.stdout.startswith("widget_mode=safe\n")
    bad = runner.invoke(main, ["plan", "--widget-mode", "slow", str(spec)], catch_exceptions=False)
    assert (bad.exit_code, bad.stderr) == (1, "vmdev: error: widget_mode: 'slow' is not one of 'fast', 'safe'\n")
