"""The VFIO settings (Kata's keys) and their validation.

Keys, read from the hypervisor section of a Kata ``configuration.toml`` or from ``[vmdev]``:

``hot_plug_vfio`` / ``cold_plug_vfio``
    ``no-port`` (default), ``root-port``, ``switch-port`` or ``bridge-port``: where VFIO
    functions go. At most one of the two may name a port. ``cold_plug_vfio`` makes every VFIO
    device cold-plugged (present at boot) on that kind of port; ``hot_plug_vfio`` places them
    on that kind of port and hot-plugs them when the plan is made for hot plug.
``pcie_root_port`` / ``pcie_switch_port``
    at least this many root ports (switch downstream ports) exist when the port kind in use is
    ``root-port`` (``switch-port``): spares for devices hot-plugged later. 0 to 16.
``vfio_mode``
    ``guest-kernel`` (default: the guest's own drivers bind the devices) or ``vfio`` (the
    container drives the devices through VFIO inside the guest). Kata keeps it in
    ``[runtime]``; vmdev reads it from the hypervisor section or ``[vmdev]``.
``enable_iommu``
    Cloud Hypervisor only: put the devices behind the guest's virtual IOMMU.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from vmdev.errors import ConfigError
from vmdev.models import MAX_PCIE_ROOT_PORT, MAX_PCIE_SWITCH_PORT, PCIePort, VFIOMode
from vmdev.settings import CLOUD_HYPERVISOR, QEMU, SandboxSettings

HOT_PLUG_KEY: Final = "hot_plug_vfio"
COLD_PLUG_KEY: Final = "cold_plug_vfio"
ROOT_PORTS_KEY: Final = "pcie_root_port"
SWITCH_PORTS_KEY: Final = "pcie_switch_port"
MODE_KEY: Final = "vfio_mode"
IOMMU_KEY: Final = "enable_iommu"
PORT_CHOICES: Final = "no-port, bridge-port, root-port, switch-port"
CLH_PORTS: Final = (PCIePort.NO_PORT, PCIePort.ROOT_PORT)


@attrs.frozen(kw_only=True)
class VfioConfig:
    hot_plug: PCIePort = PCIePort.NO_PORT
    cold_plug: PCIePort = PCIePort.NO_PORT
    root_ports: int = 0
    switch_ports: int = 0
    mode: VFIOMode = VFIOMode.GUEST_KERNEL
    iommu: bool = False

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
    """The VFIO settings, type-checked and validated as Kata validates them (with its
    messages, minus its quirks: the values are named in the right order)."""
    config = VfioConfig(
        hot_plug=_port(settings, HOT_PLUG_KEY),
        cold_plug=_port(settings, COLD_PLUG_KEY),
        root_ports=_count(settings, ROOT_PORTS_KEY, MAX_PCIE_ROOT_PORT),
        switch_ports=_count(settings, SWITCH_PORTS_KEY, MAX_PCIE_SWITCH_PORT),
        mode=_mode(settings),
        iommu=_bool(settings, IOMMU_KEY),
    )
    if settings.hypervisor in (QEMU, CLOUD_HYPERVISOR):
        _check_ports(config, settings)
    return config


def _port(settings: SandboxSettings, key: str) -> PCIePort:
    value: Any = settings.option(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, got {value!r}", field=key)
    if value == "":
        return PCIePort.NO_PORT
    try:
        return PCIePort(value)
    except ValueError:
        raise ConfigError(
            f"invalid {key}={value} setting, allowed values {PORT_CHOICES}", field=key
        ) from None


def _count(settings: SandboxSettings, key: str, maximum: int) -> int:
    value: Any = settings.option(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ConfigError(
            f"must be a number of ports from 0 to {maximum} (QEMU's I/O space fits {maximum}), "
            f"got {value!r}",
            field=key,
        )
    return value


def _mode(settings: SandboxSettings) -> VFIOMode:
    value: Any = settings.option(MODE_KEY, VFIOMode.GUEST_KERNEL.value)
    try:
        return VFIOMode(value)
    except ValueError:
        raise ConfigError(
            f"Unknown VFIO mode {value} (known: vfio, guest-kernel)", field=MODE_KEY
        ) from None


def _bool(settings: SandboxSettings, key: str) -> bool:
    value: Any = settings.option(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", field=key)
    return value


def _check_ports(config: VfioConfig, settings: SandboxSettings) -> None:
    hot, cold = config.hot_plug, config.cold_plug
    if hot is not PCIePort.NO_PORT and cold is not PCIePort.NO_PORT:
        raise ConfigError(
            f"invalid hot-plug={hot.value} and cold-plug={cold.value} settings, only one of them can be set",
            field=HOT_PLUG_KEY,
        )
    if settings.hypervisor == CLOUD_HYPERVISOR:
        for key, port, what in ((COLD_PLUG_KEY, cold, "cold-plug"), (HOT_PLUG_KEY, hot, "hot-plug")):
            if port not in CLH_PORTS:
                raise ConfigError(
                    f"only {what}=no-port or root-port supported on CLH, got {port.value}", field=key
                )
