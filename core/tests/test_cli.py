"""The command-line contract: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.cli import main
from vmdev.testing import FakeHost


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VMDEV_PLUGINS", "")  # the core alone, whatever else is installed

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return run


def write_spec(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


def test_plugins_lists_core_defaults(cli: Any) -> None:
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["name"], r["distribution"]) for r in rows] == [
        ("vmdev.host_path", "vmdev"), ("vmdev.generic", "vmdev"), ("vmdev.backend.qemu", "vmdev"),
        ("vmdev.backend.cloud-hypervisor", "vmdev"), ("vmdev.backend.firecracker", "vmdev")]
    assert rows[0]["hooks"] == ["resolve_host_path"]
    assert "hooks: attach_options, build_device" in cli("plugins").stdout


def test_resolve_through_fake_sysfs(cli: Any, fake_host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host.block_device(8, 16, "sdb")
    args = ["resolve", "--type", "b", "--major", "8", "--minor", "16", "--sysfs-root", str(fake_host.sysfs)]
    refused = cli(*args, "/dev/xvda")  # the host's /dev has no such block node: as plan, it is refused
    assert (refused.exit_code, refused.stdout) == (1, "") and "/dev/sdb" in refused.stderr
    monkeypatch.setattr("vmdev.cli.host_context", lambda *args, **kwargs: fake_host.context())  # its /dev too
    assert cli(*args, "/dev/xvda").stdout == "/dev/sdb\n"
    assert json.loads(cli(*args, "--json", "/dev/xvda").stdout) == {"host_path": "/dev/sdb"}
    assert cli("resolve", "--type", "b", "--major", "-1", "--minor", "0", "--host-path", "/i.raw", "/dev/x").stdout == "/i.raw\n"


def test_resolve_error_is_one_line_naming_the_device(cli: Any, fake_host: FakeHost) -> None:
    fake_host.uevent("block", 8, 16, "MAJOR=8\nMINOR=16\n")
    result = cli("resolve", "--type", "b", "--major", "8", "--minor", "16", "--sysfs-root", str(fake_host.sysfs), "/dev/xvda")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vmdev: error: /dev/xvda: major:minor: uevent file ")
    assert lines[0].endswith("has no DEVNAME")


def test_plan_without_plugins_gives_generic_devices_only(cli: Any, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}})
    data = json.loads(cli("plan", "--memory", "256", spec).stdout)
    assert [d["kind"] for d in data["devices"]] == ["generic"]
    assert data["qemu"] == {"argv": ["-machine", "q35", "-m", "256M"], "hotplug": [], "unplug": []}
    assert cli("plan", "--format", "argv", "--memory", "256", spec).stdout == "-machine q35 -m 256M\n"
    text = cli("plan", "--format", "text", spec).stdout
    assert "generic" in text and "/dev/null" in text


def test_plan_as_text_keeps_a_container_path_with_a_line_separator_on_one_line(cli: Any, tmp_path: Path) -> None:
    devices = [{"path": "/dev/nu\u2028ll", "type": "c", "major": 1, "minor": 3},
               {"path": "/dev/x\u0085y", "type": "c", "major": 1, "minor": 3}]
    text = cli("plan", "--format", "text", write_spec(tmp_path, {"linux": {"devices": devices}})).stdout
    assert "\u2028" not in text and "\x85" not in text
    rows = [line for line in text.splitlines() if line.startswith("generic")]
    assert len(rows) == 2 and "/dev/nu\\u2028ll" in rows[0] and "/dev/x\\x85y" in rows[1]


def test_plan_for_other_hypervisors(cli: Any, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"linux": {"devices": []}})
    assert json.loads(cli("plan", "--hypervisor", "firecracker", spec).stdout)["firecracker"] == {
        "requests": [], "hotplug": [], "unplug": []}
    result = cli("plan", "--hypervisor", "firecracker", "--format", "argv", spec)
    assert result.exit_code == 1 and "for firecracker, which takes no command-line arguments" in result.stderr


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{broken", "not valid JSON"),
        ({"linux": {"devices": [{"path": "/dev/a", "type": "c", "major": "x", "minor": 1}]}},
         "/dev/a: $.linux.devices[0].major: must be an integer"),
        ({"linux": {"devices": [{"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0}]}},
         "/dev/loop0: type: no installed plugin handles block devices"),
    ],
)
def test_plan_errors_are_one_line(cli: Any, tmp_path: Path, document: Any, expected: str) -> None:
    result = cli("plan", write_spec(tmp_path, document))
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_vmdev_debug_adds_the_traceback_to_the_one_line_error(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, "{broken")
    monkeypatch.setenv("VMDEV_DEBUG", "1")
    debugged = cli("plan", "--format", "text", spec)  # --format text: click's command, not the plain path
    assert debugged.exit_code == 1 and "Traceback" in debugged.stderr
    assert debugged.stderr.splitlines()[-1].startswith("vmdev: error: ")
    monkeypatch.delenv("VMDEV_DEBUG")
    assert "Traceback" not in cli("plan", "--format", "text", spec).stderr


def test_usage_errors_exit_2(cli: Any, tmp_path: Path) -> None:
    assert cli("plan").exit_code == 2
    assert cli("resolve", "--type", "x", "--major", "1", "--minor", "1", "/dev/a").exit_code == 2
    unknown = cli("plan", "--hypervisor", "xen", write_spec(tmp_path, {}))
    assert unknown.exit_code == 1
    assert unknown.stderr == ("vmdev: error: hypervisor: no installed backend is called 'xen' (installed: "
                              "cloud-hypervisor, firecracker, qemu)\n")


def test_settings_file_and_flags(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "configuration.toml"
    config.write_text('[hypervisor.qemu]\nmachine_type = "pc"\ndefault_memory = 1024\n')
    spec = write_spec(tmp_path, {})
    assert cli("plan", "--config", str(config), "--format", "argv", spec).stdout == "-machine pc -m 1024M\n"
    assert cli("plan", "--config", str(config), "--memory", "64", "--format", "argv", spec).stdout == "-machine pc -m 64M\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('[hypervisor.qemu]\ndefault_memory = "x"\n')
    result = cli("plan", "--config", str(bad), spec)
    assert result.exit_code == 1 and "default_memory: must be a number of MiB from 1 to" in result.stderr


class Commands:
    @__import__("vmdev").hookimpl
    def register_commands(self, cli: Any) -> None:
        import click

        @cli.command("hello")
        @click.argument("name")
        def hello(name: str) -> None:
            """Say hello."""
            click.echo(f"hello {name}")


def test_plugins_can_add_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmdev import plugins

    real = plugins.get_plugin_manager
    monkeypatch.setattr(plugins, "get_plugin_manager", lambda: real(plugins.LoadPolicy(only=()), plugins=[("cmds", Commands())]))
    import vmdev.cli

    group = vmdev.cli._PluginGroup(name="vmdev-test", commands=dict(vmdev.cli.main.commands))
    result = CliRunner().invoke(group, ["hello", "world"])
    assert result.exit_code == 0 and result.stdout == "hello world\n"
    assert "hello" in CliRunner().invoke(group, ["--help"]).stdout


@pytest.mark.parametrize("module", ["vmdev", "vmdev.cli"])
def test_runs_as_a_module(module: str) -> None:
    """``python -m`` imports cli as __main__: no import cycle may break that."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in ("plan", "resolve", "plugins", "attach", "detach", "status"))


HELLO = """
import click
from vmdev import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command("hello")
    def hello():
        '''Say hello.'''
        click.echo("hello")
"""


def test_each_run_has_the_commands_of_its_own_plugins(make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One group serves every run of a process (CliRunner, an embedding): a command a plugin added
    under one VMDEV_PLUGINS is gone under another, and the built-in it replaced comes back."""
    make_dist("hello-dev", {"hello": "hello_cmd_mod"}, {"hello_cmd_mod": HELLO})
    monkeypatch.setenv("VMDEV_PLUGINS", "hello-dev")
    assert CliRunner().invoke(main, ["hello"]).stdout == "hello\n"
    assert "hello" in CliRunner().invoke(main, ["--help"]).stdout
    monkeypatch.setenv("VMDEV_PLUGINS", "")
    assert CliRunner().invoke(main, ["hello"]).exit_code == 2
    assert "hello" not in CliRunner().invoke(main, ["--help"]).stdout
    monkeypatch.setenv("VMDEV_PLUGINS", "hello-dev")
    assert CliRunner().invoke(main, ["hello"]).exit_code == 0


def test_the_summaries_that_list_lazy_commands_are_the_commands_own(cli: Any) -> None:
    """``vmdev --help`` lists attach, detach, status and check without importing them: what it
    shows must be what the commands themselves would show, at any width."""
    import importlib

    import vmdev.cli

    for name, summary in vmdev.cli.SUMMARIES.items():
        module, attr = vmdev.cli.LAZY_COMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        listed = vmdev.cli._Summary(name, help=summary)
        for limit in range(10, 300, 7):
            assert listed.get_short_help_str(limit) == command.get_short_help_str(limit), (name, limit)
    assert "--qmp" in cli("attach", "--help").stdout  # to describe one: the command itself


def test_vmdev_help_imports_no_sandbox_or_check_command() -> None:
    import subprocess
    import sys

    code = ("import sys\nsys.argv = ['vmdev', '--help']\nfrom vmdev.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write(repr(sorted(m for m in sys.modules if m in ('vmdev.sandbox_cli', 'vmdev.preflight'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "VMDEV_PLUGINS": ""})
    assert done.stderr.endswith("[]") and all(name in done.stdout for name in ("attach", "check", "status"))


LAZY_PLUGIN = """
from vmdev import hookimpl
from vmdev.commands import CommandSpec


@hookimpl
def register_lazy_commands(register):
    register(CommandSpec(name="greet", target="greet_cmd_impl:greet", summary="Greet someone."))
"""
LAZY_IMPL = """
import click


@click.command("greet")
@click.option("--loud", is_flag=True, help="Shout.")
@click.argument("name")
def greet(loud, name):
    '''Greet someone.

    At length.'''
    click.echo(("HELLO " if loud else "hello ") + name)
"""


def test_a_lazy_plugin_command_is_listed_without_importing_it_and_runs_as_itself(
    make_dist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    make_dist("greet-dev", {"greet": "greet_cmd_mod"}, {"greet_cmd_mod": LAZY_PLUGIN, "greet_cmd_impl": LAZY_IMPL})
    monkeypatch.setenv("VMDEV_PLUGINS", "greet-dev")
    monkeypatch.delitem(sys.modules, "greet_cmd_impl", raising=False)
    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0 and "greet" in listing.stdout and "Greet someone." in listing.stdout
    assert "greet_cmd_impl" not in sys.modules
    assert CliRunner().invoke(main, ["greet", "--loud", "you"]).stdout == "HELLO you\n"
    assert "greet_cmd_impl" in sys.modules
    own_help = CliRunner().invoke(main, ["greet", "--help"]).stdout
    assert "--loud" in own_help and "At length." in own_help
    assert CliRunner().invoke(main, ["greet"]).exit_code == 2  # its own usage error: NAME is missing


def declare_greet_as(name: str, make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install (and select) a plugin that declares the greet command under ``name``."""
    plugin = LAZY_PLUGIN.replace('name="greet"', f'name="{name}"')
    module = f"{name}_cmd_mod"
    make_dist(f"{name}-dev", {"greet": module}, {module: plugin, "greet_cmd_impl": LAZY_IMPL})
    monkeypatch.setenv("VMDEV_PLUGINS", f"{name}-dev")


def test_a_declared_command_replaces_the_built_in_of_its_name_and_only_while_its_plugin_is_loaded(
    make_dist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare_greet_as("backends", make_dist, monkeypatch)
    result = CliRunner().invoke(main, ["backends", "you"])
    assert result.stdout == "hello you\n", (result.output, result.exception)
    monkeypatch.setenv("VMDEV_PLUGINS", "")
    assert "live hot plug" in CliRunner().invoke(main, ["backends"]).stdout


TWO_GREETERS = """
from vmdev import hookimpl
from vmdev.commands import CommandSpec


@hookimpl
def register_lazy_commands(register):
    register(CommandSpec(name="greet", target="elsewhere:greet", summary="Greet, again."))
"""


def test_two_plugins_declaring_one_command_is_an_error_naming_both_and_the_built_ins_still_run(
    make_dist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist("greet-dev", {"greet": "greet_cmd_mod"}, {"greet_cmd_mod": LAZY_PLUGIN})
    make_dist("greet-too", {"greet2": "greet_two_mod"}, {"greet_two_mod": TWO_GREETERS})
    monkeypatch.setenv("VMDEV_PLUGINS", "greet-dev,greet-too")
    for argv in (["--help"], ["greet"]):  # what needs the plugins' commands says what is wrong
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 1, argv
        assert result.stderr in (f"vmdev: error: register_lazy_commands: plugins {pair} both declare a command "
                                 "called 'greet'\n" for pair in ("'greet' and 'greet2'", "'greet2' and 'greet'"))
    assert "live hot plug" in CliRunner().invoke(main, ["backends"]).stdout


def test_a_plugin_registering_something_else_than_a_command_spec_is_named() -> None:
    from vmdev import hookimpl
    from vmdev.errors import PluginError
    from vmdev.plugins import LoadPolicy, PluginManager

    class Wrong:
        @hookimpl
        def register_lazy_commands(self, register: Any) -> None:
            register(("greet", "greet_cmd_impl:greet", "Greet someone."))

    pm = PluginManager(LoadPolicy(only=()), plugins=[("wrong", Wrong())])
    with pytest.raises(PluginError, match=r"plugin 'wrong' registered tuple, not a vmdev\.commands\.CommandSpec"):
        pm.lazy_commands()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Greet"}, "command name 'Greet' is not lower-case words joined by hyphens"),
        ({"name": "--help"}, "command name '--help' is not lower-case words"),
        ({"target": "greet_cmd_impl"}, "command target 'greet_cmd_impl' is not 'module:attribute'"),
        ({"target": "greet cmd:x"}, "command target 'greet cmd:x' is not 'module:attribute'"),
        ({"summary": " "}, "a command summary is one paragraph of text"),
        ({"summary": "One.\n\nTwo."}, "a command summary is one paragraph of text"),
    ],
)
def test_a_command_spec_is_checked_where_it_is_made(fields: dict[str, str], message: str) -> None:
    from vmdev.commands import CommandSpec
    from vmdev.errors import PluginError

    good = {"name": "greet", "target": "greet_cmd_impl:greet", "summary": "Greet someone."}
    with pytest.raises(PluginError, match=message):
        CommandSpec(**{**good, **fields})


def test_a_declared_command_replaces_a_built_in_that_runs_without_click_too(
    make_dist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmdev.cli import run_plain
    from vmdev.plugins import shared_manager

    declare_greet_as("plugins", make_dist, monkeypatch)
    with shared_manager():
        assert run_plain(["plugins"]) is None and run_plain(["plugins", "--json"]) is None
    assert CliRunner().invoke(main, ["plugins", "you"]).stdout == "hello you\n"
