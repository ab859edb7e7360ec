"""What devices are rendered for on StratoVirt: the machine's transport, ``pcie.0`` slots, root ports.

StratoVirt's standard machines (``q35`` on x86_64, ``virt`` on aarch64) take virtio-pci devices on
the one root bus ``pcie.0`` and need every device's slot on the command line (``addr=0x3``); there
are no PCI bridges. Slot 0 holds the host bridge and, on q35, slot 0x1f the LPC bridge, so a plan
hands out slots 0x1 to 0x1e in plan order. A device hot-plugged into the running VM goes into a
``pcie-root-port`` configured at boot, at ``addr=0x0`` behind it (StratoVirt's only hot-plug
place on these machines). ``microvm`` takes virtio-mmio devices, which have no address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from acme_vmdev_stratovirt.cmdline import options, pci_addr
from acme_vmdev_stratovirt.constants import MACHINES as MACHINES
from acme_vmdev_stratovirt.constants import MEMORY_RANGE_MIB as MEMORY_RANGE_MIB
from acme_vmdev_stratovirt.constants import MICROVM as MICROVM
from acme_vmdev_stratovirt.constants import NAME as NAME
from vmdev.errors import ConfigError, UnsupportedError
from vmdev.qemu import QmpCommand
from vmdev.settings import SandboxSettings
from vmdev.targets import MMIO, PCI, RenderTarget

ROOT_BUS: Final = "pcie.0"
#: the ``pcie.0`` slots a plan may use (0: host bridge; 0x1f: q35's LPC bridge)
FREE_SLOTS: Final = tuple(range(0x1, 0x1F))
ROOT_PORT: Final = "root-port"


def check_settings(settings: SandboxSettings) -> None:
    """The machine type and memory size StratoVirt accepts; one-line ``ConfigError`` otherwise."""
    if settings.machine_type not in MACHINES:
        raise ConfigError(
            f"StratoVirt has no machine {settings.machine_type!r} (one of {', '.join(MACHINES)})",
            field="machine_type",
        )
    low, high = MEMORY_RANGE_MIB
    if not low <= settings.memory_mib <= high:
        raise ConfigError(
            f"StratoVirt takes {low} MiB to {high} MiB of guest memory, not {settings.memory_mib}",
            field="default_memory",
        )


def _commands(value: Any) -> tuple[QmpCommand, ...]:
    return tuple(value)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class StratoVirtAttach:
    """One device on StratoVirt: its boot options, or the QMP commands that hot-plug it."""

    args: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    hotplug: tuple[QmpCommand, ...] = attrs.field(default=(), converter=_commands)
    unplug: tuple[QmpCommand, ...] = attrs.field(default=(), converter=_commands)
    hotplugged: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)


@attrs.define
class RootPort:
    id: str
    port: int
    slot: int
    users: list[str] = attrs.Factory(list)


@attrs.define
class StratoVirtTarget(RenderTarget):
    """Rendering for StratoVirt; owns the plan's ``pcie.0`` slots and hot-plug root ports."""

    hypervisor: ClassVar[str] = NAME
    attach_type: ClassVar[type[Any]] = StratoVirtAttach
    _slots: dict[int, str] = attrs.field(init=False, factory=dict)
    _ports: list[RootPort] = attrs.field(init=False, factory=list)
    _taken: list[str] = attrs.field(init=False, factory=list)

    @property
    def transport(self) -> str:
        """``mmio`` on microvm, else ``pci``."""
        return MMIO if self.settings.machine_type == MICROVM else PCI

    def virtio_driver(self, base: str) -> str:
        """``virtio-rng`` -> ``virtio-rng-pci`` (``virtio-rng-device`` on microvm)."""
        return base + ("-device" if self.transport == MMIO else "-pci")

    def cold_place(self, device: str) -> dict[str, str]:
        """``bus``/``addr`` for a device on the command line: the next free ``pcie.0`` slot
        (nothing on microvm)."""
        if self.transport == MMIO:
            return {}
        return {"bus": ROOT_BUS, "addr": pci_addr(self._take_slot(device))}

    def hot_place(self, device: str) -> dict[str, str]:
        """``bus``/``addr`` for a device hot-plugged into the running VM: behind a root port, added
        to the boot plan (or, for a running VM, one of its free ones)."""
        if self.transport == MMIO:
            raise UnsupportedError(
                "this backend plans hot plug on StratoVirt's standard machines only (q35, virt); "
                "on microvm cold-plug the device (--coldplug)",
                device=device,
                field="hotplug",
            )
        if self.context.live_ports is not None:
            return {"bus": self._take_live_port(device), "addr": pci_addr(0)}
        number = len(self._ports) + 1
        port = RootPort(id=f"pcie.{number}", port=number, slot=self._take_slot(device), users=[device])
        self._ports.append(port)
        return {"bus": port.id, "addr": pci_addr(0)}

    def topology_args(self) -> list[str]:
        """The boot plan's ``-device pcie-root-port`` options."""
        args: list[str] = []
        for port in self._ports:
            values = {"id": port.id, "port": f"{port.port:#x}", "bus": ROOT_BUS, "addr": pci_addr(port.slot)}
            args += ["-device", options("pcie-root-port", values, device=port.id)]
        return args

    @property
    def ports_taken(self) -> tuple[str, ...]:
        return tuple(self._taken)

    def spare_ports(self, hot_devices: set[str]) -> list[tuple[str, str]]:
        return [(p.id, ROOT_PORT) for p in self._ports if all(user in hot_devices for user in p.users)]

    def _take_slot(self, device: str) -> int:
        for slot in FREE_SLOTS:
            if slot not in self._slots:
                self._slots[slot] = device
                return slot
        raise UnsupportedError(
            f"{ROOT_BUS} has no free slot left (StratoVirt has slots {FREE_SLOTS[0]:#x} to "
            f"{FREE_SLOTS[-1]:#x} for devices and hot-plug ports, and no PCI bridges)",
            device=device,
            field="addr",
        )

    def _take_live_port(self, device: str) -> str:
        assert self.context.live_ports is not None
        for port in self.context.live_ports():
            if port.kind == ROOT_PORT and port.id not in self._taken:
                self._taken.append(port.id)
                return str(port.id)
        raise UnsupportedError(
            "no free pcie-root-port left in the running VM; boot it with more devices planned for hot plug",
            device=device,
            field="hotplug",
        )
