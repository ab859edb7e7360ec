"""The Cloud Hypervisor backend (built in): ``VmConfig`` fragments and ``vm.add-*`` bodies.

Plugins return :class:`ClhAttach`; :func:`assemble` merges the fragments into one ``VmConfig``
(list keys such as ``disks`` are appended, a scalar set twice differently is an error) and keeps
the hot-plug request bodies in plan order, unplug in reverse. No live driver: vmdev keeps the
books of a Cloud Hypervisor sandbox, the runtime sends the requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs

from vmdev._convert import any_dict
from vmdev.backend import Backend, RenderContext
from vmdev.backends.api import ApiPlan, hot_requests
from vmdev.declared import INTEGER, Setting
from vmdev.errors import UnsupportedError
from vmdev.hookspecs import hookimpl
from vmdev.settings import SandboxSettings
from vmdev.targets import ApiRequest, RenderTarget, request_tuple

NAME: Final = "cloud-hypervisor"
VCPUS_KEY: Final = "default_vcpus"
#: Cloud Hypervisor's limit of boot vCPUs (its API's cpus.boot_vcpus is a u8)
MAX_VCPUS: Final = 254


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


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return ClhTarget(settings, context)


BACKEND: Final = Backend(
    name=NAME,
    description="Cloud Hypervisor: VmConfig fragments and vm.add-* request bodies",
    kata_sections=("clh",),
    target=_target,
    assemble=assemble,
    plan_key="cloud_hypervisor",
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting(
        name=VCPUS_KEY, type=INTEGER, default=1, minimum=1, maximum=MAX_VCPUS, kata_key=VCPUS_KEY,
        backends=(NAME,),
        description="the guest's boot vCPUs; Kata Go gives each Cloud Hypervisor disk one queue per vCPU",
    ))
