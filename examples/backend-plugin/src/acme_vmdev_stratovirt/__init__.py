"""acme-vmdev-stratovirt: a vmdev backend for the StratoVirt hypervisor (entry point ``stratovirt``).

An example of a hypervisor added to vmdev by a separately installed distribution: see
``plugin.py`` (the hooks), ``target.py`` (what devices render for), ``plan.py`` (the plan's
``stratovirt`` part) and ``render_rng.py``/``render_block.py`` (the families it knows).
"""

from acme_vmdev_stratovirt.plan import StratoVirtPlan
from acme_vmdev_stratovirt.target import NAME, StratoVirtAttach, StratoVirtTarget

__all__ = ["NAME", "StratoVirtAttach", "StratoVirtPlan", "StratoVirtTarget"]
