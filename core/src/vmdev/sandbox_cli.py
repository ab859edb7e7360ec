"""The sandbox commands of the CLI: ``vmdev attach``, ``vmdev detach``, ``vmdev status``.

They drive a running sandbox through the device manager (:mod:`vmdev.manager`) and its state file
(:mod:`vmdev.state`); the running VM is reached through the sandbox's backend's live driver
(:mod:`vmdev.live`), whose connection options are flags of these commands (QEMU: ``--qmp
SOCKET``; every installed backend's ``live_options``). ``--hypervisor`` defaults to the
sandbox's, from its state file. See docs/manager.md. Registered on the ``vmdev`` group by
:mod:`vmdev.cli`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from vmdev.cliutil import F, SettingsCommand, errors_as_one_line, fail, flag_overrides, host_context
from vmdev.errors import ConfigError, VmdevError
from vmdev.models import DeviceInfo
from vmdev.settings import SandboxSettings, load_settings

if TYPE_CHECKING:
    from vmdev.backend import Backend, LiveConnection
    from vmdev.host import HostContext
    from vmdev.live import HotPlugger
    from vmdev.manager import DeviceManager
    from vmdev.plugins import PluginManager
    from vmdev.state import DeviceRecord, SandboxState, StateFile

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


def _connection(
    backend: Backend, given: Mapping[str, str], timeout: float, settings: SandboxSettings, *, required: bool
) -> LiveConnection | None:
    """How to reach the backend's running VM from the flags given; None for a backend without a
    live driver (books only) and, unless ``required``, when its flags are not given. The sandbox's
    ``settings`` go along when the connection carries them (a driver may read its defaults there)."""
    from vmdev.backend import LiveConnection

    own = {option.flag: option for option in backend.live_options}
    stray = sorted(set(given) - set(own))
    if stray:
        theirs = ", ".join(own) or "none"
        raise ConfigError(
            f"is not an option of the {backend.name} backend's live driver (its options: {theirs})",
            field=stray[0],
        )
    if backend.live is None:
        return None
    missing = [option.flag for option in backend.live_options if option.required and option.flag not in given]
    if missing:
        if not required:
            return None
        raise ConfigError(
            f"is required: the {backend.name} backend reaches the sandbox's running VM through it",
            field=missing[0],
        )
    options = {option.name: given[option.flag] for option in backend.live_options if option.flag in given}
    extra = {"settings": settings} if "settings" in attrs.fields_dict(LiveConnection) else {}
    return LiveConnection(options=options, timeout=timeout, **extra)


def _driver(backend: Backend, connection: LiveConnection | None) -> HotPlugger | None:
    if connection is None or backend.live is None:
        return None
    return backend.live(connection)


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


@attrs.frozen(kw_only=True)
class _DeviceArgs:
    """The device options of ``attach``/``detach`` as given."""

    dev_type: str | None = None
    major: int | None = None
    minor: int | None = None
    host_path: str = ""
    oci_device: str | None = None
    sandbox_device: str | None = None
    container_path: str | None = None

    @property
    def given(self) -> list[str]:
        forms = (
            ("--type/--major/--minor", self.dev_type is not None or bool(self.container_path)),
            ("--oci-device", bool(self.oci_device)),
            ("--sandbox-device", bool(self.sandbox_device)),
        )
        return [name for name, present in forms if present]

    def request(self) -> DeviceInfo | str:
        """A :class:`DeviceInfo`, or the name of a sandbox device."""
        if len(self.given) != 1:
            raise ConfigError(
                "give exactly one device: --type/--major/--minor CONTAINER_PATH, --oci-device JSON or "
                f"--sandbox-device NAME (got {', '.join(self.given) or 'none'})",
                field="device",
            )
        if self.sandbox_device:
            return self.sandbox_device
        if self.oci_device:
            return _oci_device(self.oci_device)
        if self.dev_type is None or self.major is None or self.minor is None or not self.container_path:
            raise ConfigError("--type, --major, --minor and CONTAINER_PATH are all required", field="device")
        return DeviceInfo(
            container_path=self.container_path,
            dev_type=self.dev_type,
            major=self.major,
            minor=self.minor,
            host_path=self.host_path,
        )


def _oci_device(text: str) -> DeviceInfo:
    from vmdev.oci import parse_spec

    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {text[1:]}: {exc.strerror}", field="--oci-device") from None
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}", field="--oci-device") from None
    try:
        return parse_spec({"linux": {"devices": [entry]}}).devices[0]
    except ConfigError as exc:
        field = exc.field.replace("$.linux.devices[0]", "--oci-device")
        raise ConfigError(exc.message, device=exc.device, field=field) from None


def _check_hypervisor(given: str | None, state: SandboxState, state_path: str) -> None:
    if given is not None and given != state.settings.hypervisor:
        raise ConfigError(
            f"this sandbox runs on {state.settings.hypervisor} (kept in its state file), not {given}; "
            "leave out --hypervisor",
            device=state_path,
            field="hypervisor",
        )


@attrs.frozen(kw_only=True)
class _Sandbox:
    """The options naming a sandbox, and opening it: load its state, connect to its VM."""

    state_path: str
    hypervisor: str | None
    live: Mapping[str, str]
    timeout: float
    config_file: str | None
    overrides: Mapping[str, Any]
    sysfs_root: str | None

    @property
    def file(self) -> StateFile:
        from vmdev.state import StateFile

        return StateFile(self.state_path)

    def state(self, plugins: PluginManager) -> SandboxState:
        """The saved state, or a new one with the given settings; settings given for an existing
        sandbox must be the ones it was created with."""
        from vmdev.state import SandboxState

        given = self.config_file is not None or any(v is not None for v in self.overrides.values())
        if not self.file.exists():
            settings = load_settings(self.config_file, hypervisor=self.hypervisor, overrides=self.overrides,
                                     plugins=plugins)
            return SandboxState(settings=settings)
        state = self.file.load()
        _check_hypervisor(self.hypervisor, state, self.state_path)
        if given:
            settings = load_settings(self.config_file, hypervisor=state.settings.hypervisor,
                                     overrides=self.overrides, plugins=plugins)
            if settings != state.settings:
                raise ConfigError(
                    "differ from the settings this sandbox was created with (kept in its state file); "
                    "leave out --config and the settings options",
                    device=self.state_path,
                    field="settings",
                )
        return state

    @contextlib.contextmanager
    def opened(self) -> Iterator[DeviceManager]:
        """Under the state file's lock: a manager for the sandbox that changes its VM through the
        backend's live driver (books only for a backend without one) and saves every change;
        saved once more at the end."""
        from vmdev.manager import DeviceManager
        from vmdev.plugins import get_plugin_manager

        plugins = get_plugin_manager()
        with self.file.locked():
            state = self.state(plugins)
            backend = plugins.backend(state.settings.hypervisor)
            connection = _connection(backend, self.live, self.timeout, state.settings, required=True)
            driver = _driver(backend, connection)
            try:
                manager = DeviceManager(state=state, host=host_context(self.sysfs_root), plugins=plugins,
                                        hotplugger=driver, journal=self.file.save)
                yield manager
            finally:
                if driver is not None:
                    driver.close()
            self.file.save(manager.snapshot())


def _find_record(
    manager: DeviceManager, request: DeviceInfo | str | None, device_id: str | None
) -> DeviceRecord:
    from vmdev.manager import DeviceNotFoundError, device_key

    if (request is None) == (device_id is None):
        raise ConfigError("give the device either by --id or by its description", field="device")
    if device_id is not None:
        return manager.get(device_id)
    if isinstance(request, str):
        found, what, key = manager.find_sandbox_device(request), request, f"sandbox {request}"
    else:
        assert request is not None
        found, what, key = manager.find(request), request.name, device_key(request)
    if found is None:
        raise DeviceNotFoundError(f"this sandbox has no such device ({key})", device=what, field="id")
    return found


def _echo_record(record: DeviceRecord | None, verb: str, as_json: bool, extra: dict[str, Any]) -> None:
    from vmdev.manager import describe_status
    from vmdev.state import record_to_json

    if as_json:
        data = record_to_json(record) if record is not None else None
        click.echo(json.dumps({**extra, "device": data}, indent=2))
    elif record is None:
        click.echo(f"{verb} {extra['id']}: no container uses it any more; forgotten")
    else:
        buses = record.attachment.buses if record.attachment is not None else ()
        click.echo(
            f"{verb} {record.id} ({record.kind}, {record.name}): {describe_status(record)}; attach count "
            f"{record.attach_count}, references {record.ref_count}"
            + (f", bus {', '.join(buses)}" if buses else "")
        )


def _sandbox(kwargs: dict[str, Any]) -> _Sandbox:
    return _Sandbox(
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
    request = _DeviceArgs(**kwargs).request()
    with sandbox.opened() as manager:
        if isinstance(request, str):
            record = manager.add_sandbox_device(request, user=user)
        else:
            record = manager.add_device(request, user=user)
    _echo_record(record, "attached", as_json, {"id": record.id, "plugged": record.attach_count == 1})


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
    args = _DeviceArgs(**kwargs)
    request = args.request() if args.given else None
    if not sandbox.file.exists():
        from vmdev.state import StateError

        raise StateError("no such state file: nothing is attached to this sandbox", device=sandbox.state_path)
    with sandbox.opened() as manager:
        target = _find_record(manager, request, device_id)
        record = manager.release_device(target.id, user=user)
    _echo_record(record, "detached", as_json, {"id": target.id, "unplugged": target.attach_count == 1})


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
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
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
    _check_hypervisor(hypervisor, state, state_path)
    plugins = get_plugin_manager()
    report = _Report(vm={"hypervisor": state.settings.hypervisor, "connection": {}, "reachable": None,
                         "error": ""})
    try:
        backend = plugins.backend(state.settings.hypervisor)
    except VmdevError as exc:
        report.vm["error"] = str(exc)
    else:
        connection = _connection(backend, _live_flags(), timeout, state.settings, required=False)
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
        driver = _driver(backend, connection)
        assert driver is not None
        try:
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
    from vmdev.manager import describe_status

    settings = state.settings
    click.echo(f"sandbox {state_path}: {settings.hypervisor}, machine {settings.machine_type}, "
               f"{len(state.devices)} device(s)")
    vm = report.vm
    if vm["connection"] or vm["error"]:
        where = ", ".join(f"{key} {value}" for key, value in vm["connection"].items())
        reach = "reachable" if vm["reachable"] else f"unreachable: {vm['error']}"
        click.echo(f"vm ({settings.hypervisor}{', ' + where if where else ''}): {reach}")
    rows = [("ID", "KIND", "REFS", "ATTACHED", "CONTAINER PATH", "STATUS")]
    for r in state.devices:
        rows.append((r.id, r.kind, str(r.ref_count), str(r.attach_count), r.container_path or "-",
                     describe_status(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    for device_id, found in report.presence.items():
        for obj, present in found:
            click.echo(f"  {device_id}: {obj} {'present' if present else 'MISSING'} in the VM")
    for device_id, changed in report.changes.items():
        for change in changed:
            now = "gone" if change["now"] is None else f"now {change['now']!r}"
            click.echo(f"  {device_id}: host changed: {change['fact']} was {change['recorded']!r}, {now}")
    for device_id, why in report.unchecked.items():
        click.echo(f"  {device_id}: host not checked: {why}")
