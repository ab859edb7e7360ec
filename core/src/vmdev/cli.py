"""The ``vmdev`` command line.

Errors exit 1 with one line on stderr that names the device and the problem;
usage errors exit 2 (click's convention). ``VMDEV_DEBUG=1`` adds tracebacks.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vmdev.cliutil import errors_as_one_line, fail, host_context
from vmdev.errors import VmdevError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.sandbox_cli import attach_cmd, detach_cmd, status_cmd
from vmdev.settings import HYPERVISORS, QEMU, SandboxSettings, load_settings


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


@main.command("resolve")
@click.option("--type", "dev_type", type=click.Choice(["c", "b", "u", "p"]), required=True)
@click.option("--major", type=int, required=True, help="-1 for a regular file used as a disk.")
@click.option("--minor", type=int, required=True)
@click.option("--host-path", default="", help="Host path for a block file (major -1).")
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys.")
@click.option("--vhost-user-store", type=click.Path(file_okay=False), help="Enable this vhost-user store.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("container_path")
@errors_as_one_line
def resolve_cmd(
    dev_type: str,
    major: int,
    minor: int,
    host_path: str,
    sysfs_root: str | None,
    vhost_user_store: str | None,
    as_json: bool,
    container_path: str,
) -> None:
    """Print the host path of a device given by type and major:minor."""
    from vmdev.plugins import get_plugin_manager

    info = DeviceInfo(
        container_path=container_path, dev_type=dev_type, major=major, minor=minor, host_path=host_path
    )
    resolved = get_plugin_manager().resolve_host_path(info, host_context(sysfs_root, vhost_user_store, None))
    click.echo(json.dumps({"host_path": resolved}) if as_json else resolved)


@main.command("plan")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Sandbox settings TOML (Kata's configuration.toml works).",
)
@click.option("--hypervisor", type=click.Choice(HYPERVISORS), default=QEMU, show_default=True)
@click.option("--machine-type", help="QEMU machine type (default q35).")
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys.")
@click.option("--vhost-user-store", type=click.Path(file_okay=False), help="Enable this vhost-user store.")
@click.option("--block-driver", help="block_device_driver")
@click.option("--entropy-source", help="entropy_source")
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
    hypervisor: str,
    machine_type: str | None,
    sysfs_root: str | None,
    vhost_user_store: str | None,
    block_driver: str | None,
    entropy_source: str | None,
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
            "block_device_driver": block_driver,
            "entropy_source": entropy_source,
        },
    )
    spec = load_spec(oci_config)
    host = host_context(sysfs_root, vhost_user_store, settings)
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
        key = "cloud_hypervisor" if result.cloud_hypervisor is not None else "firecracker"
        click.echo(f"\n{key}:\n" + json.dumps(data[key], indent=2))


for _command in (attach_cmd, detach_cmd, status_cmd):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
