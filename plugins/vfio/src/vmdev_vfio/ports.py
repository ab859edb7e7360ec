"""``pcie_root_port`` / ``pcie_switch_port``: ports kept ready for VFIO devices hot-plugged later.

Kata creates ``max(devices, pcie_root_port)`` root ports when VFIO uses root ports (and the
same for switch ports). vmdev adds it as a sandbox device that runs after every requested
device: it pads the topology to the configured count, reusing nothing the devices took, and
lists the ports no device uses (``spare``) so a runtime knows where later hot plugs can go
(rendered by :func:`vmdev_vfio.render_qemu.render_ports`; QEMU only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from vmdev.models import PCIePort
from vmdev.serialize import from_json
from vmdev.settings import QEMU, SandboxSettings
from vmdev_vfio.config import VfioConfig
from vmdev_vfio.kinds import PORTS_ID, PORTS_KIND

__all__ = ["PORTS_ID", "PORTS_KIND", "PortReservation", "from_state", "reservation"]


@attrs.frozen(kw_only=True)
class PortReservation:
    """The sandbox's spare PCIe ports for VFIO (no host device behind it)."""

    kind: ClassVar[str] = PORTS_KIND
    id: str = PORTS_ID
    port: PCIePort
    count: int


def reservation(settings: SandboxSettings, config: VfioConfig) -> list[PortReservation]:
    port, count = config.reserved_ports
    if settings.hypervisor != QEMU or count == 0 or not settings.has_pcie_root:
        return []
    return [PortReservation(port=port, count=count)]


def from_state(data: Mapping[str, Any]) -> PortReservation:
    """A saved reservation rebuilt as it was."""
    return from_json(PortReservation, data)
