"""Hook specifications: the whole contract between the vmdev core and its plugins.

A plugin is a module (or object) with functions decorated by
:data:`vmdev.hookimpl` whose names and arguments match these specs; it is
registered through the ``vmdev`` entry-point group of its distribution. A
plugin may implement any subset of the hooks and may accept any subset of each
hook's arguments.

The core's own behaviour (default host-path resolution, generic devices) is
registered through the same hooks, with ``trylast=True``, so a plugin can
override it simply by answering first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import click

    from vmdev.backend import Backend
    from vmdev.commands import CommandSpec
    from vmdev.declared import Setting
    from vmdev.host import HostContext
    from vmdev.models import Device, DeviceInfo
    from vmdev.oci import OciMount, OciSpec
    from vmdev.planner import Plan
    from vmdev.resources import Allocator
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget

PROJECT_NAME = "vmdev"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def check_settings(settings: SandboxSettings) -> None:
    """Validate the sandbox options this plugin owns, before anything is planned.

    Called on every plugin. Raise :class:`vmdev.errors.ConfigError` naming the
    option key in ``field`` for a value the plugin cannot use (for example an
    unknown ``block_device_driver``). Return None.
    """


@hookspec
def register_settings(register: Callable[[Setting], None]) -> None:
    """Declare the settings keys this plugin owns: ``register(Setting(...))`` once per key.

    Called on every plugin when settings are parsed. A :class:`vmdev.declared.Setting` gives
    the key's name, type, default, description and the Kata key it mirrors (and, optionally, the
    command-line flag that sets it). The core parses and validates every declared key once,
    before any other hook runs, and hands the typed values to the hooks through
    ``settings.value(name)``. A wrong type is a one-line ``ConfigError`` naming the key. Two
    plugins declaring one key is a ``PluginError`` naming both. (As tox's
    ``tox_add_env_config`` declares its env keys.)
    """


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Add hypervisor backends: ``register(Backend(...))`` once per backend.

    Called on every plugin when the backends are first needed (as tox's
    ``tox_register_tox_env(register)`` and llm's ``register_models(register)``). A
    :class:`vmdev.backend.Backend` names the hypervisor (``--hypervisor NAME``), the Kata
    configuration sections it reads, its render target, how rendered devices are assembled
    into its part of the plan and, optionally, its live driver (hot plug into a running VM).
    QEMU, Cloud Hypervisor and Firecracker are registered this way by the core's built-in
    plugins (``vmdev.backend.qemu``, ...). Registering a name twice is a ``PluginError``.
    """


@hookspec
def device_requests(
    spec: OciSpec, settings: SandboxSettings, host: HostContext
) -> Sequence[DeviceInfo] | None:
    """Return the device requests this plugin finds in ``spec`` (an input source).

    Called on every plugin; the requests are collected in plugin order (the core's OCI
    ``linux.devices`` reader first, then mounts through ``device_from_mount``, then input
    sources such as CDI). Each request goes through ``resolve_host_path`` and ``build_device``
    like any other. Return None or an empty sequence when ``spec`` names nothing of yours.
    """


@hookspec
def finish_plan(
    plan: Plan, spec: OciSpec, settings: SandboxSettings, host: HostContext
) -> Mapping[str, object] | None:
    """Add sections to a finished plan: ``{name: json-able value}``, or None.

    Called on every plugin after rendering; the sections appear in ``plan.extras`` and in the
    plan's JSON under their names (a CDI plugin, for example, returns the OCI spec as the
    runtime should pass it on). A name used by two plugins, or one the plan already has, is a
    ``PluginError``, except the shared list sections (``vmdev.plugins.SHARED_SECTIONS``:
    ``daemons``, the host processes the runtime starts before the VM, each ``{"id", "program",
    "args", "socket", "for"}``), whose lists are concatenated in plugin order.
    """


@hookspec(firstresult=True)
def device_from_state(kind: str, data: Mapping[str, object], plugin: str) -> Device | None:
    """Rebuild a device of your family from its saved form, without touching the host.

    Stops at the first non-None result.
    ``data`` is what the device's serialised form was (``vmdev.serialize.to_json(device)``)
    when the device manager saved the sandbox, ``kind`` its ``kind`` and ``plugin`` the
    plugin that built it. Return the device, or None when it is not yours. A family without
    this hook cannot have its devices re-rendered after a reload (an error names the plugin).
    """


@hookspec(firstresult=True)
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    """The host facts ``device`` was built from, as ``{fact: value}`` strings, or None.

    Stops at the first non-None result (the device's family answers).
    The device manager records them when the device is built and compares them when a saved
    sandbox is used again: a fact that changed is reported by ``vmdev status`` and makes
    ``vmdev attach`` of that device fail naming it (the host drifted; the device in the VM
    would not be the one the host now has). The core always records the host node's type
    and major:minor; a family adds what else decided its options (for example a PCI
    function's driver and IOMMU group).
    """


@hookspec(firstresult=True)
def resolve_host_path(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> str | None:
    """Return the host path of the device ``info`` describes, or None to decline.

    Stops at the first non-None result. ``info.host_path`` holds what the
    caller gave (``""`` for OCI devices). The core's default implementation
    runs last and follows Kata's ``GetHostPath``: it resolves ``major:minor``
    through ``<sysfs>/dev/{char,block}/MAJ:MIN/uevent``. A plugin answers first
    for devices it knows better (a store of sockets for pseudo majors, for instance). Raise
    :class:`vmdev.errors.ResolveError` naming the device and field when the
    device cannot be resolved.
    """


@hookspec(firstresult=True)
def device_from_mount(
    mount: OciMount, host: HostContext, settings: SandboxSettings
) -> DeviceInfo | None:
    """Return a device request for an OCI mount that should become a device, or None.

    Stops at the first non-None result. Most mounts are file-system mounts
    and every plugin declines them; a block plugin claims, for example, a
    mount whose source is a block device or a persistent-memory image. The
    returned ``DeviceInfo`` goes through host-path resolution and
    ``build_device`` like an OCI device.
    """


@hookspec(firstresult=True)
def build_device(
    info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator
) -> Device | None:
    """Return the typed device for ``info`` if this plugin handles it, or None to decline.

    Stops at the first non-None result: the plugin that returns a device owns
    it (its ``attach_options`` renders it). ``info.host_path`` is already
    resolved. The device must be an immutable object with a ``kind`` class
    attribute and an ``id`` (see :class:`vmdev.models.Device`); derive ids with
    :func:`vmdev.qemu.make_id` so they are stable and safe. Raise
    :class:`vmdev.errors.DeviceError` (naming ``info.container_path`` and the
    field) when the request is for this plugin's devices but cannot be served:
    never return a device that differs from what was asked. The core's generic
    device is the last resort for character devices and FIFOs.

    ``alloc`` hands out numbered resources (drive indexes, SCSI ids) from
    pools the plugin names: ``alloc.take("block.index", owner=key, limit=65535)``
    gives the smallest free index, the same one again for the same owner. A
    plan starts with empty pools; the device manager keeps them for the life of
    the sandbox and frees a device's indexes when it is removed.
    """


@hookspec
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device] | None:
    """Return the devices this plugin adds to every sandbox (no OCI request names them).

    Called on every plugin; the results are concatenated in plugin order. The
    entropy plugin, for example, returns the sandbox's random-number device. Return an empty
    sequence (or None) when the settings ask for none; raise
    :class:`vmdev.errors.ConfigError` for settings that cannot be honoured.
    """


@hookspec(firstresult=True)
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    """Render ``device`` for ``target``'s hypervisor, or return None to decline.

    Stops at the first non-None result. The plugin that built the device answers,
    or a backend's plugin for the families it knows how to render on its backend.
    ``target`` is the chosen backend's target (for the built-ins
    :class:`vmdev.backends.qemu.QemuTarget`, :class:`vmdev.backends.clh.ClhTarget`,
    :class:`vmdev.backends.firecracker.FirecrackerTarget`); return its
    ``target.attach_type`` (:class:`vmdev.qemu.QemuAttach`, ``ClhAttach``,
    ``FirecrackerAttach``), or None for a target you do not know.
    When ``hotplug`` is true, render the hot-plug commands if the hypervisor
    can hot-plug this device (set ``hotplugged=True``), else cold-plug it.
    Build every QEMU option with :func:`vmdev.qemu.opts` so values are escaped.
    Raise :class:`vmdev.errors.UnsupportedError` when the hypervisor or machine
    cannot attach this device: never render a different device silently.
    A device that no plugin renders is an error of the core.
    """


@hookspec
def register_lazy_commands(register: Callable[[CommandSpec], None]) -> None:
    """Add subcommands to the ``vmdev`` command line, imported only when they run:
    ``register(CommandSpec(name="doctor", target="acme.doctor:doctor_command", summary=...))``.

    Called on every plugin when the command line lists or looks up its commands. ``target`` is
    the ``module:attribute`` of a ``click`` command or group; ``summary`` is the first paragraph
    of its help, which ``vmdev --help`` lists without importing click or the command's module.
    The way to add commands: ``vmdev --help`` stays cheap (``register_commands`` makes it load
    click). Two plugins declaring one name is a ``PluginError`` naming both; a declared command
    replaces a built-in of the same name. Errors the command raises should be
    :class:`vmdev.errors.VmdevError` subclasses: the CLI prints them as one line and exits 1.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``vmdev`` command line by hand (``cli.add_command(...)`` or the
    ``@cli.command()`` decorator); prefer ``register_lazy_commands``.

    Called on every plugin when the CLI lists or looks up its commands. Do not replace existing
    commands. While any loaded plugin implements this hook, ``vmdev --help`` is printed by click
    (it cannot know these commands otherwise). Errors a command raises should be
    :class:`vmdev.errors.VmdevError` subclasses: the CLI prints them as one line and exits 1.
    Return None.
    """
