"""The ``vmdev`` command line.

Errors exit 1 with one line on stderr that names the device and the problem;
usage errors exit 2 (click's convention). ``VMDEV_DEBUG=1`` adds tracebacks.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vmdev.cliutil import SettingsCommand, errors_as_one_line, fail, flag_overrides, host_context
from vmdev.errors import VmdevError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.preflight import check_cmd
from vmdev.sandbox_cli import attach_cmd, detach_cmd, status_cmd
from vmdev.settings import SandboxSettings, load_settings


class _PluginGroup(click.Group):
    """Loads plugin commands (the ``register_commands`` hook) once, on first lookup."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        from vmdev.plugins import get_plugin_manager

        try:
            get_plugin_manager().register_commands(self)
        except VmdevError as exc:
            fail(str(exc))

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vmdev")
def main() -> None:
    """Turn a container's device requests into devices attached to its sandbox VM."""


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def plugins_cmd(as_json: bool) -> None:
    """List the loaded plugins, their distributions, versions and hooks."""
    from vmdev.plugins import get_plugin_manager

    infos = get_plugin_manager().list_plugins()
    if as_json:
        rows = [
            {"name": i.name, "distribution": i.distribution, "version": i.version, "hooks": list(i.hooks)}
            for i in infos
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for info in infos:
        dist = f"{info.distribution} {info.version}".strip()
        click.echo(f"{info.name}  ({dist})\n    hooks: {', '.join(info.hooks)}")


@main.command("resolve", cls=SettingsCommand)
@click.option("--type", "dev_type", type=click.Choice(["c", "b", "u", "p"]), required=True)
@click.option("--major", type=int, required=True, help="-1 for a regular file used as a disk.")
@click.option("--minor", type=int, required=True)
@click.option("--host-path", default="", help="Host path for a block file (major -1).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Sandbox settings TOML (Kata's configuration.toml works).")
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("container_path")
@errors_as_one_line
def resolve_cmd(
    dev_type: str,
    major: int,
    minor: int,
    host_path: str,
    config_file: str | None,
    sysfs_root: str | None,
    as_json: bool,
    container_path: str,
) -> None:
    """Print the host path of a device given by type and major:minor."""
    from vmdev.plugins import get_plugin_manager

    pm = get_plugin_manager()
    info = DeviceInfo(
        container_path=container_path, dev_type=dev_type, major=major, minor=minor, host_path=host_path
    )
    settings = pm.prepare_settings(load_settings(config_file, overrides=flag_overrides(), plugins=pm))
    resolved = pm.resolve_host_path(info, host_context(sysfs_root), settings)
    click.echo(json.dumps({"host_path": resolved}) if as_json else resolved)


@main.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def backends_cmd(as_json: bool) -> None:
    """List the installed hypervisor backends, with the plugin and distribution of each."""
    from vmdev.plugins import get_plugin_manager

    backends = get_plugin_manager().backends()
    rows = [backends.backends[name] for name in backends.names()]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    for row in rows:
        sections = ", ".join(f"[hypervisor.{s}]" for s in row.backend.kata_sections) or "-"
        live = "live hot plug" if row.backend.live is not None else "plans only"
        click.echo(f"{row.name}  ({row.plugin}, {row.distribution or '-'}; {live}; reads {sections})\n"
                   f"    {row.backend.description}")


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def settings_cmd(as_json: bool) -> None:
    """List every settings key the installed plugins declare: type, default, the Kata key it
    mirrors, the flag that sets it, and the plugin that owns it."""
    from vmdev.plugins import get_plugin_manager

    declared = get_plugin_manager().declared_settings()
    if as_json:
        click.echo(json.dumps([{**d.setting.to_json(), "plugin": d.plugin} for d in declared], indent=2,
                              default=list))
        return
    for entry in declared:
        s = entry.setting
        where = f"[{s.section}]" if s.section != "hypervisor" else "[hypervisor.*]"
        extra = ", ".join(part for part in (
            f"Kata {s.kata_key}" if s.kata_key else "vmdev's own",
            f"flag {s.flag}" if s.flag else "",
            f"one of {', '.join(s.choices)}" if s.choices else "",
        ) if part)
        click.echo(f"{s.name} = {json.dumps(s.default, default=list)}  ({s.type}, {where}, {extra}; "
                   f"{entry.plugin})\n    {s.description}")


@main.command("plan", cls=SettingsCommand)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Sandbox settings TOML (Kata's configuration.toml works).",
)
@click.option("--hypervisor", help="An installed backend (vmdev backends); default: the one the --config "
              "file is for, else qemu.")
@click.option("--machine-type", help="QEMU machine type (default q35).")
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys.")
@click.option("--memory", type=click.IntRange(min=1), help="Guest memory in MiB (default_memory).")
@click.option("--hotplug/--coldplug", default=None, help="Hot-plug devices into a running VM.")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "argv", "text"]), default="json", show_default=True
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False),
    help="Also keep the plan's devices as a new sandbox in this state file, for vmdev attach/detach/status.",
)
@click.argument("oci_config", type=click.Path(dir_okay=False))
@errors_as_one_line
def plan_cmd(
    config_file: str | None,
    hypervisor: str | None,
    machine_type: str | None,
    sysfs_root: str | None,
    memory: int | None,
    hotplug: bool | None,
    fmt: str,
    state_path: str | None,
    oci_config: str,
) -> None:
    """Plan the devices of an OCI config.json for a hypervisor."""
    from vmdev.oci import load_spec
    from vmdev.planner import Plan, plan

    settings = load_settings(
        config_file,
        hypervisor=hypervisor,
        overrides={
            "machine_type": machine_type,
            "default_memory": memory,
            "hotplug": hotplug,
            **flag_overrides(),
        },
    )
    spec = load_spec(oci_config)
    host = host_context(sysfs_root)
    result: Plan = plan(spec, settings, host=host) if state_path is None else _plan_sandbox(
        spec, settings, host, state_path
    )
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    elif fmt == "argv":
        click.echo(result.argv_text())
    else:
        _print_text(result)


def _plan_sandbox(spec: Any, settings: SandboxSettings, host: HostContext, state_path: str) -> Any:
    """Plan a new sandbox with the device manager and save its state (never over an existing one)."""
    from vmdev.manager import DeviceManager
    from vmdev.state import StateError, StateFile

    state_file = StateFile(state_path)
    with state_file.locked():
        if state_file.exists():
            raise StateError(
                "already holds a sandbox; plan --state starts a new one (remove the file first)",
                device=state_path,
            )
        manager = DeviceManager(settings, host=host)
        result = manager.plan_boot(spec)
        state_file.save(manager.snapshot())
    return result


def _print_text(result: Any) -> None:
    rows = [("KIND", "ID", "PLUGIN", "PLUG", "CONTAINER PATH", "HOST PATH")]
    for d in result.devices:
        plug = "hot" if d.hotplug else ("-" if d.kind == "generic" else "cold")
        rows.append((d.kind, d.id, d.plugin, plug, d.container_path or "-", d.host_path or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    data = result.to_json()
    if result.qemu is not None:
        click.echo("\nqemu arguments:\n  " + result.argv_text())
        for key in ("hotplug", "unplug"):
            for command in data["qemu"][key]:
                click.echo(f"qmp {key}: {json.dumps(command)}")
    else:
        click.echo(f"\n{result.plan_key}:\n" + json.dumps(data[result.plan_key], indent=2))
    for name in result.extras:
        click.echo(f"\n{name}:\n" + json.dumps(data[name], indent=2))


for _command in (attach_cmd, detach_cmd, status_cmd, check_cmd):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
