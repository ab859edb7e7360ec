"""The Firecracker backend (built in): the API requests that configure devices before boot.

Plugins return :class:`FirecrackerAttach`; :func:`assemble` lists the requests in plan order (hot
plug likewise, unplug in reverse). No live driver.

This module only registers the backend (it is imported on every ``vmdev plan``); the target, the
attach type and :func:`assemble` live in :mod:`vmdev.backends.firecracker_target`, imported when a
Firecracker plan is made (their names stay importable from here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from vmdev.backend import Backend, BackendPlan, RenderContext
from vmdev.hookspecs import hookimpl
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget

if TYPE_CHECKING:
    from vmdev.backends.firecracker_target import FirecrackerAttach as FirecrackerAttach
    from vmdev.backends.firecracker_target import FirecrackerTarget as FirecrackerTarget
    from vmdev.backends.firecracker_target import assemble as assemble

NAME: Final = "firecracker"
_LAZY: Final = frozenset({"FirecrackerAttach", "FirecrackerTarget", "assemble"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from vmdev.backends import firecracker_target

        return getattr(firecracker_target, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    from vmdev.backends.firecracker_target import FirecrackerTarget

    return FirecrackerTarget(settings, context)


def _assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> BackendPlan:
    from vmdev.backends.firecracker_target import assemble

    return assemble(settings, target, devices)


BACKEND: Final = Backend(
    name=NAME,
    description="Firecracker: API requests before boot",
    kata_sections=("firecracker",),
    target=_target,
    assemble=_assemble,
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)
