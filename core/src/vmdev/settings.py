"""Sandbox settings: the hypervisor, the machine and every plugin's options.

Settings can be read from a Kata ``configuration.toml`` unchanged: the section
of the selected hypervisor (``[hypervisor.qemu]``, ``[hypervisor.clh]`` or
``[hypervisor.firecracker]``) is taken as the option table. The core
interprets only the hypervisor-neutral keys (``machine_type``,
``default_memory``); every other key (``block_device_driver``,
``entropy_source``, ...) is kept in :attr:`SandboxSettings.options` for the
plugin that owns it. A ``[vmdev]`` table holds vmdev's own keys (``hotplug``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from vmdev.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

QEMU: Final = "qemu"
CLOUD_HYPERVISOR: Final = "cloud-hypervisor"
FIRECRACKER: Final = "firecracker"
HYPERVISORS: Final = (QEMU, CLOUD_HYPERVISOR, FIRECRACKER)

#: The Kata configuration.toml section of each hypervisor.
KATA_SECTIONS: Final = {QEMU: "qemu", CLOUD_HYPERVISOR: "clh", FIRECRACKER: "firecracker"}

DEFAULT_MACHINE_TYPE: Final = "q35"
DEFAULT_MEMORY_MIB: Final = 2048

_MACHINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MISSING = object()


def _check_hypervisor(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in HYPERVISORS:
        raise ConfigError(f"{value!r} is not one of {', '.join(HYPERVISORS)}", field="hypervisor")


def _check_machine(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _MACHINE_RE.fullmatch(value):
        raise ConfigError(f"{value!r} is not a machine type name", field="machine_type")


def _check_memory(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"must be a positive number of MiB, got {value!r}", field="default_memory")


@attrs.frozen(kw_only=True)
class SandboxSettings:
    """What the sandbox looks like. Immutable; use :meth:`with_options` to derive."""

    hypervisor: str = attrs.field(default=QEMU, validator=_check_hypervisor)
    machine_type: str = attrs.field(default=DEFAULT_MACHINE_TYPE, validator=_check_machine)
    memory_mib: int = attrs.field(default=DEFAULT_MEMORY_MIB, validator=_check_memory)
    #: hot-plug devices into a running VM instead of cold-plugging them at boot
    hotplug: bool = False
    #: every other key of the hypervisor section, for the plugins
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def str_option(self, key: str, default: str) -> str:
        """A string option; a value of another type is a :class:`ConfigError` naming the key."""
        value = self.options.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {value!r}", field=key)
        return value

    def with_options(self, **changes: Any) -> SandboxSettings:
        """A copy with option keys changed (``None`` values are ignored)."""
        merged = dict(self.options)
        merged.update({k: v for k, v in changes.items() if v is not None})
        return attrs.evolve(self, options=merged)

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
    hypervisor: str = QEMU,
    overrides: Mapping[str, Any] | None = None,
) -> SandboxSettings:
    """Read settings from a TOML file (Kata's keys accepted as they are), then apply overrides.

    ``overrides`` use TOML key names (``machine_type``, ``default_memory``,
    ``hotplug``, ``block_device_driver``...); ``None`` values are ignored so
    that unset command-line flags leave the file's values alone.
    """
    section: dict[str, Any] = {}
    own: dict[str, Any] = {}
    if path is not None:
        document = _read_toml(Path(path))
        section = _table(document, ("hypervisor", KATA_SECTIONS.get(hypervisor, hypervisor)))
        own = _table(document, ("vmdev",))
    merged = {**section, **own, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    machine = merged.pop("machine_type", _MISSING)
    memory = merged.pop("default_memory", _MISSING)
    hotplug = merged.pop("hotplug", False)
    if not isinstance(hotplug, bool):
        raise ConfigError(f"must be true or false, got {hotplug!r}", field="hotplug")
    kwargs: dict[str, Any] = {"hypervisor": hypervisor, "hotplug": hotplug, "options": merged}
    if machine is not _MISSING and machine != "":
        if not isinstance(machine, str):
            raise ConfigError(f"must be a string, got {machine!r}", field="machine_type")
        kwargs["machine_type"] = machine
    if memory is not _MISSING and memory != 0:
        kwargs["memory_mib"] = memory
    return SandboxSettings(**kwargs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document: dict[str, Any] = tomllib.load(handle)
            return document
    except OSError as exc:
        raise ConfigError(f"cannot read settings file: {exc.strerror}", device=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", device=str(path)) from None


def _table(document: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    node: Any = document
    for key in keys:
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    if not isinstance(node, Mapping):
        raise ConfigError("must be a table", field=".".join(keys))
    return dict(node)
