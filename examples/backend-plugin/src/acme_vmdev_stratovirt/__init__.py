"""acme-vmdev-stratovirt: a vmdev backend for the StratoVirt hypervisor (entry point ``stratovirt``).

An example of a hypervisor added to vmdev by a separately installed distribution: see
``plugin.py`` (the hooks), ``constants.py`` (what they need up front), ``target.py`` (what devices
render for), ``plan.py`` (the plan's ``stratovirt`` part) and ``render_rng.py``/``render_block.py``
(the families it knows).

``vmdev plan`` imports this package with the entry module for every container, so the public
names are imported on first use (PEP 562): a QEMU plan creates none of the backend's classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acme_vmdev_stratovirt.constants import NAME
    from acme_vmdev_stratovirt.plan import StratoVirtPlan
    from acme_vmdev_stratovirt.target import StratoVirtAttach, StratoVirtTarget

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "NAME": "acme_vmdev_stratovirt.constants",
    "StratoVirtAttach": "acme_vmdev_stratovirt.target",
    "StratoVirtPlan": "acme_vmdev_stratovirt.plan",
    "StratoVirtTarget": "acme_vmdev_stratovirt.target",
}

__all__ = ["NAME", "StratoVirtAttach", "StratoVirtPlan", "StratoVirtTarget"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
