"""The Firecracker backend (built in): the API requests that configure devices before boot.

Plugins return :class:`FirecrackerAttach`; :func:`assemble` lists the requests in plan order (hot
plug likewise, unplug in reverse). No live driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs

from vmdev._convert import any_dict
from vmdev.backend import Backend, RenderContext
from vmdev.backends.api import ApiPlan, hot_requests
from vmdev.hookspecs import hookimpl
from vmdev.settings import SandboxSettings
from vmdev.targets import ApiRequest, RenderTarget, request_tuple

NAME: Final = "firecracker"


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


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return FirecrackerTarget(settings, context)


BACKEND: Final = Backend(
    name=NAME,
    description="Firecracker: API requests before boot",
    kata_sections=("firecracker",),
    target=_target,
    assemble=assemble,
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)
