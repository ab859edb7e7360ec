"""The cases the surfaces run: plain data (hypothesis builds, shrinks and prints them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vmdev_fuzz.hosts import HostSpec


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


@attrs.frozen
class PlanCase:
    """One plan: an OCI document, settings and a host. ``options`` is the hypervisor section (with
    ``[vmdev]`` merged), ``runtime`` Kata's ``[runtime]`` table; ``machine``/``memory`` None
    leave the core's defaults. ``toml`` routes the settings through a configuration file."""

    hypervisor: str
    hotplug: bool = False
    machine: Any = None
    memory: Any = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)
    runtime: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)
    host: HostSpec = attrs.field(factory=HostSpec)
    document: Any = attrs.field(factory=dict)
    toml: bool = False


@attrs.frozen
class RawCase:
    """Bytes for a reader (an OCI ``config.json`` or a ``configuration.toml``), then a plan of what
    it gave on ``hypervisor`` (an empty host)."""

    data: bytes
    hypervisor: str = "qemu"
    hotplug: bool = False
