"""What the REST-API backends (Cloud Hypervisor, Firecracker) share: their plan's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from vmdev.serialize import to_json
from vmdev.targets import ApiRequest


def hot_requests(attaches: Sequence[Any]) -> tuple[tuple[ApiRequest, ...], tuple[ApiRequest, ...]]:
    """The hot-plug requests of every device in plan order, and the unplug requests in reverse
    device order (each device's own requests keep their order)."""
    hotplug = tuple(r for attach in attaches for r in attach.hotplug)
    unplug = tuple(r for attach in reversed(attaches) for r in attach.unplug)
    return hotplug, unplug


@attrs.frozen(kw_only=True)
class ApiPlan:
    """Cloud Hypervisor or Firecracker: boot configuration and hot-plug requests."""

    config: Mapping[str, Any]
    requests: tuple[ApiRequest, ...]
    hotplug: tuple[ApiRequest, ...]
    unplug: tuple[ApiRequest, ...]
    config_key: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.config_key:
            out[self.config_key] = to_json(dict(self.config))
        else:
            out["requests"] = [r.to_json() for r in self.requests]
        out["hotplug"] = [r.to_json() for r in self.hotplug]
        out["unplug"] = [r.to_json() for r in self.unplug]
        return out
