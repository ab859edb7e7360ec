"""The device families this backend renders, found lazily: none is a dependency.

Each family is named by its public model (``module:Class``). The model is imported only when a
device is rendered for StratoVirt, and a family that is not installed is simply skipped (it has no
devices to render). A device of a family that is not listed here, or whose family does not render
it for StratoVirt itself, is left to the core, which names the device and the backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

import attrs

from acme_vmdev_stratovirt import render_block, render_rng
from acme_vmdev_stratovirt.target import StratoVirtAttach, StratoVirtTarget

Render = Callable[[Any, StratoVirtTarget, bool], StratoVirtAttach]


@attrs.frozen
class Family:
    distribution: str
    model: str
    render: Render = attrs.field(eq=False)

    def model_class(self) -> type[Any] | None:
        """The family's model class, or None when the family is not installed."""
        module_name, _, name = self.model.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
        found = getattr(module, name, None)
        return found if isinstance(found, type) else None


FAMILIES: Final = (
    Family("vmdev-rng", "vmdev_rng:RNGDev", render_rng.render),
    Family("vmdev-block", "vmdev_block.device:BlockDevice", render_block.render),
)


def renderer_for(device: object) -> Render | None:
    """How this backend renders ``device``, if it belongs to a family it knows."""
    for family in FAMILIES:
        model = family.model_class()
        if model is not None and isinstance(device, model):
            return family.render
    return None
