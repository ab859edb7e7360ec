"""acme-vmdev-stratovirt: a vmdev backend for the StratoVirt hypervisor (entry point ``stratovirt``).

An example of a hypervisor added to vmdev by a separately installed distribution: see
``plugin.py`` (the hooks), ``constants.py`` (what they need up front), ``target.py`` (what devices
render for), ``plan.py`` (the plan's ``stratovirt`` part) and ``render_rng.py``/``render_block.py``
(the families it knows).

``vmdev plan`` imports this package with the entry module for every container, so the public
names are imported on first use (:func:`vmdev.lazy.lazy_exports`): a QEMU plan creates none
of the backend's classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
