"""A generic PCI(e) topology for QEMU machines: root ports, switch ports and PCI bridges.

Plugins ask the render target (:attr:`vmdev.targets.QemuTarget.topology`) for a place
for a device; the topology creates the ports and bridges those places need and renders
them once, ahead of the devices (:meth:`PcieTopology.args`). Every kind of port shares
one chassis numbering, so a plan never reuses a chassis/slot pair (QEMU: ``Can't add
chassis slot, error -16``).

Names follow Kata Containers: root ports ``rp<N>`` (hot-plug and cold-plug ports share
the numbering), a switch made of its root port ``swrp<N>``, upstream port ``swup<N>``
and downstream ports ``swdp<N>``, and PCI bridges ``bp<N>``.

Kata's own hot-plug bridges (``default_bridges``) are made by :meth:`PcieTopology.add_kata_bridges`
before anything else, in Kata's form: ``pci-bridge-<i>`` at slot ``2+i`` of the root bus with
Kata's window hints, or, on q35 with a UEFI firmware, a ``pcie-pci-bridge`` behind its own root
port ``rp-pci-bridge-<i>`` (OVMF reserves hot-plug windows only on PCIe ports). Their slots are
handed out by :meth:`PcieTopology.bridge_slots` before a ``bp<N>`` bridge is added. They have
fixed addresses, so the backend emits them ahead of every other device
(:meth:`PcieTopology.args` with ``fixed=True``).

QEMU's limits are enforced when a place is asked for, with an error naming the device,
instead of a QEMU or guest failure later:

* a bus has 32 slots. On the root bus slot 0 holds the host bridge and slot 31 the
  chipset (ICH9 on q35), so 30 are left for ports, bridges and integrated devices;
* each port and bridge on the root bus reserves a 4 KiB window of the 64 KiB I/O space:
  at most 16 of them, and at most 16 switch downstream ports (Kata's limits);
* a root port or downstream port takes exactly one device (slot 0, up to 8 functions):
  Linux scans only device 0 behind a PCIe port, and QEMU 7.2 accepts a second one silently;
* a PCI bridge offers slots 1 to 30 (Kata's ``PCIBridgeMaxCapacity``);
* ``pcie.0`` cannot take hot-plugged devices (QEMU: ``Bus 'pcie.0' does not support
  hotplugging``): see :meth:`PcieTopology.check_hotplug_bus`.

The topology knows nothing about device families; it only hands out places.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

import attrs

from vmdev.errors import UnsupportedError
from vmdev.qemu import OptValue, opts
from vmdev.settings import SandboxSettings

#: ports and bridges on the root bus (each reserves an I/O window)
MAX_ROOT_PORTS: Final = 16
#: switch downstream ports (Kata's maxPCIeSwitchPort)
MAX_SWITCH_PORTS: Final = 16
#: slots of one PCI bus
BUS_SLOTS: Final = 32
#: root-bus slots left for ports, bridges and integrated devices (0: host bridge, 31: chipset)
ROOT_BUS_FREE_SLOTS: Final = 30
#: slots of a PCI bridge that devices may use (Kata: 1..30)
BRIDGE_SLOTS: Final = tuple(range(1, 31))
#: functions of one slot
SLOT_FUNCTIONS: Final = 8
#: window reservations a pcie-root-port or pci-bridge accepts (QEMU's resource reserve capability)
RESERVE_KEYS: Final = ("bus-reserve", "io-reserve", "mem-reserve", "pref32-reserve", "pref64-reserve")
#: Kata's hot-plug bridges: at most 5 (katautils' maxPCIBridges)
MAX_KATA_BRIDGES: Final = 5
#: the root-bus slot of Kata's first bridge (bridgePCIStartAddr); bridge i sits at 2+i
KATA_BRIDGE_FIRST_SLOT: Final = 2
#: the chassis of the root port carrying Kata's nested bridge 0 (nestedRootPortChassisBase)
KATA_NESTED_CHASSIS_BASE: Final = 16
#: the window hints of Kata's bridges, in bytes (Kata writes 4k, 1m, 1m; the nested ones' root
#: ports also reserve one bus number)
KATA_BRIDGE_RESERVE: Final = {"io-reserve": 4 << 10, "mem-reserve": 1 << 20, "pref64-reserve": 1 << 20}
KATA_NESTED_PORT_RESERVE: Final = {"bus-reserve": 1, **KATA_BRIDGE_RESERVE}
#: the order Kata writes the reservations of a bridge and of a root port in
_KATA_BRIDGE_ORDER: Final = ("io-reserve", "mem-reserve", "pref64-reserve", "pref32-reserve", "bus-reserve")
_KATA_PORT_ORDER: Final = ("bus-reserve", "pref64-reserve", "pref32-reserve", "mem-reserve", "io-reserve")


class NodeKind(str, enum.Enum):
    """What a topology node is (its QEMU driver and its id prefix)."""

    ROOT_PORT = "root-port"
    SWITCH_ROOT_PORT = "switch-root-port"
    SWITCH_UPSTREAM = "switch-upstream-port"
    SWITCH_DOWNSTREAM = "switch-downstream-port"
    BRIDGE = "pci-bridge"
    #: the root port that carries one of Kata's nested bridges (never handed out to a device)
    BRIDGE_PORT = "bridge-root-port"

    @property
    def prefix(self) -> str:
        return _PREFIX[self]

    @property
    def driver(self) -> str:
        return _DRIVER[self]


_PREFIX: Final = {
    NodeKind.ROOT_PORT: "rp",
    NodeKind.SWITCH_ROOT_PORT: "swrp",
    NodeKind.SWITCH_UPSTREAM: "swup",
    NodeKind.SWITCH_DOWNSTREAM: "swdp",
    NodeKind.BRIDGE: "bp",
    NodeKind.BRIDGE_PORT: "rp-",
}
_DRIVER: Final = {
    NodeKind.ROOT_PORT: "pcie-root-port",
    NodeKind.SWITCH_ROOT_PORT: "pcie-root-port",
    NodeKind.SWITCH_UPSTREAM: "x3130-upstream",
    NodeKind.SWITCH_DOWNSTREAM: "xio3130-downstream",
    NodeKind.BRIDGE: "pci-bridge",
    NodeKind.BRIDGE_PORT: "pcie-root-port",
}


class Form(str, enum.Enum):
    """How a node is written: vmdev's form, or one of Kata's bridge forms."""

    VMDEV = ""
    #: Kata's conventional bridge on the root bus (SeaBIOS and every machine but q35 with UEFI)
    KATA_BRIDGE = "kata-bridge"
    #: the root port of a nested bridge, and the ``pcie-pci-bridge`` on it (q35 with UEFI)
    KATA_NESTED_PORT = "kata-nested-port"
    KATA_NESTED_BRIDGE = "kata-nested-bridge"


def _size(value: int) -> str:
    """A size as Kata writes it (``4k``, ``1m``); plain bytes when it is no whole KiB."""
    for shift, suffix in ((30, "g"), (20, "m"), (10, "k")):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{suffix}"
    return str(value)


@attrs.define
class _Node:
    kind: NodeKind
    id: str
    bus: str
    chassis: int | None
    reserve: dict[str, int] = attrs.field(factory=dict)
    #: devices placed here (a bridge may hold several)
    users: list[str] = attrs.field(factory=list)
    #: bridge slots in use
    slots: set[int] = attrs.field(factory=set)
    form: Form = Form.VMDEV
    #: the slot on the parent bus, for nodes with a fixed address (Kata's bridges)
    addr: int | None = None
    #: where this node's window reservations go (a nested bridge's go to its root port)
    parent: _Node | None = attrs.field(default=None, repr=False)

    @property
    def fixed(self) -> bool:
        return self.form is not Form.VMDEV

    def add_reserve(self, reserve: Mapping[str, int]) -> None:
        """Add the windows another device placed here needs (one prefetchable window: a
        32-bit and a 64-bit need merge into the 64-bit one)."""
        for key, size in reserve.items():
            self.reserve[key] = self.reserve.get(key, 0) + size
        if "pref32-reserve" in self.reserve and "pref64-reserve" in self.reserve:
            self.reserve["pref64-reserve"] += self.reserve.pop("pref32-reserve")

    def render(self) -> list[str]:
        if self.fixed:
            return self._render_kata()
        props: dict[str, OptValue | None] = {"id": self.id, "bus": self.bus}
        if self.kind is NodeKind.BRIDGE:
            props.update({"chassis_nr": self.chassis, "shpc": False})
        elif self.chassis is not None:
            props.update({"chassis": self.chassis, "slot": self.chassis})
        props.update(self.reserve)
        return ["-device", opts(self.kind.driver, props)]

    def _render_kata(self) -> list[str]:
        """Kata's spelling, property for property (``genericAppendBridges``)."""
        props: dict[str, OptValue | None]
        if self.form is Form.KATA_NESTED_BRIDGE:
            return ["-device", opts("pcie-pci-bridge", {"bus": self.bus, "id": self.id})]
        if self.form is Form.KATA_NESTED_PORT:
            props = {"id": self.id, "bus": self.bus, "chassis": self.chassis, "slot": 0, "addr": self.addr,
                     "multifunction": False}
            order = _KATA_PORT_ORDER
        else:
            props = {"bus": self.bus, "id": self.id, "chassis_nr": self.chassis, "shpc": False,
                     "addr": f"{self.addr:x}"}
            order = _KATA_BRIDGE_ORDER
        for key in order:
            if key in self.reserve:
                value = self.reserve[key]
                props[key] = f"{value:#x}" if key == "bus-reserve" else _size(value)
        return ["-device", opts(self.kind.driver, props)]


@attrs.frozen
class PortInfo:
    """One port or bridge of the topology, for plans and tools."""

    id: str
    kind: NodeKind
    bus: str
    users: tuple[str, ...]


def _check_reserve(reserve: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(reserve or {})
    unknown = sorted(set(out) - set(RESERVE_KEYS))
    if unknown:
        raise ValueError(f"unknown window reservation {', '.join(unknown)}; known: {', '.join(RESERVE_KEYS)}")
    if "pref32-reserve" in out and "pref64-reserve" in out:
        raise ValueError("pref32-reserve and pref64-reserve cannot both be set")
    return out


@attrs.define
class PcieTopology:
    """The ports and bridges of one plan's QEMU machine. Owned by one render target."""

    machine: str
    #: the machine has a PCIe root complex (q35, virt): root ports and switches are possible
    pcie: bool
    #: the machine has a PCI bus at all (not microvm, not s390-ccw)
    pci: bool
    _nodes: list[_Node] = attrs.field(factory=list)
    _chassis: int = 0
    _root_bus_devices: list[str] = attrs.field(factory=list)

    @classmethod
    def for_settings(cls, settings: SandboxSettings) -> PcieTopology:
        pci = not (settings.is_microvm or settings.is_ccw)
        return cls(machine=settings.machine_type, pcie=pci and settings.has_pcie_root, pci=pci)

    @property
    def root_bus(self) -> str:
        """``pcie.0`` on PCIe machines, ``pci.0`` on the others (``pc``)."""
        return "pcie.0" if self.pcie else "pci.0"

    # --- places ------------------------------------------------------------------------------
    def root_port(
        self, device: str, *, field: str = "port", reserve: Mapping[str, int] | None = None
    ) -> str:
        """A ``pcie-root-port`` of its own for ``device``: its id (``rp<N>``).

        A spare port made by :meth:`ensure_root_ports` is used first. ``reserve`` adds
        window reservations in bytes (``mem-reserve``, ``pref64-reserve``...; ``bus-reserve``
        in bus numbers) that the firmware honours for a device hot-plugged later; the needs of
        several devices on one bridge add up.
        """
        self._need_pcie(device, field, "a PCIe root port")
        reserved = _check_reserve(reserve)
        node = self._spare(NodeKind.ROOT_PORT) or self._add_on_root_bus(NodeKind.ROOT_PORT, device, field)
        node.add_reserve(reserved)
        node.users.append(device)
        return node.id

    def switch_port(self, device: str, *, field: str = "port") -> str:
        """A switch downstream port of its own for ``device``: its id (``swdp<N>``).

        The first call creates the switch: root port ``swrp0`` and upstream port ``swup0``.
        """
        self._need_pcie(device, field, "a PCIe switch port")
        node = self._spare(NodeKind.SWITCH_DOWNSTREAM) or self._add_downstream(device, field)
        node.users.append(device)
        return node.id

    def bridge_slots(
        self,
        device: str,
        count: int = 1,
        *,
        field: str = "port",
        reserve: Mapping[str, int] | None = None,
    ) -> tuple[str, tuple[int, ...]]:
        """``count`` free slots on one PCI bridge (``bp<N>``), lowest first, for ``device``.

        All slots come from the same bridge; a new bridge is added when no bridge has
        ``count`` free slots left.
        """
        self._need_pci(device, field)
        if not 1 <= count <= len(BRIDGE_SLOTS):
            raise UnsupportedError(
                f"needs {count} slots on one PCI bridge, which has {len(BRIDGE_SLOTS)} "
                f"(slots {BRIDGE_SLOTS[0]} to {BRIDGE_SLOTS[-1]})",
                device=device,
                field=field,
            )
        reserved = _check_reserve(reserve)
        for node in self._of_kind(NodeKind.BRIDGE):
            free = [slot for slot in BRIDGE_SLOTS if slot not in node.slots]
            if len(free) >= count:
                return self._take_slots(node, free[:count], device, reserved)
        node = self._add_on_root_bus(NodeKind.BRIDGE, device, field)
        return self._take_slots(node, list(BRIDGE_SLOTS[:count]), device, reserved)

    def root_bus_slots(self, device: str, count: int = 1, *, field: str = "port") -> str:
        """Count ``count`` devices that sit directly on the root bus (QEMU picks their
        slots) against its 30 free slots; returns the root bus name."""
        self._need_pci(device, field)
        self._check_root_bus(device, field, extra=count)
        self._root_bus_devices += [device] * count
        return self.root_bus

    def check_hotplug_bus(self, bus: str | None, device: str, *, field: str = "hotplug") -> None:
        """Refuse hot plug onto the PCIe root bus (QEMU cannot; use a root port)."""
        if self.pcie and bus in (None, self.root_bus):
            raise UnsupportedError(
                f"machine {self.machine} cannot hot-plug devices onto {self.root_bus} "
                "(QEMU: Bus 'pcie.0' does not support hotplugging); hot-plug onto a root port, "
                "switch port or PCI bridge instead",
                device=device,
                field=field,
            )

    # --- Kata's hot-plug bridges -------------------------------------------------------------
    def add_kata_bridges(self, count: int, *, nested: bool) -> tuple[str, ...]:
        """Kata's ``count`` hot-plug bridges (``default_bridges``), made before any other node.

        Bridge ``i`` is ``pci-bridge-<i>`` at slot ``2+i`` of the root bus: a conventional
        ``pci-bridge`` (chassis ``i+1``, SHPC off, Kata's 4k/1m/1m window hints), or with
        ``nested`` a ``pcie-pci-bridge`` behind its own root port ``rp-pci-bridge-<i>`` (chassis
        ``16+i``, slot 0, one bus number and the same windows reserved), which is what Kata does
        on q35 with a UEFI firmware. Returns the bridges' ids; their slots (1 to 30) are handed
        out by :meth:`bridge_slots` first.
        """
        if self._nodes or self._root_bus_devices:
            raise ValueError("Kata's bridges must be made before any other port or device")
        if not 0 <= count <= MAX_KATA_BRIDGES:
            raise ValueError(f"Kata makes at most {MAX_KATA_BRIDGES} bridges, not {count}")
        if count:
            self._need_pci("sandbox", "default_bridges")
        ids = []
        for index in range(count):
            bridge_id, addr = f"pci-bridge-{index}", KATA_BRIDGE_FIRST_SLOT + index
            if nested and self.pcie:
                port = _Node(kind=NodeKind.BRIDGE_PORT, id=f"rp-{bridge_id}", bus=self.root_bus,
                             chassis=KATA_NESTED_CHASSIS_BASE + index, form=Form.KATA_NESTED_PORT, addr=addr,
                             reserve=dict(KATA_NESTED_PORT_RESERVE))
                bridge = _Node(kind=NodeKind.BRIDGE, id=bridge_id, bus=port.id, chassis=None,
                               form=Form.KATA_NESTED_BRIDGE, parent=port)
                self._nodes += [port, bridge]
            else:
                self._chassis += 1
                self._nodes.append(_Node(kind=NodeKind.BRIDGE, id=bridge_id, bus=self.root_bus,
                                         chassis=self._chassis, form=Form.KATA_BRIDGE, addr=addr,
                                         reserve=dict(KATA_BRIDGE_RESERVE)))
            ids.append(bridge_id)
        return tuple(ids)

    # --- reservations ------------------------------------------------------------------------
    def ensure_root_ports(self, count: int, *, device: str, field: str) -> tuple[str, ...]:
        """Make at least ``count`` root ports exist (spares for later hot plug).

        Returns the ids of the root ports no device uses.
        """
        if count > 0:
            self._need_pcie(device, field, "PCIe root ports")
        while len(self._of_kind(NodeKind.ROOT_PORT)) < count:
            self._add_on_root_bus(NodeKind.ROOT_PORT, device, field)
        return tuple(n.id for n in self._of_kind(NodeKind.ROOT_PORT) if not n.users)

    def ensure_switch_ports(self, count: int, *, device: str, field: str) -> tuple[str, ...]:
        """Make at least ``count`` switch downstream ports exist; the ids of the unused ones."""
        if count > 0:
            self._need_pcie(device, field, "PCIe switch ports")
        while len(self._of_kind(NodeKind.SWITCH_DOWNSTREAM)) < count:
            self._add_downstream(device, field)
        return tuple(n.id for n in self._of_kind(NodeKind.SWITCH_DOWNSTREAM) if not n.users)

    # --- output ------------------------------------------------------------------------------
    def ports(self) -> list[PortInfo]:
        return [PortInfo(id=n.id, kind=n.kind, bus=n.bus, users=tuple(n.users)) for n in self._nodes]

    def args(self, *, fixed: bool | None = None) -> list[str]:
        """``-device`` options for every port and bridge, parents before children.

        ``fixed=True`` gives only the nodes with a fixed address (Kata's bridges), which must
        come before any device QEMU places itself on the root bus; ``fixed=False`` the others.
        """
        args: list[str] = []
        for node in self._nodes:
            if fixed is None or node.fixed == fixed:
                args += node.render()
        return args

    # --- internals ---------------------------------------------------------------------------
    def _of_kind(self, kind: NodeKind) -> list[_Node]:
        return [n for n in self._nodes if n.kind is kind]

    def _spare(self, kind: NodeKind) -> _Node | None:
        return next((n for n in self._of_kind(kind) if not n.users), None)

    def _need_pci(self, device: str, field: str) -> None:
        if not self.pci:
            raise UnsupportedError(
                f"machine {self.machine} has no PCI bus", device=device, field=field
            )

    def _need_pcie(self, device: str, field: str, what: str) -> None:
        self._need_pci(device, field)
        if not self.pcie:
            raise UnsupportedError(
                f"machine {self.machine} has no PCIe root complex for {what}; use q35 (or virt), "
                "or a PCI bridge",
                device=device,
                field=field,
            )

    def _on_root_bus(self) -> list[_Node]:
        return [n for n in self._nodes if n.bus == self.root_bus]

    def _check_root_bus(self, device: str, field: str, *, extra: int) -> None:
        used = len(self._on_root_bus()) + len(self._root_bus_devices)
        if used + extra > ROOT_BUS_FREE_SLOTS:
            raise UnsupportedError(
                f"{self.root_bus} has {BUS_SLOTS} slots and {ROOT_BUS_FREE_SLOTS} free ones (slot 0 "
                f"holds the host bridge, slot 31 the chipset); {used} are taken by ports, bridges "
                "and devices",
                device=device,
                field=field,
            )

    def _check_io_windows(self, kind: NodeKind, device: str, field: str) -> None:
        on_root_bus = self._on_root_bus()
        if len(on_root_bus) < MAX_ROOT_PORTS:
            return
        others = kind is not NodeKind.ROOT_PORT or any(n.kind is not NodeKind.ROOT_PORT for n in on_root_bus)
        extra = " (PCI bridges and a switch's root port take a window each too)" if others else ""
        raise UnsupportedError(
            f"more than {MAX_ROOT_PORTS} PCIe root ports do not fit QEMU's I/O space{extra}",
            device=device,
            field=field,
        )

    def _add_on_root_bus(self, kind: NodeKind, device: str, field: str) -> _Node:
        self._check_io_windows(kind, device, field)
        self._check_root_bus(device, field, extra=1)
        return self._add(kind, self.root_bus, chassis=True)

    def _add_downstream(self, device: str, field: str) -> _Node:
        downstream = self._of_kind(NodeKind.SWITCH_DOWNSTREAM)
        if len(downstream) >= MAX_SWITCH_PORTS:
            raise UnsupportedError(
                f"more than {MAX_SWITCH_PORTS} PCIe switch downstream ports do not fit QEMU's I/O space",
                device=device,
                field=field,
            )
        upstream = self._of_kind(NodeKind.SWITCH_UPSTREAM)
        if not upstream:
            root = self._add_on_root_bus(NodeKind.SWITCH_ROOT_PORT, device, field)
            upstream = [self._add(NodeKind.SWITCH_UPSTREAM, root.id, chassis=False)]
        return self._add(NodeKind.SWITCH_DOWNSTREAM, upstream[0].id, chassis=True)

    def _add(self, kind: NodeKind, bus: str, *, chassis: bool) -> _Node:
        number = len([n for n in self._of_kind(kind) if not n.fixed])
        chassis_nr: int | None = None
        if chassis:
            self._chassis += 1
            chassis_nr = self._chassis
        node = _Node(kind=kind, id=f"{kind.prefix}{number}", bus=bus, chassis=chassis_nr)
        self._nodes.append(node)
        return node

    @staticmethod
    def _take_slots(
        node: _Node, slots: list[int], device: str, reserve: dict[str, int]
    ) -> tuple[str, tuple[int, ...]]:
        node.slots.update(slots)
        node.users.append(device)
        (node.parent or node).add_reserve(reserve)
        return node.id, tuple(slots)
