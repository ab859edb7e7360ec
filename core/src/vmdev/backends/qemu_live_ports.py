"""A running VM's PCIe topology for the QEMU backend: its free hot-plug ports, handed out one device
per port, and nothing that could be added at boot only.

Only a hot plug renders against it (:func:`vmdev.backends.qemu_pcie.build_topology`), so a plan does
not create these classes (issue 13: each attrs class costs a command's start about 0.1 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from vmdev.backends.qemu import ROOT_PORT, SPARE_ROOT_PORTS_KEY, SWITCH_PORT
from vmdev.errors import UnsupportedError
from vmdev.pcie import BarSpace, PcieTopology


@attrs.define
class PortPool:
    """The free hot-plug ports of a running VM, handed out one device per port."""

    source: Callable[[], Sequence[Any]]
    taken: list[str] = attrs.Factory(list)
    _free: list[Any] | None = None

    def take(self, kind: str, device: str, field: str) -> str:
        if self._free is None:
            self._free = list(self.source())
        for port in self._free:
            if port.kind == kind and port.id not in self.taken:
                self.taken.append(port.id)
                return str(port.id)
        have = len([p for p in self._free if p.kind == kind])
        raise UnsupportedError(
            f"no free PCIe {kind} left in the running VM ({have} were free, all taken); boot the VM "
            f"with spare ports for hot plug ({SPARE_ROOT_PORTS_KEY} = N in the [vmdev] settings)",
            device=device,
            field=field,
        )


@attrs.define
class LiveTopology(PcieTopology):
    """A running VM's topology: places are its free ports; nothing can be added any more."""

    pool: PortPool = attrs.field(kw_only=True)

    def _fixed(self, device: str, field: str, what: str) -> UnsupportedError:
        return UnsupportedError(
            f"{what} cannot be added to a running VM: its PCI topology is fixed at boot",
            device=device,
            field=field,
        )

    def _check_pcie(self, device: str, field: str) -> None:
        if not self.pcie:
            raise UnsupportedError(
                f"machine {self.machine} has no PCIe root complex for hot-plug ports",
                device=device,
                field=field,
            )

    def root_port(
        self,
        device: str,
        *,
        field: str = "port",
        reserve: Mapping[str, int] | None = None,
        bars: BarSpace | None = None,
        hotplug: bool = False,
        numa_node: int = -1,
    ) -> str:
        # window reservations and NUMA placement are boot-time properties: a running VM's ports have
        # what they have
        self._check_pcie(device, field)
        return self.pool.take(ROOT_PORT, device, field)

    def switch_port(
        self, device: str, *, field: str = "port", bars: BarSpace | None = None, hotplug: bool = False
    ) -> str:
        self._check_pcie(device, field)
        return self.pool.take(SWITCH_PORT, device, field)

    def bridge_slots(
        self,
        device: str,
        count: int = 1,
        *,
        field: str = "port",
        reserve: Mapping[str, int] | None = None,
        bars: BarSpace | None = None,
        hotplug: bool = False,
    ) -> tuple[str, tuple[int, ...]]:
        raise self._fixed(device, field, "PCI bridge slots (not supported for hot plug yet)")

    def root_bus_slots(
        self, device: str, count: int = 1, *, field: str = "port", bars: BarSpace | None = None
    ) -> str:
        raise self._fixed(device, field, f"devices on {self.root_bus}")

    def ensure_root_ports(self, count: int, *, device: str, field: str) -> tuple[str, ...]:
        raise self._fixed(device, field, "root ports")

    def ensure_switch_ports(self, count: int, *, device: str, field: str) -> tuple[str, ...]:
        raise self._fixed(device, field, "switch ports")
