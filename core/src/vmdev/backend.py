"""Hypervisor backends: what a plan is rendered for, registered by plugins.

A backend is registered through the ``register_backends(register)`` hook, as tox registers env
types and llm registers models. It names the hypervisor (``vmdev plan --hypervisor NAME``), the
Kata ``configuration.toml`` sections it reads (``[hypervisor.clh]``), makes the per-plan
:class:`~vmdev.targets.RenderTarget` that ``attach_options`` renders for, assembles the rendered
devices into its part of the plan (``Plan.backend``, printed under :attr:`Backend.plan_key`), and
may drive a running VM (:attr:`Backend.live`). QEMU, Cloud Hypervisor and Firecracker are
registered this way by the core's built-in plugins (:mod:`vmdev.backends`); a separately
installed distribution adds another without changing the core (``examples/backend-plugin``).

Who renders a device for a backend stays open from both sides: the plugin that built the device,
or the backend's plugin for families it knows (``attach_options`` is ``firstresult``). A device
nobody renders for the chosen backend is a :class:`~vmdev.errors.PluginError` naming both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from vmdev.errors import ConfigError

if TYPE_CHECKING:
    from vmdev.live import HotPlugger
    from vmdev.planner import PlannedDevice
    from vmdev.settings import SandboxSettings
    from vmdev.state import PortRecord
    from vmdev.targets import RenderTarget

_NAME_RE: Final = re.compile(r"[a-z][a-z0-9-]*")


@runtime_checkable
class Attachment(Protocol):
    """What ``attach_options`` returns for one device, whatever the backend (``QemuAttach``,
    ``ClhAttach``, ...): whether it was rendered for hot plug, and fields to show in the plan.

    A value rendered for hot plug (``hotplugged``) also has ``hotplug`` and ``unplug``: the steps
    that attach and detach the device in a running VM, each a JSON object or an object with
    ``to_json()`` (QMP commands for QEMU, XML for libvirt). The device manager stores them as JSON
    and hands them to the backend's live driver; it derives the roll-back from them."""

    @property
    def hotplugged(self) -> bool: ...

    @property
    def details(self) -> Mapping[str, Any]: ...


@runtime_checkable
class BackendPlan(Protocol):
    """A backend's part of a plan (QEMU's argv and QMP commands, an API's request bodies)."""

    def to_json(self) -> Mapping[str, Any]: ...


class Notebook(Protocol):
    """``RenderTarget.record``'s store: notes across the devices of one plan (or sandbox)."""

    def record(self, key: str, device: str, value: str) -> Mapping[str, str]: ...


@attrs.define
class PlanNotes:
    """The notes of one plan: each ``record`` returns every note under its key so far.

    The answer is a read-only view, not a copy, so that recording costs the same for the
    4,096th device as for the first (read it when it is returned: later notes appear in it).
    """

    _notes: dict[str, dict[str, str]] = attrs.Factory(dict)

    def record(self, key: str, device: str, value: str) -> Mapping[str, str]:
        notes = self._notes.get(key)
        if notes is None:
            notes = self._notes[key] = {}
        notes[device] = value
        return MappingProxyType(notes)


@attrs.frozen(kw_only=True)
class RenderContext:
    """The per-plan services a backend's target is made with.

    ``notes`` backs ``RenderTarget.record``. ``live_ports`` is None for a boot plan; for a
    device hot-plugged into a running VM it returns that VM's free hot-plug ports (the device
    manager passes it), and a backend whose devices need ports takes them from there instead
    of adding ports (a running VM's topology is fixed).
    """

    notes: Notebook = attrs.field(factory=PlanNotes)
    live_ports: Callable[[], Sequence[PortRecord]] | None = None


@attrs.frozen(kw_only=True)
class LiveConnection:
    """How to reach a running VM: the values of the backend's :attr:`Backend.live_options`
    (``{"qmp": "/run/vm/qmp.sock"}``), the timeout for its answers, in seconds, and the sandbox's
    settings (a driver may read its own keys, such as a connection URI, from them)."""

    options: Mapping[str, str] = attrs.field(factory=dict)
    timeout: float = 30.0
    settings: SandboxSettings | None = None


@attrs.frozen(kw_only=True)
class LiveOption:
    """A command-line option of ``vmdev attach``/``detach``/``status`` that a live driver needs
    (``--qmp SOCKET``, ``--domain NAME``)."""

    name: str
    flag: str
    help: str
    required: bool = True
    metavar: str = "VALUE"


def _check_name(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"backend name {value!r}: lower-case letters, digits and '-', starting with a letter"
        )


def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


def _options(value: Sequence[LiveOption]) -> tuple[LiveOption, ...]:
    return tuple(value)


def _callable(value: Callable[..., Any] | str) -> Callable[..., Any]:
    """A callable, or ``"module:attribute"`` naming one (imported on its first call)."""
    from vmdev.lazy import imported

    return imported(value) if isinstance(value, str) else value


def _optional_callable(value: Callable[..., Any] | str | None) -> Callable[..., Any] | None:
    return None if value is None else _callable(value)


@attrs.frozen(kw_only=True)
class Backend:
    """A hypervisor backend.

    ``target(settings, context)`` makes the per-plan render target; ``assemble(settings, target,
    devices)`` merges the rendered devices (each ``PlannedDevice.attach`` is what this backend's
    target asked for, ``target.attach_type``) into the backend's part of the plan. ``live`` makes
    a hot plugger for a running VM from a :class:`LiveConnection` (None: the backend has no
    live hot plug; the device manager then only keeps the books). ``plan_key`` is the plan's
    JSON key (default: the name with ``-`` as ``_``).

    ``target``, ``assemble`` and ``live`` may be given as ``"module:attribute"``: the backend is
    registered on every ``vmdev plan``, whatever the hypervisor, and what it names is imported only
    when the core first calls it (issue 13).
    """

    name: str = attrs.field(validator=_check_name)
    description: str
    kata_sections: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    target: Callable[[SandboxSettings, RenderContext], RenderTarget] = attrs.field(
        eq=False, converter=_callable
    )
    assemble: Callable[[SandboxSettings, RenderTarget, tuple[PlannedDevice, ...]], BackendPlan] = attrs.field(
        eq=False, converter=_callable
    )
    plan_key: str = attrs.field()
    live: Callable[[LiveConnection], HotPlugger] | None = attrs.field(
        default=None, eq=False, converter=_optional_callable
    )
    live_options: tuple[LiveOption, ...] = attrs.field(default=(), converter=_options)

    @plan_key.default
    def _plan_key(self) -> str:
        return self.name.replace("-", "_")


@attrs.frozen(kw_only=True)
class RegisteredBackend:
    """A backend with the plugin and distribution that registered it (``vmdev backends``).

    ``distribution`` may be given as a function that finds the name: it is called when the name
    is asked for, so planning never reads an installed distribution's metadata to name it.
    """

    backend: Backend
    plugin: str
    _distribution: str | Callable[[], str] = attrs.field(default="", alias="distribution", eq=False)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def distribution(self) -> str:
        found = self._distribution
        return found if isinstance(found, str) else found()

    def to_json(self) -> dict[str, Any]:
        backend = self.backend
        return {
            "name": backend.name,
            "description": backend.description,
            "kata_sections": list(backend.kata_sections),
            "plan_key": backend.plan_key,
            "live": backend.live is not None,
            "plugin": self.plugin,
            "distribution": self.distribution,
        }


@attrs.frozen
class BackendSet:
    """The installed backends, by name."""

    backends: Mapping[str, RegisteredBackend]

    def names(self) -> list[str]:
        return sorted(self.backends)

    def get(self, name: str, *, field: str = "hypervisor") -> RegisteredBackend:
        """The backend called ``name``; a one-line error listing the installed ones if none is."""
        found = self.backends.get(name)
        if found is None:
            installed = ", ".join(self.names()) or "none"
            raise ConfigError(
                f"no installed backend is called {name!r} (installed: {installed})", field=field
            )
        return found

    def for_section(self, section: str) -> RegisteredBackend | None:
        """The backend that reads Kata's ``[hypervisor.<section>]``, if one is installed."""
        for registered in self.backends.values():
            if section in registered.backend.kata_sections or section == registered.name:
                return registered
        return None


__all__ = [
    "Attachment",
    "Backend",
    "BackendPlan",
    "BackendSet",
    "LiveConnection",
    "LiveOption",
    "Notebook",
    "PlanNotes",
    "RegisteredBackend",
    "RenderContext",
]
