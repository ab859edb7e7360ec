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

from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.oci import OciMount
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
)

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
        return self

    def register(self, plugin: object, *, name: str, distribution: str = "", version: str = "") -> None:
        """Register a plugin object or module directly (subject to the disable list)."""
        if self.policy.blocks(name, distribution):
            log.debug("plugin %s is disabled", name)
            self._pm.set_blocked(name)
            return
        self._pm.register(plugin, name=name)
        self._origin[name] = (distribution, version)

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
        """Call ``hook``'s implementations in pluggy's order, keeping who answered what.

        Exceptions other than :class:`VmdevError` become a :class:`PluginError`
        naming the plugin, so a buggy plugin produces one clear line.
        """
        self.load()
        answers: list[Answer] = []
        caller = getattr(self._pm.hook, hook)
        trace = self.policy.trace
        for impl in reversed(caller.get_hookimpls()):
            args = [kwargs[name] for name in impl.argnames]
            try:
                value = impl.function(*args)
            except VmdevError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}",
                    device=subject,
                ) from exc
            if trace:
                trace_log.debug("%s[%s](%s) -> %r", hook, impl.plugin_name, _kw(kwargs), value)
            if value is None:
                continue
            answers.append(Answer(value=value, plugin=impl.plugin_name))
            if first:
                break
        if trace:
            trace_log.debug("%s result: %r", hook, [a.value for a in answers])
        return answers

    def register_commands(self, cli: Any) -> None:
        self._call("register_commands", first=False, cli=cli)

    def check_settings(self, settings: SandboxSettings) -> None:
        self._call("check_settings", first=False, settings=settings)

    def resolve_host_path(self, info: DeviceInfo, host: HostContext) -> str:
        answers = self._call("resolve_host_path", first=True, subject=info.name, info=info, host=host)
        if not answers:
            raise UnclaimedDeviceError("no plugin resolved its host path", device=info.name)
        path: str = _typed(answers[0], str, "resolve_host_path", info.name)
        return path

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
                f"no plugin renders {device.kind} devices for {target.hypervisor}", device=name
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
