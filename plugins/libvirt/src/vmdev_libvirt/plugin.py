"""The vmdev-libvirt plugin: the ``libvirt`` backend (entry point ``libvirt``).

Hook implementations only:

* ``register_backends``: the backend (``vmdev plan --hypervisor libvirt``; live hot plug with
  ``vmdev attach/detach --hypervisor libvirt --domain NAME [--connect URI]``);
* ``register_settings``: the keys of :mod:`vmdev_libvirt.settings`;
* ``attach_options`` (run last, so that a family plugin rendering itself for libvirt wins):
  the built-in families' devices, each rendered by its ``render_<family>`` module when that
  family is installed (:mod:`vmdev_libvirt.families`). A device of any other family is declined,
  and the core names it and the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from vmdev import hookimpl
from vmdev.backend import Backend, LiveConnection, LiveOption, RenderContext
from vmdev.declared import Setting
from vmdev.models import Device
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget
from vmdev_libvirt.domain import assemble
from vmdev_libvirt.families import renderer
from vmdev_libvirt.settings import SETTINGS
from vmdev_libvirt.target import NAME, LibvirtTarget

if TYPE_CHECKING:
    from vmdev.live import HotPlugger


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return LibvirtTarget(settings, context)


def _live(connection: LiveConnection) -> HotPlugger:
    from vmdev_libvirt.live import connect

    return connect(connection)


BACKEND = Backend(
    name=NAME,
    description="libvirt: <devices> XML, a minimal domain, and hot plug through libvirt",
    kata_sections=(NAME,),
    target=_target,
    assemble=assemble,
    live=_live,
    live_options=(
        LiveOption(name="domain", flag="--domain", metavar="NAME",
                   help="The running libvirt domain (name or UUID)."),
        LiveOption(name="connect", flag="--connect", metavar="URI", required=False,
                   help="libvirt connection URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)."),
    ),
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        # Kata's keys here are the libvirt backend's: QEMU's backend may declare the same names
        register(attrs.evolve(setting, backends=(BACKEND.name,)))


@hookimpl(trylast=True)
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(target, LibvirtTarget):
        return None
    render = renderer(device)
    return None if render is None else render(device, target, hotplug)
