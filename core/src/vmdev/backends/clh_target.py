"""The Cloud Hypervisor backend's render target, attach type and plan assembly.

Split from :mod:`vmdev.backends.clh` (which registers the backend) so that a plan for another
hypervisor never creates these classes: the backend's module is imported on every ``vmdev plan``,
this one only when a Cloud Hypervisor plan is made (issue 13).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from vmdev._convert import any_dict
from vmdev.backends.api import ApiPlan, hot_requests
from vmdev.backends.clh import NAME
from vmdev.errors import UnsupportedError
from vmdev.settings import SandboxSettings
from vmdev.targets import ApiRequest, RenderTarget, request_tuple


@attrs.frozen(kw_only=True)
class ClhAttach:
    """Cloud Hypervisor: ``VmConfig`` fragments (list keys are appended) and API bodies."""

    vm_config: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)
    hotplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=request_tuple)
    unplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=request_tuple)
    hotplugged: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)


@attrs.define
class ClhTarget(RenderTarget):
    hypervisor: ClassVar[str] = NAME
    attach_type: ClassVar[type[Any]] = ClhAttach


def assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> ApiPlan:
    config: dict[str, Any] = {}
    for planned in devices:
        attach = planned.attach
        assert isinstance(attach, ClhAttach)
        for key, value in attach.vm_config.items():
            if isinstance(value, list | tuple):
                config.setdefault(key, []).extend(value)
            elif key in config and config[key] != value:
                raise UnsupportedError(
                    f"VmConfig.{key} is already set by another device",
                    device=planned.container_path or planned.id,
                    field=key,
                )
            else:
                config[key] = value
    if settings.values.get("enable_iommu"):  # Kata's clh.go: platform.SetIommuSegments([0])
        config.setdefault("platform", {}).setdefault("iommu_segments", [0])
    hotplug, unplug = hot_requests([planned.attach for planned in devices])
    return ApiPlan(config=config, requests=(), hotplug=hotplug, unplug=unplug, config_key="vm_config")
