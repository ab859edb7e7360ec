"""The acme-vmdev-stratovirt plugin (entry point ``stratovirt``): a StratoVirt backend for vmdev.

Three hooks, no change to vmdev: ``register_backends`` adds the backend (``vmdev plan --hypervisor
stratovirt``, or a Kata configuration-stratovirt.toml with its ``[hypervisor.stratovirt]``),
``check_settings`` refuses machines and memory sizes StratoVirt has not, and ``attach_options``
renders the devices of the families this backend knows for its own target only (any other target
is declined, and so is a device of a family it does not know).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from acme_vmdev_stratovirt import target as stratovirt
from acme_vmdev_stratovirt.families import renderer_for
from acme_vmdev_stratovirt.plan import assemble
from vmdev import hookimpl
from vmdev.backend import Backend, RenderContext
from vmdev.models import Device
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return stratovirt.StratoVirtTarget(settings, context)


BACKEND: Final = Backend(
    name=stratovirt.NAME,
    description="StratoVirt: command-line options (q35, virt, microvm) and QMP hot plug of disks",
    kata_sections=("stratovirt",),
    target=_target,
    assemble=assemble,
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    if settings.hypervisor == stratovirt.NAME:
        stratovirt.check_settings(settings)


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(target, stratovirt.StratoVirtTarget):
        return None
    render = renderer_for(device)
    return None if render is None else render(device, target, hotplug)
