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
import importlib.machinery
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from types import FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import pluggy

from vmdev import hookspecs
from vmdev.backend import Backend, BackendSet, RegisteredBackend
from vmdev.errors import PluginError, UnclaimedDeviceError, VmdevError
from vmdev.lazy import load_reference
from vmdev.models import Device, DeviceInfo

if TYPE_CHECKING:
    import logging

    from vmdev.commands import DeclaredCommand
    from vmdev.declared import DeclaredSetting, Setting
    from vmdev.host import HostContext
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

#: the plugin whose ``register_*`` hook implementation is running (its ``register`` callback reads it)
_running: ContextVar[str] = ContextVar("vmdev_running_plugin", default="")
#: the hooks that hand plugins a ``register`` callback
_REGISTERING: Final = frozenset({"register_settings", "register_backends", "register_lazy_commands"})
#: the answers of the hook call under way: (plugin, value) for each non-None result
_answers: ContextVar[list[tuple[str, Any]] | None] = ContextVar("vmdev_hook_answers", default=None)

T = TypeVar("T")


def _logger(name: str) -> logging.Logger:
    """A vmdev logger; :mod:`logging` is imported only when something is logged."""
    import logging

    return logging.getLogger(name)


def _warn(message: str, stacklevel: int) -> None:
    """A :class:`PluginLoadWarning`, also logged (``vmdev.plugins``)."""
    _logger("vmdev.plugins").warning(message)
    warnings.warn(PluginLoadWarning(message), stacklevel=stacklevel + 1)


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


# --- finding installed plugins --------------------------------------------------------------------
# importlib.metadata would do, but it imports the email parser (for names and versions nobody prints
# when planning), zipfile, tempfile and shutil, and parses every distribution's METADATA: a tenth of
# a plan's start-up. The entry points are found the same way here, from the metadata directories
# on sys.path in sys.path's order (the first distribution of each name wins); a distribution's name
# and version come from its directory name, and its METADATA is read only when its exact name is
# shown. Anything else (zip files or eggs on sys.path, other finders of distributions) is left to
# importlib.metadata itself.
_DIST_SUFFIXES: Final = (".dist-info", ".egg-info")

def _dist_key(name: str) -> str:
    """How importlib.metadata tells distributions apart (``Vendor.Dev`` and ``vendor_dev`` are one)."""
    return re.sub(r"[-_.]+", "_", name).lower()


class _Dist:
    """An installed distribution, known by its metadata directory (``name-version.dist-info``)."""

    __slots__ = ("_headers", "key", "path", "stem_name", "stem_version")

    def __init__(self, path: str, directory: str) -> None:
        self.path = path
        stem = directory.rpartition(".")[0]
        self.stem_name, _, version = stem.partition("-")
        # egg-info directories may add "-py3.11" or have no version: their metadata says
        self.stem_version = version if directory.lower().endswith(".dist-info") else ""
        self.key = _dist_key(self.stem_name)
        self._headers: dict[str, str] | None = None

    def read(self, filename: str) -> str | None:
        try:
            with open(os.path.join(self.path, filename), encoding="utf-8") as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            return None

    def _header(self, key: str) -> str:
        """A header of the metadata file (``Name``, ``Version``), read once, without the email parser."""
        if self._headers is None:
            self._headers = {}
            text = self.read("METADATA") or self.read("PKG-INFO") or ""
            for line in text.splitlines():
                if not line.strip():
                    break  # the body (the long description) follows the first blank line
                name, sep, value = line.partition(":")
                if sep and not line[0].isspace():
                    self._headers.setdefault(name.strip().lower(), value.strip())
        return self._headers.get(key.lower(), "")

    @property
    def name(self) -> str:
        """The name as the distribution spells it (its metadata's ``Name``)."""
        return self._header("Name") or self.stem_name

    @property
    def version(self) -> str:
        return self.stem_version or self._header("Version")

    def entry_points(self, group: str) -> list[tuple[str, str]]:
        """``(name, value)`` of the entry points in ``group``, in the file's order (importlib.metadata's
        reading of ``entry_points.txt``: stripped lines, ``#`` comments, ``[group]`` headers)."""
        text = self.read("entry_points.txt")
        if not text or group not in text:
            return []
        found, section = [], None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line.strip("[]")
            elif section == group:
                name, sep, value = line.partition("=")
                if sep:
                    found.append((name.strip(), value.strip()))
        return found


class _MetadataDist:
    """A distribution as importlib.metadata finds it (zip files, eggs, other finders)."""

    def __init__(self, dist: Any) -> None:
        self._dist = dist
        self.stem_name = self.name
        self.key = _dist_key(self.name)

    @property
    def name(self) -> str:
        return str(self._dist.metadata["Name"] or "") if self._dist is not None else ""

    @property
    def version(self) -> str:
        return str(self._dist.version or "") if self._dist is not None else ""

    def entry_points(self, group: str) -> list[tuple[str, str]]:
        return [(ep.name, ep.value) for ep in self._dist.entry_points.select(group=group)]


DistLike = _Dist | _MetadataDist


def _plain_path() -> bool:
    """Whether every distribution is a metadata directory on sys.path (what :func:`_scan` reads)."""
    for finder in sys.meta_path:
        if getattr(finder, "find_distributions", None) is None:
            continue
        module = getattr(finder, "__module__", "") or ""
        if finder is not importlib.machinery.PathFinder and not module.startswith(
            ("importlib.metadata", "importlib_metadata")
        ):
            return False
    return True


def _scan(wanted: str | None = None) -> list[_Dist] | None:
    """The installed distributions, the first of each name in sys.path's order (only the one whose
    name is ``wanted`` if given); None when importlib.metadata must look (see above)."""
    if not _plain_path():
        return None
    found: dict[str, _Dist] = {}
    key = _dist_key(wanted) if wanted is not None else None
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except NotADirectoryError:
            return None  # a zip file
        except OSError:
            continue
        if root.lower().endswith(".egg"):
            return None
        for child in children:
            if not child.lower().endswith(_DIST_SUFFIXES):
                continue
            dist = _Dist(os.path.join(root, child), child)
            if dist.key not in found and (key is None or dist.key == key):
                found[dist.key] = dist
        if key is not None and key in found:
            break
    return list(found.values())


def _find(name: str) -> DistLike | None:
    """The installed distribution called ``name``, or None."""
    scanned = _scan(name)
    if scanned is not None:
        return scanned[0] if scanned else None
    from importlib import metadata

    try:
        return _MetadataDist(metadata.distribution(name))
    except metadata.PackageNotFoundError:
        return None


def _installed_entry_points(group: str) -> tuple[list[tuple[str, str, DistLike]], list[_Dist] | None]:
    """Every installed entry point of ``group``: ``(name, value, distribution)``; and the
    distributions scanned (None when importlib.metadata looked)."""
    scanned = _scan()
    if scanned is not None:
        return [(name, value, dist) for dist in scanned for name, value in dist.entry_points(group)], scanned
    from importlib import metadata

    return [(ep.name, ep.value, _MetadataDist(ep.dist)) for ep in metadata.entry_points(group=group)], None


def _load_entry_point(value: str) -> object:
    """What an entry point's ``module:attr`` names."""
    try:
        return load_reference(value)
    except ValueError:
        raise ValueError(f"entry point {value!r} is not 'module' or 'module:attribute'") from None


class _Origin:
    """Where a registered plugin comes from: its distribution's name and version, found when asked."""

    __slots__ = ("_dist", "_name", "_version")

    def __init__(
        self, name: str = "", version: str = "", dist: DistLike | Callable[[], DistLike | None] | None = None
    ) -> None:
        self._name, self._version, self._dist = name, version, dist

    def _found(self) -> DistLike | None:
        if callable(self._dist):
            self._dist = self._dist()
        return self._dist

    @property
    def distribution(self) -> str:
        if self._name:
            return self._name
        dist = self._found()
        return dist.name if dist is not None else ""

    @property
    def version(self) -> str:
        if self._version:
            return self._version
        dist = self._found()
        return dist.version if dist is not None else ""


_NO_ORIGIN: Final = _Origin()


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


class _Pluggy(pluggy.PluginManager):
    """pluggy's manager, quicker to register module plugins: a module's names are most often
    imports (classes, modules, constants, functions without a hook marker), which pluggy looks at
    one by one through ``inspect.getattr_static``; those are passed over here at once. Anything
    that could be a hook implementation is still pluggy's to judge."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if type(plugin) is ModuleType and name in plugin.__dict__:
            value = plugin.__dict__[name]
            if type(value) is FunctionType:
                if not hasattr(value, self.project_name + "_impl"):
                    return None  # a plain function: pluggy would find no marker on it either
            elif not isinstance(value, MethodType | staticmethod | classmethod):
                return None  # classes, modules, constants: never hook implementations
        return super().parse_hookimpl_opts(plugin, name)


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
        self._pm = _Pluggy(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._extra = list(plugins)
        self._origin: dict[str, _Origin] = {}
        self._loaded = False
        self._backends: BackendSet | None = None
        self._declared: list[DeclaredSetting] | None = None
        self._commands: dict[str, DeclaredCommand] | None = None
        self._scanned: list[_Dist] | None = None
        if self.policy.trace:
            import logging

            trace_log = logging.getLogger("vmdev.trace")
            if not logging.getLogger("vmdev").hasHandlers():
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
        core = _Origin("vmdev", dist=partial(self._installed, "vmdev"))
        for name, module in BUILTIN_PLUGINS:
            self._register_lazy(name, partial(importlib.import_module, module), core, "vmdev")
        for name, plugin in self._extra:
            self.register(plugin, name=name)
        for name, value, dist in self._selected_entry_points():
            self._register_lazy(name, partial(_load_entry_point, value), _Origin(dist=dist), dist.stem_name)
        self._check_pending()
        return self

    def _check_pending(self) -> None:
        """Refuse hook implementations that match no hook (pluggy's ``check_pending``), naming the
        plugin and the hook, with the nearest real hook name."""
        for hook_name in dir(self._pm.hook):
            caller = getattr(self._pm.hook, hook_name)
            if hook_name.startswith("_") or not hasattr(caller, "has_spec") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                from difflib import get_close_matches

                known = [n for n in dir(hookspecs) if getattr(getattr(hookspecs, n), "vmdev_spec", None)]
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
        origin = _Origin(distribution, version) if distribution or version else _NO_ORIGIN
        self._register(plugin, name, origin, distribution)

    def _register(self, plugin: object, name: str, origin: _Origin, dist_name: str) -> None:
        if self.policy.blocks(name, dist_name):
            _logger("vmdev.plugins").debug("plugin %s is disabled", name)
            self._pm.set_blocked(name)
            return
        self._pm.register(plugin, name=name)
        self._origin[name] = origin
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

    def _register_lazy(self, name: str, load: Callable[[], object], origin: _Origin, dist_name: str) -> None:
        """Import and register a plugin unless the policy blocks it (``dist_name``: its distribution's
        name as its metadata directory spells it, enough to match the disable list)."""
        if self.policy.blocks(name, dist_name):
            self._pm.set_blocked(name)
            return
        if self._pm.has_plugin(name):
            return
        try:
            plugin = load()
            self._register(plugin, name, origin, dist_name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the host
            _warn(
                f"vmdev plugin {name!r} from distribution {origin.distribution!r} failed to load "
                f"and is skipped: {type(exc).__name__}: {exc}",
                stacklevel=2,
            )

    def _selected_entry_points(self) -> list[tuple[str, str, DistLike]]:
        selected: list[tuple[str, str, DistLike]] = []
        if self.policy.only is not None:
            for dist_name in self.policy.only:
                dist = _find(dist_name)
                if dist is None:
                    _warn(f"{ENV_PLUGINS} names {dist_name!r}, which is not installed", stacklevel=3)
                    continue
                selected += [(name, value, dist) for name, value in dist.entry_points(ENTRY_POINT_GROUP)]
            return selected
        if not self.policy.autoload:
            return selected
        selected, self._scanned = _installed_entry_points(ENTRY_POINT_GROUP)
        return selected

    def _installed(self, name: str) -> DistLike | None:
        """The installed distribution called ``name`` (from the scan :meth:`load` made, if it made one)."""
        if self._scanned is None:
            return _find(name)
        key = _dist_key(name)
        return next((dist for dist in self._scanned if dist.key == key), None)

    # --- introspection ---------------------------------------------------------------------
    def list_plugins(self) -> list[PluginInfo]:
        self.load()
        out = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or ()))
            origin = self._origin.get(name, _NO_ORIGIN)
            out.append(PluginInfo(name=name, distribution=origin.distribution, version=origin.version,
                                  hooks=hooks))
        return out

    def plugin_names(self) -> list[str]:
        self.load()
        return [name for name, plugin in self._pm.list_name_plugin() if plugin is not None]

    def plugin_packages(self) -> list[str]:
        """The top-level packages the registered plugins come from (``vmdev`` for the built-ins):
        what ``python -m vmdev.methodcache`` imports to fill the method cache."""
        self.load()
        modules = (plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
                   for _, plugin in self._pm.list_name_plugin() if plugin is not None)
        return sorted({module.partition(".")[0] for module in modules})

    # --- calling ---------------------------------------------------------------------------
    def _call(self, hook: str, *, first: bool, subject: str = "", **kwargs: Any) -> list[Answer]:
        """Call ``hook`` through ``pm.hook`` (so wrappers, tracing and monitoring apply) and say who
        answered what: every answer in order, or the first-result hook's answer.

        Exceptions other than :class:`VmdevError` become a :class:`PluginError` naming the
        plugin (see :func:`_answering`); it is given the device the call was about.
        """
        if first:
            found = self._first(hook, subject, kwargs)
            return [] if found is None else [found]
        result, answered = self._dispatch(hook, subject, kwargs)
        answers = [Answer(value=v, plugin=_who(answered, v)) for v in result]
        if self.policy.trace:
            _logger("vmdev.trace").debug("%s result: %r", hook, [(a.plugin, a.value) for a in answers])
        return answers

    def _dispatch(self, hook: str, subject: str, kwargs: dict[str, Any]) -> tuple[Any, list[tuple[str, Any]]]:
        """Call ``hook`` through ``pm.hook``; its result and the (plugin, answer) pairs the
        instrumented implementations reported. A VmdevError without a device gets ``subject``."""
        if not self._loaded:
            self.load()
        answered: list[tuple[str, Any]] = []
        token = _answers.set(answered)
        try:
            result = getattr(self._pm.hook, hook)(**kwargs)
        except VmdevError as exc:
            if subject and not exc.device:
                exc.device = subject  # the plugin did not say which device: the call was about this one
            raise
        finally:
            _answers.reset(token)
        return result, answered

    def _first(self, hook: str, subject: str, kwargs: dict[str, Any]) -> Answer | None:
        """:meth:`_call` for a first-result hook: its answer, or None."""
        value, answered = self._first_value(hook, subject, kwargs)
        return None if value is None else Answer(value=value, plugin=_who(answered, value))

    def _first_value(
        self, hook: str, subject: str, kwargs: dict[str, Any]
    ) -> tuple[Any, list[tuple[str, Any]]]:
        """A first-result hook's result and who answered what (the path taken for every device: the
        plugin's name is looked up only when it is needed)."""
        result, answered = self._dispatch(hook, subject, kwargs)
        if self.policy.trace:
            shown = [] if result is None else [(_who(answered, result), result)]
            _logger("vmdev.trace").debug("%s result: %r", hook, shown)
        return result, answered

    # --- backends and settings -------------------------------------------------------------
    def backends(self) -> BackendSet:
        """Every installed backend (``register_backends``), by name."""
        if self._backends is None:
            found: dict[str, RegisteredBackend] = {}

            def register(backend: Backend) -> None:
                plugin = _running.get()
                _check_registered(backend, Backend, "vmdev.backend.Backend", plugin, "register_backends")
                if backend.name in found:
                    raise PluginError(
                        f"plugins {found[backend.name].plugin!r} and {plugin!r} both register a backend "
                        f"called {backend.name!r}",
                        field="register_backends",
                    )
                origin = self._origin.get(plugin, _NO_ORIGIN)
                found[backend.name] = RegisteredBackend(
                    backend=backend, plugin=plugin, distribution=lambda: origin.distribution
                )

            self._call("register_backends", first=False, register=register)
            self._backends = BackendSet(found)
        return self._backends

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; a one-line error listing the installed ones if none is."""
        return self.backends().get(name).backend

    def declared_settings(self) -> list[DeclaredSetting]:
        """Every settings key the loaded plugins declare (``register_settings``)."""
        if self._declared is None:
            from vmdev.declared import DeclaredSetting, Setting

            found: list[DeclaredSetting] = []

            def register(setting: Setting) -> None:
                plugin = _running.get()
                _check_registered(setting, Setting, "vmdev.declared.Setting", plugin, "register_settings")
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
        from vmdev.declared import parse_settings

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
        if host is None:
            from vmdev.host import HostContext

            host = HostContext()
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
        answer = self._first("device_from_state", name, {"kind": kind, "data": data, "plugin": plugin})
        if answer is None:
            raise PluginError(
                f"no plugin rebuilds saved {kind} devices (plugin {plugin!r} has no device_from_state "
                "hook, or is not installed)",
                device=name,
                field="kind",
            )
        device: Device = _typed(answer, Device, "device_from_state", name)
        return device

    def host_facts(self, device: Device, host: HostContext, *, name: str) -> dict[str, str]:
        """What the device's family says it was built from on the host (may be empty)."""
        answer = self._first("host_facts", name, {"device": device, "host": host})
        if answer is None:
            return {}
        facts = answer.value
        if not isinstance(facts, Mapping) or not all(isinstance(v, str) for v in facts.values()):
            raise PluginError(
                f"plugin {answer.plugin!r} returned {facts!r} from host_facts, not a mapping of strings",
                device=name,
            )
        return {str(k): v for k, v in facts.items()}

    def register_commands(self, cli: Any) -> None:
        self._call("register_commands", first=False, cli=cli)

    def lazy_commands(self) -> dict[str, DeclaredCommand]:
        """The commands the plugins declare (``register_lazy_commands``), by name (asked once)."""
        if self._commands is None:
            self._commands = self._declared_commands()
        return dict(self._commands)

    def _declared_commands(self) -> dict[str, DeclaredCommand]:
        from vmdev.commands import CommandSpec, DeclaredCommand

        found: dict[str, DeclaredCommand] = {}

        def register(spec: CommandSpec) -> None:
            plugin = _running.get()
            _check_registered(spec, CommandSpec, "vmdev.commands.CommandSpec", plugin,
                              "register_lazy_commands")
            if spec.name in found:
                raise PluginError(
                    f"plugins {found[spec.name].plugin!r} and {plugin!r} both declare a command called "
                    f"{spec.name!r}",
                    field="register_lazy_commands",
                )
            found[spec.name] = DeclaredCommand(spec, plugin)

        self._call("register_lazy_commands", first=False, register=register)
        return found

    def adds_click_commands(self) -> bool:
        """Whether a loaded plugin adds commands by hand (``register_commands``): only click can
        then say what ``vmdev --help`` lists."""
        self.load()
        return bool(self._pm.hook.register_commands.get_hookimpls())

    def check_settings(self, settings: SandboxSettings) -> None:
        self._call("check_settings", first=False, settings=settings)

    def resolve_host_path(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings | None = None
    ) -> str:
        path: str = self._resolved(info, host, settings)[0]
        return path

    def resolve_host_path_answer(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings | None = None
    ) -> Answer:
        """The host path and the plugin that resolved it."""
        path, answered = self._resolved(info, host, settings)
        return Answer(value=path, plugin=_who(answered, path))

    def _resolved(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings | None
    ) -> tuple[str, list[tuple[str, Any]]]:
        if settings is None:
            from vmdev.settings import SandboxSettings

            settings = self.prepare_settings(SandboxSettings())
        kwargs = {"info": info, "host": host, "settings": settings}
        path, answered = self._first_value("resolve_host_path", info.name, kwargs)
        if path is None:
            raise UnclaimedDeviceError("no plugin resolved its host path", device=info.name)
        if type(path) is not str:
            _typed(Answer(value=path, plugin=_who(answered, path)), str, "resolve_host_path", info.name)
        return path, answered

    def device_from_mount(
        self, mount: OciMount, host: HostContext, settings: SandboxSettings
    ) -> Answer | None:
        answer = self._first(
            "device_from_mount", mount.destination, {"mount": mount, "host": host, "settings": settings}
        )
        if answer is not None:
            _typed(answer, DeviceInfo, "device_from_mount", mount.destination)
        return answer

    def build_device(
        self, info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator | None = None
    ) -> Answer:
        """The built device and the plugin that claimed it."""
        if alloc is None:
            from vmdev.resources import Allocator

            alloc = Allocator()
        answer = self._first(
            "build_device", info.name, {"info": info, "host": host, "settings": settings, "alloc": alloc}
        )
        if answer is None:
            kind = {"b": "block", "c": "character", "u": "character", "p": "FIFO"}[info.dev_type]
            raise UnclaimedDeviceError(
                f"no installed plugin handles {kind} devices like this one "
                f"({info.dev_type} {info.major}:{info.minor}); install one (for example "
                f"vmdev-block) or remove the device",
                device=info.name,
                field="type",
            )
        _typed(answer, Device, "build_device", info.name)
        return answer

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
        answer = self._first("attach_options", name, {"device": device, "target": target, "hotplug": hotplug})
        if answer is None:
            raise PluginError(
                f"no plugin renders {device.kind} devices for the {target.hypervisor} backend (neither "
                f"the plugin that built it nor the backend's plugin answered attach_options)",
                device=name,
                field="hypervisor",
            )
        value: AttachOptions = _typed(answer, target.attach_type, "attach_options", name)
        return value

    @property
    def pluggy(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for advanced use; prefer the typed methods)."""
        return self._pm


#: (protocol, class) pairs known to match: ``isinstance`` against a runtime-checkable protocol
#: looks at every member each time (10 us, once per device and hook)
_MATCHED: set[tuple[type, type]] = set()


def _is_a(value: Any, kind: Any) -> bool:
    """``isinstance(value, kind)``, remembered for a protocol whose members ``value``'s class has."""
    if (kind, type(value)) in _MATCHED:
        return True
    if not isinstance(value, kind):
        return False
    members = getattr(kind, "__protocol_attrs__", None)
    if members is None and getattr(kind, "_is_protocol", False):
        import typing

        members = typing._get_protocol_attrs(kind)  # type: ignore[attr-defined]  # 3.10, 3.11
    if members is not None and all(hasattr(type(value), m) for m in members):
        _MATCHED.add((kind, type(value)))
    return True


def _typed(answer: Answer, kind: Any, hook: str, device: str) -> Any:
    if not _is_a(answer.value, kind):
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

    registering = hook in _REGISTERING

    def implementation(*args: Any, **kwargs: Any) -> Any:
        token = _running.set(plugin) if registering else None
        try:
            value = function(*args, **kwargs)
        except VmdevError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc
        finally:
            if token is not None:
                _running.reset(token)
        if trace:
            shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            _logger("vmdev.trace").debug("%s[%s](%s) -> %r", hook, plugin, shown, value)
        answers = _answers.get()
        if answers is not None and value is not None:
            answers.append((plugin, value))
        return value

    implementation.__wrapped__ = function  # type: ignore[attr-defined]
    return implementation


def _check_registered(value: Any, kind: type, name: str, plugin: str, hook: str) -> None:
    """What a ``register`` callback was given must be of the hook's type."""
    if not isinstance(value, kind):
        raise PluginError(f"plugin {plugin!r} registered {type(value).__name__}, not a {name}", field=hook)


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


#: the manager of the :func:`shared_manager` block under way (an empty list until one is made)
_shared: ContextVar[list[PluginManager] | None] = ContextVar("vmdev_shared_manager", default=None)


@contextmanager
def shared_manager() -> Iterator[None]:
    """Within this block, :func:`get_plugin_manager` without arguments returns one manager, made and
    loaded when first asked for: a command line run loads its plugins once, however many of its
    parts (flags, settings, the command) ask. Nested blocks share the outer one's."""
    if _shared.get() is not None:
        yield
        return
    token = _shared.set([])
    try:
        yield
    finally:
        _shared.reset(token)


def get_plugin_manager(
    policy: LoadPolicy | None = None, *, plugins: Iterable[tuple[str, object]] = ()
) -> PluginManager:
    """A loaded plugin manager (environment policy unless one is given; inside a
    :func:`shared_manager` block, the block's manager when neither is given)."""
    cell = _shared.get() if policy is None and not plugins else None
    if cell is None:
        return PluginManager(policy, plugins=plugins).load()
    if not cell:
        cell.append(PluginManager().load())
    return cell[0]


__all__ = [
    "Answer",
    "LoadPolicy",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginManager",
    "get_plugin_manager",
    "shared_manager",
]
