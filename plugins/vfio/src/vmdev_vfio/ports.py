"""``pcie_root_port`` / ``pcie_switch_port``: ports kept ready for VFIO devices hot-plugged later.

Kata creates ``max(devices, pcie_root_port)`` root ports when VFIO uses root ports (and the
same for switch ports). vmdev renders it as a sandbox device that runs after every requested
device: it pads the topology to the configured count, reusing nothing the devices took, and
lists the ports no device uses (``spare``) so a runtime knows where later hot plugs can go.
"""

from __future__ import annotations

from typing import ClassVar, Final

import attrs

from vmdev.models import PCIePort
from vmdev.qemu import QemuAttach
from vmdev.settings import QEMU, SandboxSettings
from vmdev.targets import QemuTarget
from vmdev_vfio.config import ROOT_PORTS_KEY, SWITCH_PORTS_KEY, VfioConfig

PORTS_ID: Final = "vfio-ports"


@attrs.frozen(kw_only=True)
class PortReservation:
    """The sandbox's spare PCIe ports for VFIO (no host device behind it)."""

    kind: ClassVar[str] = "pcie-ports"
    id: str = PORTS_ID
    port: PCIePort
    count: int


def reservation(settings: SandboxSettings, config: VfioConfig) -> list[PortReservation]:
    port, count = config.reserved_ports
    if settings.hypervisor != QEMU or count == 0 or not settings.has_pcie_root:
        return []
    return [PortReservation(port=port, count=count)]


def render(device: PortReservation, target: QemuTarget) -> QemuAttach:
    topology = target.topology
    if device.port is PCIePort.ROOT_PORT:
        spare = topology.ensure_root_ports(device.count, device=device.id, field=ROOT_PORTS_KEY)
    else:
        spare = topology.ensure_switch_ports(device.count, device=device.id, field=SWITCH_PORTS_KEY)
    return QemuAttach(details={"spare": list(spare)})
