"""The ``vmdev`` command line.

Errors exit 1 with one line on stderr that names the device and the problem;
usage errors exit 2 (click's convention). ``VMDEV_DEBUG=1`` adds tracebacks.

A runtime runs ``vmdev plan`` on every container start, so the commands it runs most
(``plan --format json``, ``resolve``, ``plugins``, ``attach``, ``detach``, and ``vmdev --help``)
start without click when their arguments are plain (every option known and given its value, the
positional argument there): they are read here the way click reads them, and anything else (a
command's own ``--help``, a usage error, another format, a shell completion) is click's, exactly
as before. :data:`main` is the click group, made (and
click imported) when it is first used; the sandbox commands and ``vmdev check`` are imported
when they run. One plugin manager serves a whole command (:func:`vmdev.plugins.shared_manager`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import stat
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NoReturn

from vmdev.errors import VmdevError, one_line

if TYPE_CHECKING:
    import click

    from vmdev.host import HostContext
    from vmdev.planner import Plan
    from vmdev.settings import SandboxSettings


def host_context(sysfs_root: str | None) -> HostContext:
    from vmdev.host import host_context

    return host_context(sysfs_root)


def plan_settings(
    config_file: str | None, *, hypervisor: str | None, machine_type: str | None, memory: int | None,
    hotplug: bool | None, flags: Mapping[str, Any],
) -> SandboxSettings:
    """The settings ``vmdev plan``'s options give (also ``explain``'s and ``check``'s)."""
    from vmdev.settings import load_settings

    overrides = {"machine_type": machine_type, "default_memory": memory, "hotplug": hotplug, **flags}
    return load_settings(config_file, hypervisor=hypervisor, overrides=overrides)


# --- what the commands do (shared by the click commands and the plain path) --------------------------
def run_plan(
    *,
    config_file: str | None,
    hypervisor: str | None,
    machine_type: str | None,
    sysfs_root: str | None,
    memory: int | None,
    hotplug: bool | None,
    state_path: str | None,
    oci_config: str,
    flags: Mapping[str, Any],
) -> Plan:
    """``vmdev plan``'s plan (``flags``: the settings keys the plugin flags set)."""
    from vmdev.oci import load_spec
    from vmdev.planner import plan

    settings = plan_settings(config_file, hypervisor=hypervisor, machine_type=machine_type, memory=memory,
                             hotplug=hotplug, flags=flags)
    spec = load_spec(oci_config)
    host = host_context(sysfs_root)
    return plan(spec, settings, host=host) if state_path is None else _plan_sandbox(
        spec, settings, host, state_path
    )


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


def run_resolve(
    *,
    dev_type: str,
    major: int,
    minor: int,
    host_path: str,
    config_file: str | None,
    sysfs_root: str | None,
    container_path: str,
    flags: Mapping[str, Any],
) -> str:
    """``vmdev resolve``'s host path, with the node check ``plan`` makes (a node there must be the
    device requested: :func:`vmdev.host.check_node`)."""
    import attrs

    from vmdev.host import CORE_RESOLVER, check_node
    from vmdev.models import DeviceInfo
    from vmdev.plugins import get_plugin_manager
    from vmdev.settings import load_settings

    pm = get_plugin_manager()
    info = DeviceInfo(
        container_path=container_path, dev_type=dev_type, major=major, minor=minor, host_path=host_path
    )
    settings = pm.prepare_settings(load_settings(config_file, overrides=flags, plugins=pm))
    host = host_context(sysfs_root)
    answer = pm.resolve_host_path_answer(info, host, settings)
    path: str = answer.value
    check_node(attrs.evolve(info, host_path=path), host, by_core=answer.plugin == CORE_RESOLVER)
    return path


def plugins_text(as_json: bool) -> list[str]:
    """``vmdev plugins``'s output, one echo per item."""
    from vmdev.plugins import get_plugin_manager

    infos = get_plugin_manager().list_plugins()
    if as_json:
        rows = [
            {"name": i.name, "distribution": i.distribution, "version": i.version, "hooks": list(i.hooks)}
            for i in infos
        ]
        return [json.dumps(rows, indent=2)]
    lines = []
    for info in infos:
        dist = f"{info.distribution} {info.version}".strip()
        lines.append(f"{info.name}  ({dist})\n    hooks: {', '.join(info.hooks)}")
    return lines


# --- the plain path: a command run without click ------------------------------------------------------
class _Unplain(Exception):
    """These arguments are click's to read (help, usage errors, anything unusual)."""


#: click.Path's checks: (file_okay, dir_okay); the value must also be readable if it exists
_PathKind = tuple[bool, bool]
_ANY_FILE: Final = (True, False)
_ANY_DIR: Final = (False, True)


def _path(value: str, kind: _PathKind) -> str:
    """``value`` if click.Path (exists=False) takes it as it is, else :class:`_Unplain`."""
    try:
        st = os.stat(value)
    except OSError:
        return value
    file_okay, dir_okay = kind
    if (not file_okay and stat.S_ISREG(st.st_mode)) or (not dir_okay and stat.S_ISDIR(st.st_mode)):
        raise _Unplain
    if not os.access(value, os.R_OK):
        raise _Unplain
    return value


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _Unplain from None


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise _Unplain from None


class _Option:
    """One option as the plain path reads it: its key, how a value converts (None: a flag, whose
    value is ``flag_value``), whether it repeats, and for a plugin flag its setting."""

    __slots__ = ("convert", "flag_value", "key", "multiple", "setting")

    def __init__(
        self, key: str, convert: Callable[[str], Any] | None = str, *, flag_value: Any = None,
        multiple: bool = False, setting: Any = None,
    ) -> None:
        self.key, self.convert, self.flag_value = key, convert, flag_value
        self.multiple, self.setting = multiple, setting


def _plugin_options() -> dict[str, _Option]:
    """The settings flags of the loaded plugins, as :class:`vmdev.cliutil.SettingsCommand` adds them."""
    from vmdev.declared import BOOLEAN, INTEGER, NUMBER, STRINGS
    from vmdev.plugins import get_plugin_manager

    options: dict[str, _Option] = {}
    flags: set[str] = set()
    for entry in get_plugin_manager().declared_settings():
        setting = entry.setting
        if not setting.flag or setting.flag in flags:
            continue
        flags.add(setting.flag)
        key = "plugin:" + setting.flag
        if setting.type == BOOLEAN:
            negative = f"--no-{setting.flag[2:]}"
            for name, value in ((setting.flag, True), (negative, False)):
                if name in options:
                    raise _Unplain  # two flags spelt alike: click decides
                options[name] = _Option(key, None, flag_value=value, setting=setting)
            continue
        convert = {INTEGER: _integer, NUMBER: _number}.get(setting.type, str)
        if setting.flag in options:
            raise _Unplain
        options[setting.flag] = _Option(key, convert, multiple=setting.type == STRINGS, setting=setting)
    return options


def _parse(
    args: Sequence[str], own: Mapping[str, _Option], positional: int, *, optional: int = 0
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """click's reading of ``args`` for a command with the options ``own`` (plus the plugins' settings
    flags) and ``positional`` arguments (and up to ``optional`` more): the option values by key, the
    positional values, and the settings keys the plugin flags set (their callbacks, run in the order
    the options first came)."""
    plugin = _plugin_options()
    if set(plugin) & (set(own) | {"--help", "-h"}):
        raise _Unplain
    options = {**own, **plugin}
    values: dict[str, Any] = {}
    given: dict[str, Any] = {}  # the plugin flags given, by key, in the order they first came
    rest: list[str] = []
    queue = list(args)
    while queue:
        arg = queue.pop(0)
        if arg == "--":
            rest += queue
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        name, eq, attached = arg.partition("=")
        option = options.get(name)
        if option is None:
            raise _Unplain  # -h, --help, a short option, a misspelt one: click says what it says
        if option.convert is None:
            if eq:
                raise _Unplain
            value: Any = option.flag_value
        else:
            if not eq:
                if not queue:
                    raise _Unplain
                attached = queue.pop(0)
            value = option.convert(attached)
        if option.multiple:
            values.setdefault(option.key, []).append(value)
        else:
            values[option.key] = value
        if option.setting is not None:
            given.setdefault(option.key, option.setting)
    if not positional <= len(rest) <= positional + optional:
        raise _Unplain
    return values, rest, _flag_settings(given, values)


def _flag_settings(given: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings keys the given plugin flags set, as their click callbacks set them."""
    overrides: dict[str, Any] = {}
    for key, setting in given.items():
        overrides[setting.name] = values[key]
        for key, implied in setting.flag_sets.items():
            overrides.setdefault(key, implied)
    return overrides


def _echo(text: str, *, err: bool = False) -> None:
    """click.echo's output for text it would not change (no escape sequence to strip)."""
    if "\x1b" in text:
        import click

        click.echo(text, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    if stream is not None:
        try:
            stream.write(text + "\n")
            stream.flush()
        except BrokenPipeError:
            raise _StdoutClosed from None


class _StdoutClosed(Exception):
    """Writing the output failed: whoever read it has gone (``vmdev plugins | grep -q``)."""


def _as_one_line(run: Callable[[], None]) -> int:
    """:func:`vmdev.cliutil.errors_as_one_line` and click's ending, for the plain path."""
    try:
        run()
    except _StdoutClosed:
        raise  # run_plain ends it, as for any plain command
    except VmdevError as exc:
        return _failed(str(exc))
    except (EOFError, KeyboardInterrupt):
        _echo("", err=True)
        _echo("Aborted!", err=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - no traceback for users; VMDEV_DEBUG shows it
        return _failed(f"internal error: {type(exc).__name__}: {exc} (set VMDEV_DEBUG=1 for details)")
    return 0


def _stdout_closed() -> int:
    """Whoever read the output stopped (``vmdev plugins | grep -q``): nothing to report; exit 1 as
    click does, and what is still buffered for stdout goes nowhere (no second error at exit)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 1


def _failed(message: str) -> int:
    """:func:`vmdev.cliutil.fail` for the plain path: one line (escaped), exit status 1."""
    if os.environ.get("VMDEV_DEBUG"):
        import traceback

        traceback.print_exc()
    _echo(f"vmdev: error: {one_line(message)}", err=True)
    return 1


_PLAN_OPTIONS: Final = {
    "--config": _Option("config_file", lambda v: _path(v, _ANY_FILE)),
    "--hypervisor": _Option("hypervisor"),
    "--machine-type": _Option("machine_type"),
    "--sysfs-root": _Option("sysfs_root", lambda v: _path(v, _ANY_DIR)),
    "--memory": _Option("memory", _integer),
    "--hotplug": _Option("hotplug", None, flag_value=True),
    "--coldplug": _Option("hotplug", None, flag_value=False),
    "--format": _Option("fmt"),
    "--state": _Option("state_path", lambda v: _path(v, _ANY_FILE)),
}
_RESOLVE_OPTIONS: Final = {
    "--type": _Option("dev_type"),
    "--major": _Option("major", _integer),
    "--minor": _Option("minor", _integer),
    "--host-path": _Option("host_path"),
    "--config": _Option("config_file", lambda v: _path(v, _ANY_FILE)),
    "--sysfs-root": _Option("sysfs_root", lambda v: _path(v, _ANY_DIR)),
    "--json": _Option("as_json", None, flag_value=True),
}
_DEVICE_TYPES: Final = ("c", "b", "u", "p")
#: ``attach``'s and ``detach``'s options (vmdev.sandbox_cli); the live drivers' flags are added
_SANDBOX_OPTIONS: Final = {
    "--state": _Option("state_path", lambda v: _path(v, _ANY_FILE)),
    "--hypervisor": _Option("hypervisor"),
    "--timeout": _Option("timeout", lambda v: _at_least(_number(v), 0.1)),
    "--config": _Option("config_file", lambda v: _path(v, _ANY_FILE)),
    "--machine-type": _Option("machine_type"),
    "--memory": _Option("memory", lambda v: _at_least(_integer(v), 1)),
    "--json": _Option("as_json", None, flag_value=True),
    "--type": _Option("dev_type", lambda v: v if v in _DEVICE_TYPES else _unplain()),
    "--major": _Option("major", _integer),
    "--minor": _Option("minor", _integer),
    "--host-path": _Option("host_path"),
    "--oci-device": _Option("oci_device"),
    "--sandbox-device": _Option("sandbox_device"),
    "--container": _Option("user"),
    "--sysfs-root": _Option("sysfs_root", lambda v: _path(v, _ANY_DIR)),
}


def _plain_plan(args: Sequence[str]) -> int:
    values, (oci_config,), flags = _parse(args, _PLAN_OPTIONS, 1)
    memory = values.get("memory")
    if values.get("fmt", "json") != "json" or (memory is not None and memory < 1):
        raise _Unplain
    oci_config = _path(oci_config, _ANY_FILE)

    def run() -> None:
        result = run_plan(
            config_file=values.get("config_file"), hypervisor=values.get("hypervisor"),
            machine_type=values.get("machine_type"), sysfs_root=values.get("sysfs_root"), memory=memory,
            hotplug=values.get("hotplug"), state_path=values.get("state_path"), oci_config=oci_config,
            flags=flags,
        )
        _echo(json.dumps(result.to_json(), indent=2))

    return _as_one_line(run)


def _plain_resolve(args: Sequence[str]) -> int:
    values, (container_path,), flags = _parse(args, _RESOLVE_OPTIONS, 1)
    if values.get("dev_type") not in _DEVICE_TYPES or "major" not in values or "minor" not in values:
        raise _Unplain

    def run() -> None:
        resolved = run_resolve(
            dev_type=values["dev_type"], major=values["major"], minor=values["minor"],
            host_path=values.get("host_path", ""), config_file=values.get("config_file"),
            sysfs_root=values.get("sysfs_root"), container_path=container_path, flags=flags,
        )
        _echo(json.dumps({"host_path": resolved}) if values.get("as_json") else resolved)

    return _as_one_line(run)


def _unplain() -> Any:
    raise _Unplain


def _at_least(value: Any, minimum: float) -> Any:
    """click's IntRange/FloatRange(min=...): a smaller value is click's usage error to print."""
    if value < minimum:
        raise _Unplain
    return value


def _live_options() -> dict[str, _Option]:
    """The installed backends' live-driver flags (``--qmp``...), as vmdev.sandbox_cli adds them."""
    from vmdev.plugins import get_plugin_manager

    backends = get_plugin_manager().backends()
    return {option.flag: _Option("live:" + option.flag)
            for name in backends.names() for option in backends.get(name).backend.live_options}


def _plain_sandbox(args: Sequence[str], command: str) -> int:
    """``vmdev attach``/``detach`` (see vmdev.sandbox_ops)."""
    from vmdev import sandbox_ops

    own = {**_SANDBOX_OPTIONS, **({"--id": _Option("device_id")} if command == "detach" else {})}
    live = _live_options()
    if set(live) & set(own):
        raise _Unplain
    values, rest, flags = _parse(args, {**own, **live}, 0, optional=1)
    if "state_path" not in values:
        raise _Unplain  # a required option: click says so
    overrides = {"machine_type": values.get("machine_type"), "default_memory": values.get("memory"), **flags}
    sandbox = sandbox_ops.Sandbox(
        state_path=values["state_path"], hypervisor=values.get("hypervisor"),
        live={key[5:]: value for key, value in values.items() if key.startswith("live:")},
        timeout=values.get("timeout", 30.0), config_file=values.get("config_file"), overrides=overrides,
        sysfs_root=values.get("sysfs_root"),
    )
    device = sandbox_ops.DeviceArgs(
        dev_type=values.get("dev_type"), major=values.get("major"), minor=values.get("minor"),
        host_path=values.get("host_path", ""), oci_device=values.get("oci_device"),
        sandbox_device=values.get("sandbox_device"), container_path=rest[0] if rest else None,
    )
    user, as_json = values.get("user", ""), bool(values.get("as_json"))

    def run() -> None:
        if command == "attach":
            _echo(sandbox_ops.attach(sandbox, device, user=user, as_json=as_json))
        else:
            _echo(sandbox_ops.detach(sandbox, device, device_id=values.get("device_id"), user=user,
                                     as_json=as_json))

    return _as_one_line(run)


def _plain_plugins(args: Sequence[str]) -> int:
    if list(args) not in ([], ["--json"]):
        raise _Unplain

    def run() -> None:
        for text in plugins_text(bool(args)):
            _echo(text)

    return _as_one_line(run)


def _plain_help(args: Sequence[str]) -> int:
    """``vmdev --help`` from the help texts and the plugins' declared commands (vmdev.commands)."""
    from vmdev.commands import Unsure, group_help, terminal_width
    from vmdev.plugins import get_plugin_manager

    main_module = sys.modules.get("__main__")
    if args or getattr(main_module, "__package__", None):
        raise _Unplain  # more to read, or ``python -m``: click names the program its own way
    pm = get_plugin_manager()
    if pm.adds_click_commands():
        raise _Unplain
    commands = {name: text for name, text in HELP.items() if name != "vmdev"}
    commands.update(SUMMARIES)
    commands.update({name: declared.spec.summary for name, declared in pm.lazy_commands().items()})
    try:
        text = group_help(os.path.basename(sys.argv[0]), HELP["vmdev"], commands, terminal_width())
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (Unsure, UnicodeError, LookupError):
        raise _Unplain from None  # (an ASCII stdout: click rewraps it to write what it can)
    _echo(text)
    return 0


_PLAIN: Final[Mapping[str, Callable[[Sequence[str]], int]]] = {
    "--help": _plain_help, "-h": _plain_help,
    "plan": _plain_plan, "resolve": _plain_resolve, "plugins": _plain_plugins,
    "attach": partial(_plain_sandbox, command="attach"), "detach": partial(_plain_sandbox, command="detach"),
}


def run_plain(argv: Sequence[str]) -> int | None:
    """Run ``vmdev ARGV`` without click if it is one of the plain commands with plain arguments:
    its exit status; None when click must read them."""
    command = _PLAIN.get(argv[0]) if argv else None
    if command is None or any(name.endswith("_COMPLETE") for name in os.environ):
        return None  # not ours, or a shell asking click to complete a word
    try:
        if argv[0] in _declared_commands():
            return None  # a plugin's command of that name replaces the built-in: click runs it
        return command(argv[1:])
    except _Unplain:
        return None
    except _StdoutClosed:
        return _stdout_closed()
    except VmdevError:
        return None  # the plugins failed to load: click reports it as it always has


def _run_plain_without_collector() -> int | None:
    """:func:`run_plain` of this process's arguments, with one plugin manager and the cyclic
    collector off (see :class:`_Main`)."""
    from vmdev.plugins import shared_manager

    with shared_manager():
        collecting = gc.isenabled()
        gc.disable()
        try:
            return run_plain(sys.argv[1:])
        finally:
            if collecting:
                gc.enable()


class _PlainExit(SystemExit):
    """The end of a plain command (a ``SystemExit`` with its status, for whoever calls
    :data:`main` in-process)."""


def console() -> None:
    """The ``vmdev`` console script: :data:`main`, and after a plain command :func:`_leave`. A
    program that runs the command line in-process calls :data:`main`, which ends as click's
    commands do, with ``SystemExit``."""
    try:
        main()
    except _PlainExit as done:
        _leave(done.code if isinstance(done.code, int) else 1)


def _leave(status: int) -> NoReturn:
    """End a plain command with ``status``, skipping the interpreter's teardown when it has
    nothing left to do: no ``atexit`` handler registered (which ``logging``, ``weakref.finalize``
    and ``tempfile``'s cleanups use), no other thread running, and stdout and stderr flushed.
    The teardown deallocates every module, class and function one by one: ~3 ms of a plan's
    ~63 ms of CPU (issue 13). File descriptors still open (the state file's lock) the kernel
    closes. Otherwise, or if a flush fails, Python exits as usual. (The plain commands flush what
    they write as they write it; the flush here keeps that true for any later writer.) A Python
    file object a plugin leaves open with unflushed writes loses them on the plain path; it did
    before this exit too (a plugin's 20 bytes, written to a module-level file from a hook, never
    reached the file), while a command click runs writes them."""
    threading = sys.modules.get("threading")
    if atexit._ncallbacks() == 0 and (threading is None or threading.active_count() == 1):
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError):
            pass  # Python's own exit reports it, as before
        else:
            os._exit(status)
    sys.exit(status)


def _plugin_failures_in_one_line() -> None:
    """A plugin that fails to load is logged (``vmdev.plugins``: one line on stderr when nothing
    configured logging, as a command line run has not) and warned (:class:`PluginLoadWarning`,
    for a program using vmdev). The console script leaves out the warning, which Python would
    print as the same message again with the file, line and source of the call that loaded."""
    from vmdev.plugins import PluginLoadWarning

    warnings.filterwarnings("ignore", category=PluginLoadWarning)


def _declared_commands() -> Mapping[str, Any]:
    from vmdev.plugins import get_plugin_manager

    return get_plugin_manager().lazy_commands()


class _Main:
    """:data:`main` until it is needed as the click group: called as the console script does
    (no arguments), it runs a plain command without click; anything else goes to the group.

    A plain command is a short-lived process that makes few reference cycles, so it runs with
    Python's cyclic garbage collector off and, once done, freezes what it made
    (:func:`gc.freeze`) so that the interpreter's last collection at exit does not walk it all
    again: together ~10 ms of a plan's ~75 ms of CPU (issue 13). Python never promised to
    finalise objects left at exit, and frozen ones it does not: a file object a plugin left open at
    module level loses its buffer (docs/plugin-hooks.md tells plugins to close what they write).
    Commands click runs (a plugin's may run long) keep the collector on. A plain command ends
    with :class:`_PlainExit`, a ``SystemExit``; the console script (:func:`console`) then leaves
    without tearing the interpreter down when nothing is left for that to do (:func:`_leave`).

    Every command the console script runs takes attrs's generated methods from the compiled
    cache (:mod:`vmdev.methodcache`, ~12 ms of a plan's CPU); it is in place before the first
    module that makes attrs classes is imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return _group()(*args, **kwargs)
        from vmdev.methodcache import compiled_methods

        with compiled_methods(), warnings.catch_warnings():
            _plugin_failures_in_one_line()
            status = _run_plain_without_collector()
            if status is None:
                return _group()()
            gc.freeze()
            raise _PlainExit(status)

    def __getattr__(self, name: str) -> Any:
        return getattr(_group(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_group(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_group(), name)

    def __repr__(self) -> str:
        return repr(_group())


# --- the click group ------------------------------------------------------------------------------------
#: built-in commands imported only when they run or show their own help (LazyCommand): module, attribute
LAZY_COMMANDS: Final = {
    "attach": ("vmdev.sandbox_cli", "attach_cmd"),
    "detach": ("vmdev.sandbox_cli", "detach_cmd"),
    "status": ("vmdev.sandbox_cli", "status_cmd"),
    "check": ("vmdev.preflight", "check_cmd"),
    "explain": ("vmdev.explain", "explain_cmd"),
}
#: the first paragraph of each lazy built-in's help, so that ``vmdev --help`` lists them without
#: importing them (test_cli checks these against the commands)
SUMMARIES: Final = {
    "attach": "Attach a device to a running sandbox VM, or count one more attach of it.",
    "detach": "Detach a device from a running sandbox VM and drop the container's reference to it.",
    "status": "Show a sandbox's devices: counts, attachments, interrupted or failed operations, whether the "
    "host changed under a device since it was built, and (with the live driver's flags, --qmp for QEMU) "
    "whether what their hot plug created is present in the running VM.",
    "check": "Check a plan against a real QEMU binary, without booting a guest: every device driver, "
    "property, object type, machine type and property, and QMP command the plan uses must exist in that "
    "binary. PLAN is `vmdev plan --format json` output, checked as it stands; an OCI_CONFIG is planned "
    "first, with the flags of vmdev plan. One line per mismatch on stdout (`vmdev: check: DEVICE: OPTION: "
    "PROBLEM`); exit 0 when clean, 1 on any mismatch or error.",
    "explain": "Explain a plan: for each device, which plugin claimed it and through which hook, which "
    "settings keys and host facts decided each option, and which limits applied. Takes the arguments of "
    "vmdev plan.",
}
#: the help of the group and of the built-in commands made with it (click's and the plain ``--help``'s)
HELP: Final = {
    "vmdev": "Turn a container's device requests into devices attached to its sandbox VM.",
    "plugins": "List the loaded plugins, their distributions, versions and hooks.",
    "resolve": "Print the host path of a device given by type and major:minor.",
    "backends": "List the installed hypervisor backends, with the plugin and distribution of each.",
    "settings": "List every settings key the installed plugins declare: type, default, the Kata key it "
    "mirrors, the flag that sets it, and the plugin that owns it.",
    "plan": "Plan the devices of an OCI config.json for a hypervisor.",
}
_GROUP: list[click.Group] = []


def _group() -> click.Group:
    """The ``vmdev`` click group, made on first use (this is when click is imported)."""
    if not _GROUP:
        _GROUP.append(_build())
    return _GROUP[0]


def __getattr__(name: str) -> Any:
    """The click layer's names (``_PluginGroup``, ``plan_cmd``, ...) exist once the group is made."""
    if name.startswith("__"):
        raise AttributeError(name)
    _group()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module 'vmdev.cli' has no attribute {name!r}") from None


def _build() -> click.Group:

    import click

    from vmdev.cliutil import LazyCommand, SettingsCommand, errors_as_one_line, fail, flag_overrides

    def _Summary(name: str, help: str) -> click.Command:
        """A lazy built-in command: listed by its summary, imported when it runs or shows its help."""
        return LazyCommand(name, ":".join(LAZY_COMMANDS[name]), summary=help)

    class _PluginGroup(click.Group):
        r"""Adds the plugins' commands (the ``register_commands`` hook) when a command is listed or
        not found, once per plugin manager (a process has one; an embedding or a test suite that
        changes ``VMDEV_PLUGINS`` between runs gets the commands of each run's plugins). The lazy
        built-ins are :class:`~vmdev.cliutil.LazyCommand`\ s, so a plugin's command of the same
        name replaces one as it would any command (and the built-in comes back when it is gone)."""

        _plugins_from: object = None
        #: what the plugins' commands replaced (None: the name was free)
        _replaced: dict[str, click.Command | None] | None = None
        #: the built-in commands' names (set once they are all added)
        builtin_names: frozenset[str] = frozenset()

        def _add_plugin_commands(self, *, quiet: bool = False) -> None:
            """``quiet``: when the plugins' commands cannot be loaded, say nothing (the built-in
            asked for still runs: a plugin's broken declaration must not take ``vmdev status``
            down with it); else that is the one-line error."""
            from vmdev.plugins import get_plugin_manager

            try:
                pm = get_plugin_manager()
                if pm is self._plugins_from:
                    return
                self._drop_plugin_commands()
                before = dict(self.commands)
                try:
                    for name, declared in pm.lazy_commands().items():
                        spec = declared.spec
                        self.add_command(LazyCommand(name, spec.target, summary=spec.summary))
                    pm.register_commands(self)
                except VmdevError:
                    self.commands.clear()
                    self.commands.update(before)
                    raise
                self._plugins_from = pm
            except VmdevError as exc:
                if not quiet:
                    fail(str(exc))
                return
            self._replaced = {name: before.get(name) for name, command in self.commands.items()
                              if before.get(name) is not command}

        def _drop_plugin_commands(self) -> None:
            for name, previous in (self._replaced or {}).items():
                if previous is None:
                    self.commands.pop(name, None)
                else:
                    self.commands[name] = previous
            self._replaced = None

        def list_commands(self, ctx: click.Context) -> list[str]:
            self._add_plugin_commands()
            return super().list_commands(ctx)

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            # a plugin's, or a built-in a plugin replaces: this run's plugins
            self._add_plugin_commands(quiet=cmd_name in self.builtin_names)
            return super().get_command(ctx, cmd_name)

        def main(self, *args: Any, **kwargs: Any) -> Any:
            from vmdev.plugins import shared_manager

            with shared_manager():
                return super().main(*args, **kwargs)

    @click.group(cls=_PluginGroup, help=HELP["vmdev"],
                 context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="vmdev")
    def main() -> None:
        pass

    for name, summary in SUMMARIES.items():
        main.add_command(_Summary(name, help=summary))

    @main.command("plugins", help=HELP["plugins"])
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @errors_as_one_line
    def plugins_cmd(as_json: bool) -> None:
        for text in plugins_text(as_json):
            click.echo(text)

    @main.command("resolve", cls=SettingsCommand, help=HELP["resolve"])
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
        resolved = run_resolve(
            dev_type=dev_type, major=major, minor=minor, host_path=host_path, config_file=config_file,
            sysfs_root=sysfs_root, container_path=container_path, flags=flag_overrides(),
        )
        click.echo(json.dumps({"host_path": resolved}) if as_json else resolved)

    @main.command("backends", help=HELP["backends"])
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @errors_as_one_line
    def backends_cmd(as_json: bool) -> None:
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

    @main.command("settings", help=HELP["settings"])
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @errors_as_one_line
    def settings_cmd(as_json: bool) -> None:
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
                f"for {', '.join(s.backends)} only" if s.backends else "",
                f"flag {s.flag}" if s.flag else "",
                f"one of {', '.join(s.choices)}" if s.choices else "",
            ) if part)
            click.echo(f"{s.name} = {json.dumps(s.default, default=list)}  ({s.type}, {where}, {extra}; "
                       f"{entry.plugin})\n    {s.description}")

    @main.command("plan", cls=SettingsCommand, help=HELP["plan"])
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
        help="Also keep the plan's devices as a new sandbox in this state file, for vmdev "
        "attach/detach/status.",
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
        result = run_plan(
            config_file=config_file, hypervisor=hypervisor, machine_type=machine_type, sysfs_root=sysfs_root,
            memory=memory, hotplug=hotplug, state_path=state_path, oci_config=oci_config,
            flags=flag_overrides(),
        )
        if fmt == "json":
            click.echo(json.dumps(result.to_json(), indent=2))
        elif fmt == "argv":
            click.echo(result.argv_text())
        else:
            _print_text(result)

    def _print_text(result: Any) -> None:
        rows: list[tuple[str, ...]] = [("KIND", "ID", "PLUGIN", "PLUG", "CONTAINER PATH", "HOST PATH")]
        for d in result.devices:
            plug = "hot" if d.hotplug else ("-" if d.kind == "generic" else "cold")
            rows.append(tuple(one_line(cell) for cell in (  # paths a container chose: one line each
                d.kind, d.id, d.plugin, plug, d.container_path or "-", d.host_path or "-")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        data = result.to_json()
        if result.qemu is not None:
            click.echo("\nqemu arguments:\n  " + one_line(result.argv_text()))
            for key in ("hotplug", "unplug"):
                for command in data["qemu"][key]:
                    click.echo(f"qmp {key}: {json.dumps(command)}")
        else:
            click.echo(f"\n{result.plan_key}:\n" + json.dumps(data[result.plan_key], indent=2))
        for name in result.extras:
            click.echo(f"\n{name}:\n" + json.dumps(data[name], indent=2))

    main.builtin_names = frozenset(main.commands)
    globals().update(
        _Summary=_Summary, _PluginGroup=_PluginGroup, plugins_cmd=plugins_cmd, resolve_cmd=resolve_cmd,
        backends_cmd=backends_cmd, settings_cmd=settings_cmd, plan_cmd=plan_cmd, _print_text=_print_text,
    )
    return main


if TYPE_CHECKING:
    main: click.Group
else:
    main = _Main()

if __name__ == "__main__":  # pragma: no cover
    main()
