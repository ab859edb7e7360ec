"""The Firecracker backend's render target, attach type and plan assembly.

Split from :mod:`vmdev.backends.firecracker` (which registers the backend) so that a plan for
another hypervisor never creates these classes (issue 13).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from vmdev._convert import any_dict
from vmdev.backends.api import ApiPlan, hot_requests
from vmdev.backends.firecracker import NAME
from vmdev.settings import SandboxSettings
from vmdev.targets import ApiRequest, RenderTarget, request_tuple


@attrs.frozen(kw_only=True)
class FirecrackerAttach:
    """Firecracker: the API requests that configure the device before boot, or hot-plug it."""

    requests: tuple[ApiRequest, ...] = attrs.field(default=(), converter=request_tuple)
    hotplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=request_tuple)
    unplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=request_tuple)
    hotplugged: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)


@attrs.define
class FirecrackerTarget(RenderTarget):
    hypervisor: ClassVar[str] = NAME
    attach_type: ClassVar[type[Any]] = FirecrackerAttach


def assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> ApiPlan:
    attaches = [planned.attach for planned in devices]
    assert all(isinstance(attach, FirecrackerAttach) for attach in attaches)
    hotplug, unplug = hot_requests(attaches)
    requests = tuple(r for attach in attaches for r in attach.requests)
    return ApiPlan(config={}, requests=requests, hotplug=hotplug, unplug=unplug, config_key="")
