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

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from vmdev.backend import Backend
from vmdev.declared import INTEGER, Setting
from vmdev.hookspecs import hookimpl
from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev.backends.clh_target import ClhAttach as ClhAttach
    from vmdev.backends.clh_target import ClhTarget as ClhTarget
    from vmdev.backends.clh_target import assemble as assemble

NAME: Final = "cloud-hypervisor"
VCPUS_KEY: Final = "default_vcpus"
#: Cloud Hypervisor's limit of boot vCPUs (its API's cpus.boot_vcpus is a u8)
MAX_VCPUS: Final = 254
#: the target, attach type and assembly live in :mod:`vmdev.backends.clh_target`
_IMPL: Final = "vmdev.backends.clh_target"
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(("ClhAttach", "ClhTarget", "assemble"), _IMPL))


BACKEND: Final = Backend(
    name=NAME,
    description="Cloud Hypervisor: VmConfig fragments and vm.add-* request bodies",
    kata_sections=("clh",),
    target=f"{_IMPL}:ClhTarget",
    assemble=f"{_IMPL}:assemble",
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
