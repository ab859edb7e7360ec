"""The vmdev-libvirt plugin: the ``libvirt`` backend (entry point ``libvirt``).

Hook implementations only:

* ``register_backends``: the backend (``vmdev plan --hypervisor libvirt``; live hot plug with
  ``vmdev attach/detach --hypervisor libvirt --domain NAME [--connect URI]``);
* ``register_settings``: the keys of :mod:`vmdev_libvirt.settings`;
* ``attach_options`` (run last, so that a family plugin rendering itself for libvirt wins):
  the built-in families' devices, each rendered by its ``render_<family>`` module when that
  family is installed (:mod:`vmdev_libvirt.families`). A device of any other family is declined,
  and the core names it and the backend.

Every ``vmdev plan`` imports this module, whatever the hypervisor, so it imports only the backend's
name and settings keys. The backend names its render target, domain assembly and live driver as
``"module:attribute"``, imported when the core calls them (only for a libvirt plan or
``vmdev attach --hypervisor libvirt``), and ``attach_options`` declines any other backend's target
by its name before importing the family renderers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from vmdev import hookimpl
from vmdev_libvirt.constants import NAME
from vmdev_libvirt.settings import SETTINGS

if TYPE_CHECKING:
    from vmdev.backend import Backend
    from vmdev.declared import Setting
    from vmdev.models import Device
    from vmdev.targets import AttachOptions, RenderTarget

DESCRIPTION: Final = "libvirt: <devices> XML, a minimal domain, and hot plug through libvirt"
#: ``vmdev attach/detach/status`` options of the live driver: (name, flag, metavar, required, help)
LIVE_OPTIONS: Final = (
    ("domain", "--domain", "NAME", True, "The running libvirt domain (name or UUID)."),
    ("connect", "--connect", "URI", False,
     "libvirt connection URI (default: the sandbox's libvirt_uri setting, else $LIBVIRT_DEFAULT_URI, "
     "else qemu:///system)."),
)


def backend() -> Backend:
    """The libvirt backend (its parts are imported when the core calls them)."""
    from vmdev.backend import Backend, LiveOption

    return Backend(
        name=NAME,
        description=DESCRIPTION,
        kata_sections=(NAME,),
        target="vmdev_libvirt.target:LibvirtTarget",
        assemble="vmdev_libvirt.domain:assemble",
        live="vmdev_libvirt.live:connect",
        live_options=tuple(LiveOption(name=name, flag=flag, metavar=metavar, required=required, help=text)
                           for name, flag, metavar, required, text in LIVE_OPTIONS),
    )


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(backend())


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


@hookimpl(trylast=True)
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if target.hypervisor != NAME:
        return None
    from vmdev_libvirt.families import renderer
    from vmdev_libvirt.target import LibvirtTarget

    if not isinstance(target, LibvirtTarget):
        return None
    render = renderer(device)
    return None if render is None else render(device, target, hotplug)
