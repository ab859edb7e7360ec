"""The VFIO settings of one sandbox, typed: :class:`VfioConfig` (from the keys
:mod:`vmdev_vfio.settings` declares). Kept apart from the declarations so that loading the plugin
creates no class (issue 13, cold start).
"""

from __future__ import annotations

import weakref

import attrs

from vmdev.models import PCIePort
from vmdev.settings import QEMU, SandboxSettings
from vmdev_vfio.device import VFIOMode
from vmdev_vfio.settings import (
    COLD_PLUG_KEY,
    CONFIDENTIAL_KEY,
    HOT_PLUG_KEY,
    IOMMU_KEY,
    MODE_KEY,
    ROOT_PORTS_KEY,
    SWITCH_PORTS_KEY,
)


@attrs.frozen(kw_only=True)
class VfioConfig:
    """The VFIO settings of one sandbox, typed."""

    hot_plug: PCIePort = PCIePort.NO_PORT
    cold_plug: PCIePort = PCIePort.NO_PORT
    root_ports: int = 0
    switch_ports: int = 0
    mode: VFIOMode = VFIOMode.GUEST_KERNEL
    iommu: bool = False
    #: a confidential QEMU guest: only IOMMUFD cdevs (Kata: "ConfidentialGuest needs IOMMUFD")
    confidential: bool = False

    @property
    def coldplug_all(self) -> bool:
        """``cold_plug_vfio`` names a port: every VFIO device is present at boot."""
        return self.cold_plug is not PCIePort.NO_PORT

    @property
    def port(self) -> PCIePort:
        """The port kind VFIO devices go to."""
        return self.cold_plug if self.coldplug_all else self.hot_plug

    @property
    def reserved_ports(self) -> tuple[PCIePort, int]:
        """The ports to keep ready whatever the devices (``pcie_root_port``/``pcie_switch_port``)."""
        if self.port is PCIePort.ROOT_PORT:
            return PCIePort.ROOT_PORT, self.root_ports
        if self.port is PCIePort.SWITCH_PORT:
            return PCIePort.SWITCH_PORT, self.switch_ports
        return self.port, 0


def read_config(settings: SandboxSettings) -> VfioConfig:
    """The VFIO settings from the core's typed values (``settings`` must be prepared).

    A plan asks for every VFIO device, with the one settings object of the sandbox, once to build
    it and again to render it: the config of the settings asked for last is kept and given again
    for the same (immutable) object, so a plan reads the settings once, not twice per device
    (issue 13)."""
    last = _last[0] if _last else None  # one read: another thread may replace it meanwhile
    if last is not None and last[0]() is settings:
        return last[1]
    config = _read(settings)
    _last[:] = [(weakref.ref(settings), config)]
    return config


#: the settings :func:`read_config` read last (held weakly: a plan's settings die with the plan), and
#: their config
_last: list[tuple[weakref.ref[SandboxSettings], VfioConfig]] = []


def _read(settings: SandboxSettings) -> VfioConfig:
    return VfioConfig(
        hot_plug=PCIePort(settings.value(HOT_PLUG_KEY)),
        cold_plug=PCIePort(settings.value(COLD_PLUG_KEY)),
        root_ports=settings.value(ROOT_PORTS_KEY),
        switch_ports=settings.value(SWITCH_PORTS_KEY),
        mode=VFIOMode(settings.value(MODE_KEY)),
        iommu=bool(settings.value(IOMMU_KEY, False)),
        confidential=settings.hypervisor == QEMU and bool(settings.value(CONFIDENTIAL_KEY, False)),
    )
