"""The Cloud Hypervisor backend (built in): ``VmConfig`` fragments and ``vm.add-*`` bodies.

Plugins return :class:`ClhAttach`; :func:`assemble` merges the fragments into one ``VmConfig``
(list keys such as ``disks`` are appended, a scalar set twice differently is an error) and keeps
the hot-plug request bodies in plan order, unplug in reverse. No live driver: vmdev keeps the
books of a Cloud Hypervisor sandbox, the runtime sends the requests.

This module only registers the backend and its setting: it is imported on every ``vmdev plan``,
so the target, the attach type and :func:`assemble` live in :mod:`vmdev.backends.clh_target`,
imported when a Cloud Hypervisor plan is made (their names stay importable from here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from vmdev.backend import Backend, BackendPlan, RenderContext
from vmdev.declared import INTEGER, Setting
from vmdev.hookspecs import hookimpl
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget

if TYPE_CHECKING:
    from vmdev.backends.clh_target import ClhAttach as ClhAttach
    from vmdev.backends.clh_target import ClhTarget as ClhTarget
    from vmdev.backends.clh_target import assemble as assemble

NAME: Final = "cloud-hypervisor"
VCPUS_KEY: Final = "default_vcpus"
#: Cloud Hypervisor's limit of boot vCPUs (its API's cpus.boot_vcpus is a u8)
MAX_VCPUS: Final = 254
_LAZY: Final = frozenset({"ClhAttach", "ClhTarget", "assemble"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from vmdev.backends import clh_target

        return getattr(clh_target, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    from vmdev.backends.clh_target import ClhTarget

    return ClhTarget(settings, context)


def _assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> BackendPlan:
    from vmdev.backends.clh_target import assemble

    return assemble(settings, target, devices)


BACKEND: Final = Backend(
    name=NAME,
    description="Cloud Hypervisor: VmConfig fragments and vm.add-* request bodies",
    kata_sections=("clh",),
    target=_target,
    assemble=_assemble,
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
