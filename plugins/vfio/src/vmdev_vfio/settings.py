"""The VFIO settings keys, declared once (Kata's names), and the rules across them.

The core parses every key below from these declarations before any hook runs (a wrong type or
value is a one-line ``ConfigError`` naming the key); this module only checks what no single key
can say (:mod:`vmdev_vfio.config` turns the typed values into a
``VfioConfig``). It defines no class: the plugin imports it on every run (issue 13, cold start).

``hot_plug_vfio`` / ``cold_plug_vfio``
    ``no-port`` (default; ``""`` means the same), ``root-port``, ``switch-port`` or
    ``bridge-port``: where VFIO functions go. At most one of the two may name a port.
    ``cold_plug_vfio`` makes every VFIO device cold-plugged (present at boot) on that kind of
    port; ``hot_plug_vfio`` places them on that kind of port and hot-plugs them when the plan
    is made for hot plug.
``pcie_root_port`` / ``pcie_switch_port``
    at least this many root ports (switch downstream ports) exist when the port kind in use is
    ``root-port`` (``switch-port``): spares for devices hot-plugged later. 0 to 16 (Kata caps
    larger values silently; vmdev refuses them).
``vfio_mode``
    ``guest-kernel`` (default: the guest's own drivers bind the devices) or ``vfio`` (the
    container drives the devices through VFIO inside the guest). Read from ``[runtime]``, as
    Kata does. vmdev used to read it from the hypervisor section or ``[vmdev]``; that spelling
    is refused with a message saying where the key goes (it would otherwise be ignored
    silently and change what the guest does with the devices).
``enable_iommu``, ``confidential_guest``
    Declared by the QEMU backend (Kata has them for every hypervisor) and read here with
    ``settings.value(key, False)``: ``enable_iommu`` puts Cloud Hypervisor's devices behind the
    guest's virtual IOMMU; a confidential QEMU guest takes IOMMUFD cdevs only, as in Kata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from vmdev.declared import INTEGER, RUNTIME, STRING, Setting
from vmdev.errors import ConfigError
from vmdev.models import MAX_PCIE_ROOT_PORT, MAX_PCIE_SWITCH_PORT, PCIePort
from vmdev.settings import CLOUD_HYPERVISOR, QEMU, SandboxSettings
from vmdev_vfio.kinds import MODE_GUEST_KERNEL, MODE_VFIO

HOT_PLUG_KEY: Final = "hot_plug_vfio"
COLD_PLUG_KEY: Final = "cold_plug_vfio"
ROOT_PORTS_KEY: Final = "pcie_root_port"
SWITCH_PORTS_KEY: Final = "pcie_switch_port"
MODE_KEY: Final = "vfio_mode"
#: the QEMU backend's keys this family reads (declared there)
IOMMU_KEY: Final = "enable_iommu"
CONFIDENTIAL_KEY: Final = "confidential_guest"
#: the port kinds in Kata's order of its error message
PORT_CHOICES: Final = tuple(p.value for p in (PCIePort.NO_PORT, PCIePort.BRIDGE_PORT, PCIePort.ROOT_PORT,
                                               PCIePort.SWITCH_PORT))
CLH_PORTS: Final = (PCIePort.NO_PORT.value, PCIePort.ROOT_PORT.value)

SETTINGS: Final = (
    Setting(
        name=HOT_PLUG_KEY, type=STRING, default=PCIePort.NO_PORT.value, kata_key=HOT_PLUG_KEY,
        choices=PORT_CHOICES, aliases={"": PCIePort.NO_PORT.value},
        description="the port kind VFIO devices go on (no-port: the root bus), hot-plugged when the plan "
        "is for hot plug",
    ),
    Setting(
        name=COLD_PLUG_KEY, type=STRING, default=PCIePort.NO_PORT.value, kata_key=COLD_PLUG_KEY,
        choices=PORT_CHOICES, aliases={"": PCIePort.NO_PORT.value},
        description=f"the port kind VFIO devices go on, always present at boot; at most one of "
        f"{HOT_PLUG_KEY} and {COLD_PLUG_KEY} names a port",
    ),
    Setting(
        name=ROOT_PORTS_KEY, type=INTEGER, default=0, kata_key=ROOT_PORTS_KEY, minimum=0,
        maximum=MAX_PCIE_ROOT_PORT,
        description="PCIe root ports kept ready (spares included) when VFIO devices go on root ports",
    ),
    Setting(
        name=SWITCH_PORTS_KEY, type=INTEGER, default=0, kata_key=SWITCH_PORTS_KEY, minimum=0,
        maximum=MAX_PCIE_SWITCH_PORT,
        description="PCIe switch downstream ports kept ready (spares included) when VFIO devices go on "
        "switch ports",
    ),
    Setting(
        name=MODE_KEY, type=STRING, default=MODE_GUEST_KERNEL, kata_key=MODE_KEY, section=RUNTIME,
        choices=(MODE_VFIO, MODE_GUEST_KERNEL),
        description="who drives VFIO devices in the guest: guest-kernel (its drivers) or vfio (the "
        "container, through VFIO)",
    ),
)


def register(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


def check_rules(settings: SandboxSettings) -> None:
    """The rules across keys, as Kata checks them (with its messages, minus its quirks: the
    values are named in the right order), and ``vfio_mode`` in the wrong table."""
    _check_mode_table(settings)
    if settings.hypervisor not in (QEMU, CLOUD_HYPERVISOR):
        return  # Kata checks the port keys for QEMU and Cloud Hypervisor only
    hot: str = settings.value(HOT_PLUG_KEY)
    cold: str = settings.value(COLD_PLUG_KEY)
    if hot != PCIePort.NO_PORT.value and cold != PCIePort.NO_PORT.value:
        raise ConfigError(
            f"invalid hot-plug={hot} and cold-plug={cold} settings, only one of them can be set",
            field=HOT_PLUG_KEY,
        )
    if settings.hypervisor == CLOUD_HYPERVISOR:
        for key, port, what in ((COLD_PLUG_KEY, cold, "cold-plug"), (HOT_PLUG_KEY, hot, "hot-plug")):
            if port not in CLH_PORTS:
                raise ConfigError(f"only {what}=no-port or root-port supported on CLH, got {port}", field=key)


def _check_mode_table(settings: SandboxSettings) -> None:
    """``vfio_mode`` given where vmdev used to read it (the hypervisor section or ``[vmdev]``)
    would be ignored: say where it goes instead of changing the guest's drivers silently."""
    if MODE_KEY in settings.options:
        raise ConfigError(
            f"is read from Kata's [runtime] table; move {MODE_KEY} = {settings.options[MODE_KEY]!r} there "
            "(the hypervisor section and [vmdev] no longer set it)",
            field=MODE_KEY,
        )
