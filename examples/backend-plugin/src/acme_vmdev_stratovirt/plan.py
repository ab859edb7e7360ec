"""StratoVirt's part of a plan: one command line and the QMP commands of hot-plugged devices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from acme_vmdev_stratovirt.target import StratoVirtAttach, StratoVirtTarget
from vmdev.qemu import QmpCommand
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget


@attrs.frozen(kw_only=True)
class StratoVirtPlan:
    """Printed under the plan's ``stratovirt`` key: ``argv``, ``hotplug``, ``unplug``."""

    argv: tuple[str, ...]
    hotplug: tuple[QmpCommand, ...]
    unplug: tuple[QmpCommand, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "hotplug": [c.to_json() for c in self.hotplug],
            "unplug": [c.to_json() for c in self.unplug],
        }


def assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> StratoVirtPlan:
    """``-machine`` and ``-m``, the root ports, then each device's options in plan order; hot-plug
    commands in plan order, unplug in reverse."""
    assert isinstance(target, StratoVirtTarget)
    attaches: list[StratoVirtAttach] = [d.attach for d in devices]
    argv = ["-machine", settings.machine_type, "-m", f"{settings.memory_mib}M", *target.topology_args()]
    for attach in attaches:
        argv += attach.args
    hotplug = [c for a in attaches for c in a.hotplug]
    unplug = [c for a in reversed(attaches) for c in a.unplug]
    return StratoVirtPlan(argv=tuple(argv), hotplug=tuple(hotplug), unplug=tuple(unplug))
