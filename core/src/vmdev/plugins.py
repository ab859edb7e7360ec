"""Plugin loading and a typed facade over the hooks.

Loading happens on first use, never at ``import vmdev``. What is loaded is a
:class:`LoadPolicy`, read from the environment by default:

``VMDEV_PLUGINS=dist1,dist2``
    load only these distributions' ``vmdev`` entry points (empty: none), looked
    up by name without scanning every installed distribution.
``VMDEV_DISABLE_PLUGINS=name,...``
    never import these plugins (entry-point or distribution names).
``VMDEV_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry points unless ``VMDEV_PLUGINS`` names them.
``VMDEV_TRACE_PLUGINS=1``
    log every hook call, each plugin's answer and the result (logger ``vmdev.trace``).

The core's defaults are always registered, through the same registration path
as entry-point plugins. A plugin that fails to import is reported with a
:class:`PluginLoadWarning` naming it; the others keep working.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from difflib import get_close_matches
from functools import partial
from typing import Any, Final, TypeVar

import attrs
import pluggy

from vmdev import hookspecs
from vmdev.errors import PluginError, UnclaimedDeviceError, VmdevError

if sys.version_info >= (3, 12):
    from importlib import metadata as importlib_metadata
else:  # the backport has EntryPoints.select and Distribution.entry_points on 3.10/3.11
    import importlib_metadata

from vmdev.backend import Backend, BackendSet, RegisteredBackend
from vmdev.declared import DeclaredSetting, Setting, parse_settings
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.oci import OciMount, OciSpec
from vmdev.resources import Allocator
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget

ENTRY_POINT_GROUP: Final = "vmdev"
ENV_PLUGINS: Final = "VMDEV_PLUGINS"
ENV_DISABLE: Final = "VMDEV_DISABLE_PLUGINS"
ENV_NO_AUTOLOAD: Final = "VMDEV_DISABLE_PLUGIN_AUTOLOAD"
ENV_TRACE: Final = "VMDEV_TRACE_PLUGINS"

#: The core's own behaviour, registered like any plugin: (plugin name, module).
BUILTIN_PLUGINS: Final = (
    ("vmdev.host_path", "vmdev.defaults.host_path"),
    ("vmdev.generic", "vmdev.defaults.generic"),
    ("vmdev.backend.qemu", "vmdev.backends.qemu"),
    ("vmdev.backend.cloud-hypervisor", "vmdev.backends.clh"),
    ("vmdev.backend.firecracker", "vmdev.backends.firecracker"),
)

#: plan sections several plugins contribute to (``finish_plan``): their lists are concatenated in
#: plugin order. ``daemons``: host processes the runtime starts before the VM, each
#: ``{"id", "program", "args", "socket", "for"}`` (a file-sharing daemon, a TPM emulator...)
SHARED_SECTIONS: Final = frozenset({"daemons"})

#: the plugin whose hook implementation is running (``register`` callbacks read it)
_running: ContextVar[str] = ContextVar("vmdev_running_plugin", default="")
#: the answers of the hook call under way: (plugin, value) for each non-None result
_answers: ContextVar[list[tuple[str, Any]] | None] = ContextVar("vmdev_hook_answers", default=None)

log = logging.getLogger("vmdev.plugins")
trace_log = logging.getLogger("vmdev.trace")
T = TypeVar("T")


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; vmdev goes on without it."""


def normalize(name: str) -> str:
    """PEP 503 name normalisation (``vmdev_rng`` and ``VMDev-RNG`` are ``vmdev-rng``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _frozen(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class LoadPolicy:
    """Which plugins to load. ``only=None`` means every installed one."""

    only: tuple[str, ...] | None = None
    disabled: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen)
    autoload: bool = True
    trace: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadPolicy:
        env = os.environ if environ is None else environ
        only = _names(env[ENV_PLUGINS]) if ENV_PLUGINS in env else None
        return cls(
            only=only,
            disabled=frozenset(_names(env.get(ENV_DISABLE, ""))),
            autoload=not _truthy(env.get(ENV_NO_AUTOLOAD)),
            trace=_truthy(env.get(ENV_TRACE)),
        )

    def blocks(self, *names: str) -> bool:
        blocked = {normalize(n) for n in self.disabled}
        return any(normalize(name) in blocked for name in names if name)


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One registered plugin, as ``vmdev plugins`` lists it."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Answer:
    """A hook result together with the plugin that gave it."""

    value: Any
    plugin: str


class PluginManager:
    """The vmdev plugin manager: loading controls plus one typed method per hook."""

    def __init__(
        self,
        policy: LoadPolicy | None = None,
        *,
        plugins: Iterable[tuple[str, object]] = (),
    ) -> None:
        """``policy`` defaults to :meth:`LoadPolicy.from_env`; ``plugins`` are extra
        ``(name, plugin)`` pairs registered alongside (vendors' tests, embedding)."""
        self.policy = LoadPolicy.from_env() if policy is None else policy
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._extra = list(plugins)
        self._origin: dict[str, tuple[str, str]] = {}
        self._loaded = False
        self._backends: BackendSet | None = None
        self._declared: list[DeclaredSetting] | None = None
        if self.policy.trace and not logging.getLogger("vmdev").hasHandlers():
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            trace_log.addHandler(handler)
            trace_log.setLevel(logging.DEBUG)

    # --- loading ---------------------------------------------------------------------------
    def load(self) -> PluginManager:
        """Register the built-ins and the plugins the policy selects (once)."""
        if self._loaded:
            return self
        self._loaded = True
        core_version = _version("vmdev")
        for name, module in BUILTIN_PLUGINS:
            self._register_lazy(name, partial(importlib.import_module, module), "vmdev", core_version)
        for name, plugin in self._extra:
            self.register(plugin, name=name)
        for entry_point, dist_name, version in self._selected_entry_points():
            self._register_lazy(entry_point.name, entry_point.load, dist_name, version)
        self._check_pending()
        return self

    def _check_pending(self) -> None:
        """Refuse hook implementations that match no hook (pluggy's ``check_pending``), naming the
        plugin and the hook, with the nearest real hook name."""
        known = [name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "vmdev_spec", None)]
        for hook_name in dir(self._pm.hook):
            caller = getattr(self._pm.hook, hook_name)
            if hook_name.startswith("_") or not hasattr(caller, "has_spec") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                near = get_close_matches(hook_name, known, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise PluginError(
                    f"plugin {impl.plugin_name!r} implements {hook_name!r}, which is not a vmdev "
                    f"hook{hint}; see docs/plugin-hooks.md",
                    field="hooks",
                )
        self._pm.check_pending()

    def register(self, plugin: object, *, name: str, distribution: str = "", version: str = "") -> None:
        """Register a plugin object or module directly (subject to the disable list)."""
        if self.policy.blocks(name, distribution):
            log.debug("plugin %s is disabled", name)
            self._pm.set_blocked(name)
            return
        self._pm.register(plugin, name=name)
        self._origin[name] = (distribution, version)
        self._instrument(plugin, name)

    def _instrument(self, plugin: object, name: str) -> None:
        """Wrap each of ``plugin``'s (non-wrapper) hook implementations so that the facade knows
        who answered, the trace shows it, and an unexpected exception names the plugin. Calls
        still go through ``pm.hook``, so wrappers, pluggy's tracing and monitoring all apply."""
        for caller in self._pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    # HookImpl.function is typed Final but is a plain slot; pluggy calls whatever
                    # it holds with the arguments named by impl.argnames (computed before this)
                    wrapped = _answering(impl.function, name, caller.name, self.policy.trace)
                    object.__setattr__(impl, "function", wrapped)

    def _register_lazy(
        self, name: str, load: Callable[[], object], distribution: str, version: str
    ) -> None:
        if self.policy.blocks(name, distribution):
            self._pm.set_blocked(name)
            return
        if self._pm.has_plugin(name):
            return
        try:
            plugin = load()
            self.register(plugin, name=name, distribution=distribution, version=version)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the host
            message = (
                f"vmdev plugin {name!r} from distribution {distribution!r} failed to load "
                f"and is skipped: {type(exc).__name__}: {exc}"
            )
            log.warning(message)
            warnings.warn(PluginLoadWarning(message), stacklevel=2)

    def _selected_entry_points(self) -> list[tuple[Any, str, str]]:
        selected: list[tuple[Any, str, str]] = []
        if self.policy.only is not None:
            for dist_name in self.policy.only:
                try:
                    dist = importlib_metadata.distribution(dist_name)
                except importlib_metadata.PackageNotFoundError:
                    message = f"{ENV_PLUGINS} names {dist_name!r}, which is not installed"
                    log.warning(message)
                    warnings.warn(PluginLoadWarning(message), stacklevel=3)
                    continue
                for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
                    selected.append((ep, dist.metadata["Name"], dist.version))
            return selected
        if not self.policy.autoload:
            return selected
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            selected.append((ep, dist.metadata["Name"] if dist else "", dist.version if dist else ""))
        return selected

    # --- introspection ---------------------------------------------------------------------
    def list_plugins(self) -> list[PluginInfo]:
        self.load()
        out = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or ()))
            dist, version = self._origin.get(name, ("", ""))
            out.append(PluginInfo(name=name, distribution=dist, version=version, hooks=hooks))
        return out

    def plugin_names(self) -> list[str]:
        return [info.name for info in self.list_plugins()]

    # --- calling ---------------------------------------------------------------------------
    def _call(self, hook: str, *, first: bool, subject: str = "", **kwargs: Any) -> list[Answer]:
        """Call ``hook`` through ``pm.hook`` (so wrappers, tracing and monitoring apply) and say who
        answered what: every answer in order, or the first-result hook's answer.

        Exceptions other than :class:`VmdevError` become a :class:`PluginError` naming the
        plugin (see :func:`_answering`); it is given the device the call was about.
        """
        self.load()
        token = _answers.set([])
        try:
            result = getattr(self._pm.hook, hook)(**kwargs)
            answered = _answers.get() or []
        except VmdevError as exc:
            if subject and not exc.device:
                exc.device = subject  # the plugin did not say which device: the call was about this one
            raise
        finally:
            _answers.reset(token)
        if first:
            answers = [] if result is None else [Answer(value=result, plugin=_who(answered, result))]
        else:
            answers = [Answer(value=v, plugin=_who(answered, v)) for v in result]
        if self.policy.trace:
            trace_log.debug("%s result: %r", hook, [(a.plugin, a.value) for a in answers])
        return answers

    # --- backends and settings -------------------------------------------------------------
    def backends(self) -> BackendSet:
        """Every installed backend (``register_backends``), by name."""
        if self._backends is None:
            found: dict[str, RegisteredBackend] = {}

            def register(backend: Backend) -> None:
                plugin = _running.get()
                if not isinstance(backend, Backend):
                    raise PluginError(
                        f"plugin {plugin!r} registered {type(backend).__name__}, not a vmdev.backend.Backend",
                        field="register_backends",
                    )
                if backend.name in found:
                    raise PluginError(
                        f"plugins {found[backend.name].plugin!r} and {plugin!r} both register a backend "
                        f"called {backend.name!r}",
                        field="register_backends",
                    )
                dist = self._origin.get(plugin, ("", ""))[0]
                found[backend.name] = RegisteredBackend(backend=backend, plugin=plugin, distribution=dist)

            self._call("register_backends", first=False, register=register)
            self._backends = BackendSet(found)
        return self._backends

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; a one-line error listing the installed ones if none is."""
        return self.backends().get(name).backend

    def declared_settings(self) -> list[DeclaredSetting]:
        """Every settings key the loaded plugins declare (``register_settings``)."""
        if self._declared is None:
            found: list[DeclaredSetting] = []

            def register(setting: Setting) -> None:
                plugin = _running.get()
                if not isinstance(setting, Setting):
                    raise PluginError(
                        f"plugin {plugin!r} registered {type(setting).__name__}, "
                        "not a vmdev.declared.Setting",
                        field="register_settings",
                    )
                for other in found:
                    if other.setting.name == setting.name and other.setting.overlaps(setting):
                        raise PluginError(
                            f"plugins {other.plugin!r} and {plugin!r} both declare the settings key "
                            f"{setting.name!r} (for the same backends: scope each with Setting.backends)",
                            field="register_settings",
                        )
                found.append(DeclaredSetting(setting=setting, plugin=plugin))

            self._call("register_settings", first=False, register=register)
            self._declared = found
        return list(self._declared)

    def prepare_settings(self, settings: SandboxSettings) -> SandboxSettings:
        """``settings`` with every declared key parsed and typed (``settings.value(key)``), after
        checking that its hypervisor is an installed backend and running ``check_settings``."""
        self.backends().get(settings.hypervisor)
        tables = {"hypervisor": settings.options, "runtime": settings.runtime}
        values = parse_settings(self.declared_settings(), tables, settings.hypervisor)
        prepared = attrs.evolve(settings, values=values)
        self.check_settings(prepared)
        return prepared

    def device_requests(self, spec: OciSpec, settings: SandboxSettings, host: HostContext) -> list[Answer]:
        """The requests of the input-source plugins, each with the plugin that found it."""
        out: list[Answer] = []
        for answer in self._call("device_requests", first=False, spec=spec, settings=settings, host=host):
            if not isinstance(answer.value, Sequence):
                raise PluginError(
                    f"plugin {answer.plugin!r} returned {type(answer.value).__name__} from "
                    "device_requests, not a sequence"
                )
            for info in answer.value:
                out.append(Answer(value=_typed(Answer(value=info, plugin=answer.plugin), DeviceInfo,
                                                "device_requests", ""), plugin=answer.plugin))
        return out

    def finish_plan(
        self, plan: Any, spec: OciSpec, settings: SandboxSettings, host: HostContext | None = None
    ) -> dict[str, Any]:
        """The extra plan sections of every plugin, checked for clashes."""
        sections: dict[str, Any] = {}
        owner: dict[str, str] = {}
        host = host if host is not None else HostContext()
        answers = self._call("finish_plan", first=False, plan=plan, spec=spec, settings=settings, host=host)
        for answer in answers:
            if not isinstance(answer.value, Mapping):
                raise PluginError(
                    f"plugin {answer.plugin!r} returned {type(answer.value).__name__} from finish_plan, "
                    "not a mapping"
                )
            for name, value in answer.value.items():
                if name in SHARED_SECTIONS:
                    sections.setdefault(name, []).extend(_section_list(value, name, answer.plugin))
                    continue
                if name in sections:
                    raise PluginError(
                        f"plugins {owner[name]!r} and {answer.plugin!r} both add the plan section {name!r}"
                    )
                sections[name], owner[name] = value, answer.plugin
        return sections

    def device_from_state(self, kind: str, data: Mapping[str, Any], plugin: str, *, name: str) -> Device:
        """The device ``plugin`` built, rebuilt from its saved form without touching the host."""
        answers = self._call(
            "device_from_state", first=True, subject=name, kind=kind, data=data, plugin=plugin
        )
        if not answers:
            raise PluginError(
                f"no plugin rebuilds saved {kind} devices (plugin {plugin!r} has no device_from_state "
                "hook, or is not installed)",
                device=name,
                field="kind",
            )
        device: Device = _typed(answers[0], Device, "device_from_state", name)
        return device

    def host_facts(self, device: Device, host: HostContext, *, name: str) -> dict[str, str]:
        """What the device's family says it was built from on the host (may be empty)."""
        answers = self._call("host_facts", first=True, subject=name, device=device, host=host)
        if not answers:
            return {}
        facts = answers[0].value
        if not isinstance(facts, Mapping) or not all(isinstance(v, str) for v in facts.values()):
            raise PluginError(
                f"plugin {answers[0].plugin!r} returned {facts!r} from host_facts, not a mapping of strings",
                device=name,
            )
        return {str(k): v for k, v in facts.items()}

    def register_commands(self, cli: Any) -> None:
        self._call("register_commands", first=False, cli=cli)

    def check_settings(self, settings: SandboxSettings) -> None:
        self._call("check_settings", first=False, settings=settings)

    def resolve_host_path(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings | None = None
    ) -> str:
        path: str = self.resolve_host_path_answer(info, host, settings).value
        return path

    def resolve_host_path_answer(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings | None = None
    ) -> Answer:
        """The host path and the plugin that resolved it."""
        answers = self._call(
            "resolve_host_path", first=True, subject=info.name, info=info, host=host,
            settings=settings if settings is not None else self.prepare_settings(SandboxSettings()),
        )
        if not answers:
            raise UnclaimedDeviceError("no plugin resolved its host path", device=info.name)
        _typed(answers[0], str, "resolve_host_path", info.name)
        return answers[0]

    def device_from_mount(
        self, mount: OciMount, host: HostContext, settings: SandboxSettings
    ) -> Answer | None:
        answers = self._call(
            "device_from_mount", first=True, subject=mount.destination,
            mount=mount, host=host, settings=settings,
        )
        if answers:
            _typed(answers[0], DeviceInfo, "device_from_mount", mount.destination)
        return answers[0] if answers else None

    def build_device(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator | None = None
    ) -> Answer:
        """The built device and the plugin that claimed it."""
        answers = self._call(
            "build_device", first=True, subject=info.name, info=info, host=host, settings=settings,
            alloc=alloc if alloc is not None else Allocator(),
        )
        if not answers:
            kind = {"b": "block", "c": "character", "u": "character", "p": "FIFO"}[info.dev_type]
            raise UnclaimedDeviceError(
                f"no installed plugin handles {kind} devices like this one "
                f"({info.dev_type} {info.major}:{info.minor}); install one (for example "
                f"vmdev-block) or remove the device",
                device=info.name,
                field="type",
            )
        _typed(answers[0], Device, "build_device", info.name)
        return answers[0]

    def sandbox_devices(self, settings: SandboxSettings, host: HostContext) -> list[Answer]:
        out: list[Answer] = []
        for answer in self._call("sandbox_devices", first=False, settings=settings, host=host):
            if not isinstance(answer.value, Sequence):
                raise PluginError(
                    f"plugin {answer.plugin!r} returned {type(answer.value).__name__} from "
                    "sandbox_devices, not a sequence"
                )
            for device in answer.value:
                _typed(Answer(value=device, plugin=answer.plugin), Device, "sandbox_devices", "")
                out.append(Answer(value=device, plugin=answer.plugin))
        return out

    def attach_options(
        self, device: Device, target: RenderTarget, hotplug: bool, *, name: str
    ) -> AttachOptions:
        answers = self._call(
            "attach_options", first=True, subject=name, device=device, target=target, hotplug=hotplug
        )
        if not answers:
            raise PluginError(
                f"no plugin renders {device.kind} devices for the {target.hypervisor} backend (neither "
                f"the plugin that built it nor the backend's plugin answered attach_options)",
                device=name,
                field="hypervisor",
            )
        value: AttachOptions = _typed(answers[0], target.attach_type, "attach_options", name)
        return value

    @property
    def pluggy(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for advanced use; prefer the typed methods)."""
        return self._pm


def _typed(answer: Answer, kind: Any, hook: str, device: str) -> Any:
    if not isinstance(answer.value, kind):
        expected = getattr(kind, "__name__", str(kind))
        raise PluginError(
            f"plugin {answer.plugin!r} returned {type(answer.value).__name__} from {hook}, "
            f"expected {expected}",
            device=device,
        )
    return answer.value


def _answering(function: Callable[..., Any], plugin: str, hook: str, trace: bool) -> Callable[..., Any]:
    """``function`` (a plugin's hook implementation) reporting its answer to the facade, with
    :data:`_running` set to ``plugin`` while it runs, and a non-vmdev exception turned into a
    :class:`PluginError` naming the plugin and the hook."""

    def implementation(*args: Any, **kwargs: Any) -> Any:
        token = _running.set(plugin)
        try:
            value = function(*args, **kwargs)
        except VmdevError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc
        finally:
            _running.reset(token)
        if trace:
            shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            trace_log.debug("%s[%s](%s) -> %r", hook, plugin, shown, value)
        answers = _answers.get()
        if answers is not None and value is not None:
            answers.append((plugin, value))
        return value

    implementation.__wrapped__ = function  # type: ignore[attr-defined]
    return implementation


def _section_list(value: Any, name: str, plugin: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise PluginError(f"plugin {plugin!r} returned {type(value).__name__} for the plan section {name!r}, "
                          "not a list")
    return list(value)


def _who(answered: Sequence[tuple[str, Any]], value: Any) -> str:
    """The plugin whose answer ``value`` is (a hook wrapper may have replaced it)."""
    for plugin, answer in reversed(answered):
        if answer is value:
            return str(plugin)
    return "(a hook wrapper)"


def _kw(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _version(dist_name: str) -> str:
    try:
        return importlib_metadata.version(dist_name)
    except importlib_metadata.PackageNotFoundError:
        return ""


def get_plugin_manager(
    policy: LoadPolicy | None = None, *, plugins: Iterable[tuple[str, object]] = ()
) -> PluginManager:
    """A loaded plugin manager (environment policy unless one is given)."""
    return PluginManager(policy, plugins=plugins).load()


__all__ = [
    "Answer",
    "LoadPolicy",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginManager",
    "get_plugin_manager",
]
