"""Sandbox settings: the hypervisor, the machine and every plugin's options.

Settings can be read from a Kata ``configuration.toml`` unchanged: the section
of the selected hypervisor (``[hypervisor.qemu]``, ``[hypervisor.clh]``, ... as
each backend declares its Kata sections) is taken as the option table, and
``[runtime]`` is kept beside it. The core interprets only the
hypervisor-neutral keys (``machine_type``, ``default_memory``, ``hotplug``);
every other key is declared by the plugin that owns it
(:mod:`vmdev.declared`) and parsed once, typed, before planning. A ``[vmdev]``
table holds vmdev's own keys (``hotplug``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from vmdev.errors import ConfigError

if TYPE_CHECKING:
    from vmdev.plugins import PluginManager


#: the backend used when neither a flag nor the configuration file names one
DEFAULT_HYPERVISOR: Final = "qemu"
#: the names of the core's built-in backends (vmdev.backends); any installed backend's name is valid
QEMU: Final = DEFAULT_HYPERVISOR
CLOUD_HYPERVISOR: Final = "cloud-hypervisor"
FIRECRACKER: Final = "firecracker"

#: ``[runtime] name`` of Kata's runtime-rs configuration files
RUNTIME_RS_NAME: Final = "virt_container"

DEFAULT_MACHINE_TYPE: Final = "q35"
DEFAULT_MEMORY_MIB: Final = 2048

_MACHINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BACKEND_RE = re.compile(r"[a-z][a-z0-9-]*")
_MISSING = object()


def _check_hypervisor(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    # which backends exist is the plugins' business (checked when settings are prepared)
    if not isinstance(value, str) or not _BACKEND_RE.fullmatch(value):
        raise ConfigError(f"{value!r} is not a backend name", field="hypervisor")


def _check_machine(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _MACHINE_RE.fullmatch(value) or len(value) > 64:
        raise ConfigError(f"{value!r:.80} is not a machine type name", field="machine_type")


#: the most guest memory a setting may ask for (16 TiB). Kata caps default_memory at the host's
#: memory; settings are read without a host, so vmdev refuses what no host offers one guest instead
#: of letting QEMU fail at start ("cannot set up guest memory") — 2 PiB used to be accepted
MAX_MEMORY_MIB: Final = 16 * 1024 * 1024


def _check_memory(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_MEMORY_MIB:
        raise ConfigError(
            f"must be a number of MiB from 1 to {MAX_MEMORY_MIB} (16 TiB), got {value!r}",
            field="default_memory",
        )


def _any_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class SandboxSettings:
    """What the sandbox looks like. Immutable; use :meth:`with_options` to derive.

    ``options`` are the raw keys of the hypervisor section (with ``[vmdev]`` and overrides
    merged in) and ``runtime`` those of Kata's ``[runtime]`` table. ``values`` holds the typed
    value of every key the loaded plugins declare, filled by
    :meth:`vmdev.plugins.PluginManager.prepare_settings` (which :func:`vmdev.plan` and the
    device manager call first); hooks read them with :meth:`value`.
    """

    hypervisor: str = attrs.field(default=DEFAULT_HYPERVISOR, validator=_check_hypervisor)
    machine_type: str = attrs.field(default=DEFAULT_MACHINE_TYPE, validator=_check_machine)
    memory_mib: int = attrs.field(default=DEFAULT_MEMORY_MIB, validator=_check_memory)
    #: hot-plug devices into a running VM instead of cold-plugging them at boot
    hotplug: bool = False
    #: every other key of the hypervisor section, for the plugins
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_dict)
    #: Kata's [runtime] table
    runtime: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_dict)
    #: typed values of the declared keys (derived from the above; see prepare_settings)
    values: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_dict, eq=False, repr=False)

    def value(self, key: str, default: Any = _MISSING) -> Any:
        """The typed value of a declared settings key (its default when the file has none).

        ``default`` is for keys another plugin declares and may not be installed: it is returned
        when no loaded plugin declares ``key``; without it that is an error."""
        try:
            return self.values[key]
        except KeyError:
            if default is not _MISSING:
                return default
            raise ConfigError(
                "is not a declared settings key of the loaded plugins (or the settings were not "
                "prepared: call PluginManager.prepare_settings first)",
                field=key,
            ) from None

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def str_option(self, key: str, default: str) -> str:
        """A string option; a value of another type is a :class:`ConfigError` naming the key."""
        value = self.options.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {value!r}", field=key)
        return value

    def with_options(self, **changes: Any) -> SandboxSettings:
        """A copy with option keys changed (``None`` values are ignored); typed values are
        dropped and must be prepared again."""
        merged = dict(self.options)
        merged.update({k: v for k, v in changes.items() if v is not None})
        return attrs.evolve(self, options=merged, values={})

    @property
    def kata_runtime(self) -> str:
        """Which Kata runtime the configuration is written for: ``runtime-rs`` when its
        ``[runtime]`` table names ``virt_container`` (every runtime-rs file does), else ``go``.
        Families follow that runtime where Kata's two runtimes differ."""
        return "runtime-rs" if self.runtime.get("name") == RUNTIME_RS_NAME else "go"

    @property
    def is_microvm(self) -> bool:
        return self.machine_type.startswith("microvm")

    @property
    def is_ccw(self) -> bool:
        return self.machine_type.startswith("s390-ccw")

    @property
    def has_pcie_root(self) -> bool:
        """Kata's ``hasPCIeRoot``: q35 and arm ``virt`` have a PCIe root complex."""
        return self.machine_type.startswith(("q35", "virt"))


def load_settings(
    path: str | Path | None,
    *,
    hypervisor: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    plugins: PluginManager | None = None,
) -> SandboxSettings:
    """Read settings from a TOML file (Kata's keys accepted as they are), then apply overrides.

    The hypervisor is ``hypervisor`` when given, else the one the file is for: a Kata
    configuration has exactly one ``[hypervisor.X]`` section, and the installed backend that
    reads ``X`` is taken (``plugins`` supplies the backends; the environment's plugin manager
    by default). A flag that contradicts the file, or a file for a hypervisor no installed
    backend reads, is a one-line error naming both. A file with several sections (a vmdev file
    for several hypervisors) gives ``qemu``'s unless told otherwise. Without a file: ``qemu``.

    ``overrides`` use TOML key names (``machine_type``, ``default_memory``, ``hotplug``,
    ``block_device_driver``...); ``None`` values are ignored so that unset command-line flags
    leave the file's values alone.
    """
    document: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    section_name, section = _hypervisor_section(document, hypervisor, plugins, str(path or ""))
    own = _table(document, ("vmdev",))
    runtime = _table(document, ("runtime",))
    merged = {**section, **own, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    machine = merged.pop("machine_type", _MISSING)
    memory = merged.pop("default_memory", _MISSING)
    hotplug = merged.pop("hotplug", False)
    if not isinstance(hotplug, bool):
        raise ConfigError(f"must be true or false, got {hotplug!r}", field="hotplug")
    kwargs: dict[str, Any] = {
        "hypervisor": section_name, "hotplug": hotplug, "options": merged, "runtime": runtime
    }
    if machine is not _MISSING and machine != "":
        if not isinstance(machine, str):
            raise ConfigError(f"must be a string, got {machine!r}", field="machine_type")
        kwargs["machine_type"] = machine
    if memory is not _MISSING and memory != 0:
        kwargs["memory_mib"] = memory
    return SandboxSettings(**kwargs)


def _hypervisor_section(
    document: Mapping[str, Any], hypervisor: str | None, plugins: PluginManager | None, source: str
) -> tuple[str, dict[str, Any]]:
    """The backend name and its section of the file (see :func:`load_settings`)."""
    tables = _table(document, ("hypervisor",))
    if hypervisor is None and not tables:
        return DEFAULT_HYPERVISOR, {}
    from vmdev.plugins import get_plugin_manager

    backends = (plugins or get_plugin_manager()).backends()
    if hypervisor is not None:
        wanted = backends.get(hypervisor)
        sections = [s for s in tables if s in wanted.backend.kata_sections or s == hypervisor]
        if tables and not sections:
            raise ConfigError(
                f"the file configures [hypervisor.{', hypervisor.'.join(sorted(tables))}], not "
                f"{hypervisor} (whose sections are {', '.join(wanted.backend.kata_sections)}); "
                "drop --hypervisor or use a file for it",
                device=source,
                field="hypervisor",
            )
        return hypervisor, _table(document, ("hypervisor", sections[0])) if sections else {}
    if len(tables) > 1 and DEFAULT_HYPERVISOR in tables:
        # a vmdev file for several hypervisors (Kata's own files have one section): qemu unless told
        return DEFAULT_HYPERVISOR, _table(document, ("hypervisor", DEFAULT_HYPERVISOR))
    if len(tables) > 1:
        raise ConfigError(
            f"the file has several hypervisor sections ({', '.join(sorted(tables))}); choose one "
            "with --hypervisor",
            device=source,
            field="hypervisor",
        )
    (section,) = tables
    found = backends.for_section(section)
    if found is None:
        raise ConfigError(
            f"the file is for hypervisor {section!r} ([hypervisor.{section}]), and no installed "
            f"backend reads it (installed: {', '.join(backends.names())})",
            device=source,
            field="hypervisor",
        )
    return found.name, _table(document, ("hypervisor", section))


#: the largest settings file read: Kata's biggest shipped configuration (configuration-qemu-nvidia-gpu
#: -runtime-rs.toml, mostly comments) is 37 KiB, so 1 MiB is 28 times that and still parses in
#: milliseconds; anything larger is not a settings file (``/dev/zero`` is refused unread: not a file)
MAX_SETTINGS_BYTES: Final = 1024 * 1024


def _read_toml(path: Path) -> dict[str, Any]:
    # imported here: a plan without --config never pays for the TOML parser (issue 13)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    from vmdev.host import read_named

    # a regular file only: a FIFO would block the reader, a device node could have no end
    data = read_named(path, limit=MAX_SETTINGS_BYTES, refuse=lambda reason: ConfigError(
        f"cannot read settings file: {reason}", device=str(path)))
    try:
        document: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
        return document
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", device=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 (TOML must be): {exc.reason} at byte {exc.start}",
                          device=str(path)) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of thousands of digits
        raise ConfigError(f"invalid TOML: {exc}", device=str(path)) from None


def _table(document: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    node: Any = document
    for key in keys:
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    if not isinstance(node, Mapping):
        raise ConfigError("must be a table", field=".".join(keys))
    return dict(node)
