"""The built-in device families this backend renders, each found only if it is installed.

A family's public model is imported from its own distribution when a device is first rendered
(``from vmdev_block import BlockDevice``, falling back to the family template's ``device``
module), never at import time: with the family not installed its entry is simply skipped, and a
device of it cannot exist anyway. A family plugin that renders itself for libvirt answers
``attach_options`` before this plugin does (this plugin's hook runs last).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any, Final

import attrs

from vmdev_libvirt import render_block, render_rng, render_vfio, render_vhostuser
from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget

Renderer = Callable[[Any, LibvirtTarget, bool], LibvirtAttach]


@attrs.frozen
class Family:
    """A device family: its distribution's package, its model's name, and the renderer."""

    name: str
    package: str
    model: str
    render: Renderer = attrs.field(eq=False)


FAMILIES: Final = (
    Family("block", "vmdev_block", "BlockDevice", render_block.render),
    Family("vhostuser", "vmdev_vhostuser", "VhostUserDeviceAttrs", render_vhostuser.render),
    Family("vfio", "vmdev_vfio", "VFIODevice", render_vfio.render),
    Family("rng", "vmdev_rng", "RNGDev", render_rng.render),
)


@cache
def model(package: str, name: str) -> type[Any] | None:
    """The class ``name`` of an installed family (the package, then its ``device`` module), or
    None when the family is not installed."""
    for module_name in (package, f"{package}.device"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, name, None)
        if isinstance(found, type):
            return found
    return None


def renderer(device: object) -> Renderer | None:
    """The renderer of ``device``'s family, if it is a built-in family's device."""
    for family in FAMILIES:
        cls = model(family.package, family.model)
        if cls is not None and isinstance(device, cls):
            return family.render
    return None
