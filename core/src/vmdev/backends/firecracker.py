"""The Firecracker backend (built in): the API requests that configure devices before boot.

Plugins return :class:`FirecrackerAttach`; :func:`assemble` lists the requests in plan order (hot
plug likewise, unplug in reverse). No live driver.

This module only registers the backend (it is imported on every ``vmdev plan``); the target, the
attach type and :func:`assemble` live in :mod:`vmdev.backends.firecracker_target`, imported when a
Firecracker plan is made (their names stay importable from here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from vmdev.backend import Backend
from vmdev.hookspecs import hookimpl
from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev.backends.firecracker_target import FirecrackerAttach as FirecrackerAttach
    from vmdev.backends.firecracker_target import FirecrackerTarget as FirecrackerTarget
    from vmdev.backends.firecracker_target import assemble as assemble

NAME: Final = "firecracker"
#: the target, attach type and assembly live in :mod:`vmdev.backends.firecracker_target`
_IMPL: Final = "vmdev.backends.firecracker_target"
_NAMES: Final = ("FirecrackerAttach", "FirecrackerTarget", "assemble")
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(_NAMES, _IMPL))


BACKEND: Final = Backend(
    name=NAME,
    description="Firecracker: API requests before boot",
    kata_sections=("firecracker",),
    target=f"{_IMPL}:FirecrackerTarget",
    assemble=f"{_IMPL}:assemble",
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)
