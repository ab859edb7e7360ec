"""The acme-vmdev-stratovirt plugin (entry point ``stratovirt``): a StratoVirt backend for vmdev.

Three hooks, no change to vmdev: ``register_backends`` adds the backend (``vmdev plan --hypervisor
stratovirt``, or a Kata configuration-stratovirt.toml with its ``[hypervisor.stratovirt]``),
``check_settings`` refuses machines and memory sizes StratoVirt has not, and ``attach_options``
renders the devices of the families this backend knows for its own target only (any other target
is declined, and so is a device of a family it does not know).

``vmdev plan`` imports every installed plugin's entry module for every container, whatever the
hypervisor. So this module imports only ``hookimpl`` and :mod:`~acme_vmdev_stratovirt.constants`:
the backend names its target (:mod:`.target`) and plan (:mod:`.plan`) as ``"module:attribute"``,
which the core imports when it calls them, which it does only for a StratoVirt plan, and the
other two hooks compare the backend's name (``settings.hypervisor``, ``target.hypervisor``) before
importing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from acme_vmdev_stratovirt.constants import DESCRIPTION, KATA_SECTION, NAME
from vmdev import hookimpl

if TYPE_CHECKING:
    from vmdev.backend import Backend
    from vmdev.models import Device
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget


def backend() -> Backend:
    """The StratoVirt backend (its target and plan are imported when the core calls them)."""
    from vmdev.backend import Backend

    return Backend(name=NAME, description=DESCRIPTION, kata_sections=(KATA_SECTION,),
                   target="acme_vmdev_stratovirt.target:StratoVirtTarget",
                   assemble="acme_vmdev_stratovirt.plan:assemble")


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(backend())


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    if settings.hypervisor == NAME:
        from acme_vmdev_stratovirt.target import check_settings

        check_settings(settings)


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if target.hypervisor != NAME:
        return None
    from acme_vmdev_stratovirt.families import renderer_for
    from acme_vmdev_stratovirt.target import StratoVirtTarget

    if not isinstance(target, StratoVirtTarget):
        return None
    render = renderer_for(device)
    return None if render is None else render(device, target, hotplug)
