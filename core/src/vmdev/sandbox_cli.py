"""The sandbox commands of the CLI: ``vmdev attach``, ``vmdev detach``, ``vmdev status``.

They drive a running sandbox through the device manager (:mod:`vmdev.manager`) and its state file
(:mod:`vmdev.state`); the running VM is reached through the sandbox's backend's live driver
(:mod:`vmdev.live`), whose connection options are flags of these commands (QEMU: ``--qmp
SOCKET``; every installed backend's ``live_options``). ``--hypervisor`` defaults to the
sandbox's, from its state file. See docs/manager.md. Registered on the ``vmdev`` group by
:mod:`vmdev.cli`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import click

from vmdev.cliutil import F, SettingsCommand, errors_as_one_line, fail, flag_overrides, host_context
from vmdev.errors import VmdevError, one_line
from vmdev.sandbox_ops import DeviceArgs, Sandbox, attach, check_hypervisor, detach
from vmdev.sandbox_ops import connection as live_connection
from vmdev.sandbox_ops import driver as live_driver

if TYPE_CHECKING:
    from vmdev.backend import Backend, LiveConnection
    from vmdev.host import HostContext
    from vmdev.plugins import PluginManager
    from vmdev.state import SandboxState

_SETTINGS_FLAGS: dict[str, str] = {
    "machine_type": "machine_type",
    "memory": "default_memory",
}
_LIVE_KEY = "vmdev.live_flags"


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


# --- the live drivers' flags ---------------------------------------------------------------------------
def _live_flag_options() -> list[click.Parameter]:
    """One option per live-driver flag of the installed backends (``--qmp``, ``--domain``...);
    their values are read back with :func:`_live_flags`."""
    from vmdev.plugins import get_plugin_manager

    try:
        backends = get_plugin_manager().backends()
    except VmdevError as exc:
        fail(str(exc))
        return []
    owners: dict[str, list[str]] = {}
    helps: dict[str, tuple[str, str]] = {}
    for name in backends.names():
        for option in backends.get(name).backend.live_options:
            owners.setdefault(option.flag, []).append(name)
            helps.setdefault(option.flag, (option.help, option.metavar))
    params: list[click.Parameter] = []
    for flag, names in owners.items():

        def store(ctx: click.Context, param: click.Parameter, value: Any, flag: str = flag) -> None:
            if value is not None:
                ctx.meta.setdefault(_LIVE_KEY, {})[flag] = value

        text, metavar = helps[flag]
        params.append(click.Option([flag], default=None, metavar=metavar, expose_value=False, callback=store,
                                   help=f"{text} (live driver of {', '.join(names)})"))
    return params


def _live_flags() -> dict[str, str]:
    """The live-driver flags the current command got, by flag."""
    return dict(click.get_current_context().meta.get(_LIVE_KEY, {}))


class _LiveFlags(click.Command):
    """A command that also takes every installed backend's live-driver flags."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        return params[:-1] + _live_flag_options() + params[-1:]  # keep --help last


class _SandboxCommand(_LiveFlags, SettingsCommand):
    """``attach``/``detach``: settings flags and live-driver flags."""


# --- options -------------------------------------------------------------------------------------------
#: how a device is named: as ``vmdev resolve`` takes it, as an OCI device, or a sandbox device
_device_options = _options(
    click.option("--type", "dev_type", type=click.Choice(["c", "b", "u", "p"]), help="Device type."),
    click.option("--major", type=int, help="-1 for a regular file used as a disk."),
    click.option("--minor", type=int),
    click.option("--host-path", default="", help="Host path for a block file (major -1)."),
    click.option("--oci-device", help="An OCI linux.devices entry as JSON, or @FILE holding it."),
    click.option("--sandbox-device", help="A sandbox device by id or kind (rng0, rng)."),
    click.option("--container", "user", default="", help="The container that uses the device."),
    click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys."),
    click.argument("container_path", required=False),
)
#: where the sandbox is (its state file; its VM through the live-driver flags), and a new one's settings
_sandbox_options = _options(
    click.option("--state", "state_path", required=True, type=click.Path(dir_okay=False),
                 help="The sandbox's state file (created by the first attach, or by plan --state)."),
    click.option("--hypervisor", help="The sandbox's backend (default: the one in its state file; qemu "
                 "for a new sandbox without --config)."),
    click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                 help="Seconds to wait for the VM's answers and for the guest to release a device."),
    click.option("--config", "config_file", type=click.Path(dir_okay=False),
                 help="Settings TOML of a new sandbox (Kata's configuration.toml works)."),
    click.option("--machine-type", help="Machine type of a new sandbox (default q35)."),
    click.option("--memory", type=click.IntRange(min=1), help="Guest memory of a new sandbox in MiB."),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
)


def _sandbox(kwargs: dict[str, Any]) -> Sandbox:
    return Sandbox(
        state_path=kwargs.pop("state_path"),
        hypervisor=kwargs.pop("hypervisor"),
        live=_live_flags(),
        timeout=kwargs.pop("timeout"),
        config_file=kwargs.pop("config_file"),
        overrides={**{key: kwargs.pop(flag) for flag, key in _SETTINGS_FLAGS.items()}, **flag_overrides()},
        sysfs_root=kwargs.pop("sysfs_root"),
    )


@click.command("attach", cls=_SandboxCommand)
@_sandbox_options
@_device_options
@errors_as_one_line
def attach_cmd(**kwargs: Any) -> None:
    """Attach a device to a running sandbox VM, or count one more attach of it.

    The first attach of a device hot-plugs it through the backend's live driver (QEMU: over QMP,
    --qmp SOCKET; a failed hot plug is rolled back). The sandbox's state file is loaded, changed
    and saved at every step. Name the device as for `vmdev resolve` (--type/--major/--minor
    [--host-path] CONTAINER_PATH), as an OCI device (--oci-device), or a sandbox device such as
    the RNG (--sandbox-device rng).
    """
    sandbox, as_json, user = _sandbox(kwargs), kwargs.pop("as_json"), kwargs.pop("user")
    click.echo(attach(sandbox, DeviceArgs(**kwargs), user=user, as_json=as_json))


@click.command("detach", cls=_SandboxCommand)
@_sandbox_options
@_device_options
@click.option("--id", "device_id", help="The device's id (instead of its description).")
@errors_as_one_line
def detach_cmd(**kwargs: Any) -> None:
    """Detach a device from a running sandbox VM and drop the container's reference to it.

    The last detach unplugs it (waiting for the guest to release it, then removing its
    backends); the last reference forgets it.
    """
    sandbox, as_json, user = _sandbox(kwargs), kwargs.pop("as_json"), kwargs.pop("user")
    device_id = kwargs.pop("device_id")
    click.echo(detach(sandbox, DeviceArgs(**kwargs), device_id=device_id, user=user, as_json=as_json))


# --- status --------------------------------------------------------------------------------------------
@attrs.define
class _Report:
    """What ``vmdev status`` found beside the state: the VM, presence and host changes per device."""

    vm: dict[str, Any]
    presence: dict[str, list[tuple[str, bool]]] = attrs.Factory(dict)
    changes: dict[str, list[dict[str, str | None]]] = attrs.Factory(dict)
    unchecked: dict[str, str] = attrs.Factory(dict)


@click.command("status", cls=_LiveFlags)
@click.option("--state", "state_path", required=True, type=click.Path(dir_okay=False),
              help="The sandbox's state file.")
@click.option("--hypervisor", help="The sandbox's backend (default: the one in its state file).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for the VM's answers when it is asked which devices it has.")
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys (for the host facts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def status_cmd(state_path: str, hypervisor: str | None, timeout: float, sysfs_root: str | None,
               as_json: bool) -> None:
    """Show a sandbox's devices: counts, attachments, interrupted or failed operations, whether the
    host changed under a device since it was built, and (with the live driver's flags, --qmp for
    QEMU) whether what their hot plug created is present in the running VM."""
    from vmdev.plugins import get_plugin_manager
    from vmdev.state import StateFile

    state = StateFile(state_path).load()
    check_hypervisor(hypervisor, state, state_path)
    plugins = get_plugin_manager()
    report = _Report(vm={"hypervisor": state.settings.hypervisor, "connection": {}, "reachable": None,
                         "error": ""})
    try:
        backend = plugins.backend(state.settings.hypervisor)
    except VmdevError as exc:
        report.vm["error"] = str(exc)
    else:
        connection = live_connection(backend, _live_flags(), timeout, state.settings, required=False)
        if connection is not None:
            report.vm["connection"] = dict(connection.options)
            reachable, error = _presence(backend, connection, state, report.presence)
            report.vm.update(reachable=reachable, error=error)
    _host_changes(state, host_context(sysfs_root), plugins, report)
    if as_json:
        _status_json(state, state_path, report)
    else:
        _status_text(state, state_path, report)


def _presence(
    backend: Backend, connection: LiveConnection, state: SandboxState, out: dict[str, list[tuple[str, bool]]]
) -> tuple[bool, str]:
    try:
        driver = live_driver(backend, connection)
        assert driver is not None
        try:
            # asks the VM itself: a driver reaches its VM when a command first needs it (QEMU's
            # session, libvirt's domain check), and a sandbox whose devices all stay in the
            # container would otherwise be called reachable without a word to the VM
            driver.free_ports()
            for record in state.devices:
                if record.attachment is not None and record.attachment.hotplug:
                    out[record.id] = driver.presence(record.attachment.hotplug)
        finally:
            driver.close()
    except VmdevError as exc:
        return False, str(exc)
    return True, ""


def _host_changes(state: SandboxState, host: HostContext, plugins: PluginManager, report: _Report) -> None:
    """Compare every device's recorded host facts with the host's now (devices rebuilt from their
    saved form); a device that cannot be checked says why."""
    from vmdev.manager import DeviceManager

    try:
        manager = DeviceManager(state=state, host=host, plugins=plugins)
    except VmdevError as exc:
        report.unchecked = {record.id: str(exc) for record in state.devices if record.facts}
        return
    for record in state.devices:
        try:
            report.changes[record.id] = [change.to_json() for change in manager.host_changes(record.id)]
        except VmdevError as exc:
            report.unchecked[record.id] = str(exc)


def _status_json(state: SandboxState, state_path: str, report: _Report) -> None:
    from vmdev.manager import describe_status
    from vmdev.state import record_to_json, to_document

    document = to_document(state)
    devices = []
    for record in state.devices:
        data = {**record_to_json(record), "status": describe_status(record),
                "host_changes": report.changes.get(record.id)}
        if record.id in report.unchecked:
            data["host_check_error"] = report.unchecked[record.id]
        if record.id in report.presence:
            data["present"] = [{"object": obj, "present": found} for obj, found in report.presence[record.id]]
        devices.append(data)
    document["devices"] = devices
    click.echo(json.dumps({"state_file": state_path, "vm": report.vm, **document}, indent=2))


def _status_text(state: SandboxState, state_path: str, report: _Report) -> None:
    """The status table. Every line goes through :func:`vmdev.errors.one_line` (cells before their
    widths are taken): a state file's strings (kinds, container paths, error texts QEMU sent), the
    VM's object names and the options given are not vmdev's, and none may start a line of its own."""
    from vmdev.manager import describe_status

    def echo(text: str) -> None:
        click.echo(one_line(text))

    settings = state.settings
    echo(f"sandbox {state_path}: {settings.hypervisor}, machine {settings.machine_type}, "
         f"{len(state.devices)} device(s)")
    vm = report.vm
    if vm["connection"] or vm["error"]:
        where = ", ".join(f"{key} {value}" for key, value in vm["connection"].items())
        reach = "reachable" if vm["reachable"] else f"unreachable: {vm['error']}"
        echo(f"vm ({settings.hypervisor}{', ' + where if where else ''}): {reach}")
    rows: list[tuple[str, ...]] = [("ID", "KIND", "REFS", "ATTACHED", "CONTAINER PATH", "STATUS")]
    for r in state.devices:
        cells = (r.id, r.kind, str(r.ref_count), str(r.attach_count), r.container_path or "-",
                 describe_status(r))
        rows.append(tuple(one_line(cell) for cell in cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    for device_id, found in report.presence.items():
        for obj, present in found:
            echo(f"  {device_id}: {obj} {'present' if present else 'MISSING'} in the VM")
    for device_id, changed in report.changes.items():
        for change in changed:
            now = "gone" if change["now"] is None else f"now {change['now']!r}"
            echo(f"  {device_id}: host changed: {change['fact']} was {change['recorded']!r}, {now}")
    for device_id, why in report.unchecked.items():
        echo(f"  {device_id}: host not checked: {why}")
