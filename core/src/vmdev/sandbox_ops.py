"""What ``vmdev attach`` and ``vmdev detach`` do, without click.

The click commands (:mod:`vmdev.sandbox_cli`) and the command line's plain path
(:func:`vmdev.cli.run_plain`, which reads plain arguments without importing click: about 25 ms of
CPU per call, issue 13) both call :func:`attach` and :func:`detach` with the options as given, and
print the text they return. Everything here is independent of how the options were read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from vmdev.errors import ConfigError, one_line
from vmdev.models import DeviceInfo
from vmdev.settings import SandboxSettings, load_settings

if TYPE_CHECKING:
    from vmdev.backend import Backend, LiveConnection
    from vmdev.live import HotPlugger
    from vmdev.manager import DeviceManager
    from vmdev.plugins import PluginManager
    from vmdev.state import DeviceRecord, SandboxState, StateFile


def connection(
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
    return LiveConnection(options=options, timeout=timeout, settings=settings)


def driver(backend: Backend, connection: LiveConnection | None) -> HotPlugger | None:
    if connection is None or backend.live is None:
        return None
    return backend.live(connection)


@attrs.frozen(kw_only=True)
class DeviceArgs:
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
            return oci_device(self.oci_device)
        if self.dev_type is None or self.major is None or self.minor is None or not self.container_path:
            raise ConfigError("--type, --major, --minor and CONTAINER_PATH are all required", field="device")
        return DeviceInfo(
            container_path=self.container_path,
            dev_type=self.dev_type,
            major=self.major,
            minor=self.minor,
            host_path=self.host_path,
        )


#: the largest ``--oci-device @FILE`` read: one ``linux.devices`` entry is ~100 bytes and its path
#: at most PATH_MAX (4096 bytes, 24 KiB written as JSON escapes), so 64 KiB is ample; the file must
#: be a regular one (a FIFO would block the read, ``/dev/zero`` never ends)
MAX_OCI_DEVICE_BYTES: Final = 64 * 1024


def oci_device(text: str) -> DeviceInfo:
    """The device of ``--oci-device``: an OCI ``linux.devices`` entry as JSON, or ``@FILE`` holding
    one; every problem a :class:`ConfigError` of field ``--oci-device`` (naming the file)."""
    from vmdev.host import read_named
    from vmdev.oci import parse_spec
    from vmdev.strictjson import JsonError, json_value

    source = ""
    data: bytes | str = text
    if text.startswith("@"):
        source = text[1:]
        data = read_named(source, limit=MAX_OCI_DEVICE_BYTES, refuse=lambda reason: ConfigError(
            f"cannot read: {reason}", device=source, field="--oci-device"))
    try:
        entry = json_value(data)
    except JsonError as exc:
        raise ConfigError(f"not valid JSON: {exc}", device=source, field="--oci-device") from None
    try:
        return parse_spec({"linux": {"devices": [entry]}}).devices[0]
    except ConfigError as exc:
        field = exc.field.replace("$.linux.devices[0]", "--oci-device")
        raise ConfigError(exc.message, device=exc.device, field=field) from None


def check_hypervisor(given: str | None, state: SandboxState, state_path: str) -> None:
    if given is not None and given != state.settings.hypervisor:
        raise ConfigError(
            f"this sandbox runs on {state.settings.hypervisor} (kept in its state file), not {given}; "
            "leave out --hypervisor",
            device=state_path,
            field="hypervisor",
        )


@attrs.frozen(kw_only=True)
class Sandbox:
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
        state = self.file.load_if_present()
        if state is None:
            settings = load_settings(self.config_file, hypervisor=self.hypervisor, overrides=self.overrides,
                                     plugins=plugins)
            return SandboxState(settings=settings)
        check_hypervisor(self.hypervisor, state, self.state_path)
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
        from vmdev.host import host_context as _host_context
        from vmdev.manager import DeviceManager
        from vmdev.plugins import get_plugin_manager

        plugins = get_plugin_manager()
        with self.file.locked():
            state = self.state(plugins)
            backend = plugins.backend(state.settings.hypervisor)
            reach = connection(backend, self.live, self.timeout, state.settings, required=True)
            live = driver(backend, reach)
            try:
                manager = DeviceManager(state=state, host=_host_context(self.sysfs_root), plugins=plugins,
                                        hotplugger=live, journal=self.file.journal())
                yield manager
            finally:
                if live is not None:
                    live.close()
            manager.journal_now()  # appends what is not in the file yet; no whole rewrite per command


def find_record(
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


def record_text(record: DeviceRecord | None, verb: str, as_json: bool, extra: dict[str, Any]) -> str:
    """What ``attach``/``detach`` print about the device they changed."""
    from vmdev.manager import describe_status
    from vmdev.state import record_to_json

    if as_json:
        data = record_to_json(record) if record is not None else None
        return json.dumps({**extra, "device": data}, indent=2)
    if record is None:
        return one_line(f"{verb} {extra['id']}: no container uses it any more; forgotten")
    buses = record.attachment.buses if record.attachment is not None else ()
    # one line whatever the state file says (its kind, path, buses and error texts are not vmdev's)
    return one_line(
        f"{verb} {record.id} ({record.kind}, {record.name}): {describe_status(record)}; attach count "
        f"{record.attach_count}, references {record.ref_count}"
        + (f", bus {', '.join(buses)}" if buses else "")
    )


def attach(sandbox: Sandbox, device: DeviceArgs, *, user: str, as_json: bool) -> str:
    """``vmdev attach``: reference the device (creating it on first use) and attach it."""
    request = device.request()
    with sandbox.opened() as manager:
        if isinstance(request, str):
            record = manager.add_sandbox_device(request, user=user)
        else:
            record = manager.add_device(request, user=user)
    return record_text(record, "attached", as_json, {"id": record.id, "plugged": record.attach_count == 1})


def detach(sandbox: Sandbox, device: DeviceArgs, *, device_id: str | None, user: str, as_json: bool) -> str:
    """``vmdev detach``: detach the device and drop the user's reference to it."""
    request = device.request() if device.given else None
    if not sandbox.file.exists():
        from vmdev.state import StateError

        raise StateError("no such state file: nothing is attached to this sandbox", device=sandbox.state_path)
    with sandbox.opened() as manager:
        target = find_record(manager, request, device_id)
        record = manager.release_device(target.id, user=user)
    return record_text(record, "detached", as_json, {"id": target.id, "unplugged": target.attach_count == 1})
