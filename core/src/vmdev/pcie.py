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

Large BARs (:class:`Bar`, :class:`BarSpace`): a device placed with ``bars=`` tells the topology
what address space it needs. Placed for hot plug, its port gets the window reservations the
guest firmware needs to map the BARs after boot (:meth:`BarSpace.hot_reserve`); placed cold,
its BARs are counted for the 64-bit PCI window the firmware lays out at boot
(:meth:`PcieTopology.mmio64_ranges`, :func:`mmio64_layout`), from which the QEMU backend derives
the guest's physical address width and OVMF's aperture. A BAR that no window can hold is refused
naming the device and the BAR: a 32-bit BAR (or a non-prefetchable one behind a port) above
512 MiB, a 64-bit BAR beyond what the guest can address, a large BAR hot-plugged onto a switch
downstream port (QEMU cannot reserve windows there).

NUMA (:meth:`PcieTopology.bind_numa`): a root port asked for with ``numa_node=N`` (the device's
host NUMA node) is moved, when the plan is assembled, behind a ``pxb-pcie`` of the guest NUMA node
that covers host node N, as Kata's runtime does.

The topology knows nothing about device families; it only hands out places.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
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

# --- BAR space ---------------------------------------------------------------------------------
MiB: Final = 1 << 20
GiB: Final = 1 << 30
#: the windows a firmware gives a hot-plug port when nothing reserves more (SeaBIOS: 2 MiB of memory
#: and of prefetchable memory; OVMF: 2 MiB of memory)
DEFAULT_WINDOW: Final = 2 * MiB
#: SeaBIOS aligns a port's reserved window to 2 MiB only, whatever its size; OVMF rounds a reservation
#: up to a power of two and aligns it to that (OvmfPkg/PciHotPlugInitDxe)
SEABIOS_WINDOW_ALIGN: Final = 2 * MiB
#: q35's 32-bit PCI hole as SeaBIOS and OVMF use it: from the end of the 256 MiB MMCONFIG area at
#: 0xb0000000 to the IOAPIC at 0xfec00000
PCI_HOLE32: Final = (0xC000_0000, 0xFEC0_0000)
#: the largest naturally aligned block of that hole: no BAR that must sit below 4 GiB can be larger
MAX_BAR32: Final = 512 * MiB
#: the physical address bits of QEMU's x86 guests at most (TARGET_PHYS_ADDR_SPACE_BITS)
MAX_PHYS_BITS: Final = 52
#: OVMF uses at most 46 address bits, whatever the CPU offers (it avoids 5-level paging)
OVMF_MAX_PHYS_BITS: Final = 46
#: QEMU's phys-bits for every CPU model but ``host`` (TCG_PHYS_ADDR_BITS), under KVM too
DEFAULT_PHYS_BITS: Final = 40
#: OVMF's 64-bit PCI aperture unless ``opt/ovmf/X-PciMmio64Mb`` says otherwise (its classic default)
OVMF_DEFAULT_MMIO64: Final = 32 * GiB
#: room kept in the 64-bit PCI window for the other devices' 64-bit BARs, which the topology does not
#: know (a virtio device's is 16 KiB): the firmware places them after the large ones
OTHER_BARS_ROOM: Final = 1 * GiB
#: Kata's pxb-pcie bus numbers: 0x20 apart, ``0x20 * (guest node + 1)``, at most 0xff
PXB_BUS_NR_SPACING: Final = 0x20
MAX_PXB_BUS_NR: Final = 0xFF


def size_text(value: int) -> str:
    """``256 GiB``, ``256 GiB + 48 MiB``, ``4 KiB``, else plain bytes, for messages and notes."""
    parts: list[str] = []
    rest = value
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if rest >> shift and len(parts) < 2:
            parts.append(f"{rest >> shift} {unit}")
            rest &= (1 << shift) - 1
    return " + ".join(parts) if parts and not rest else f"{value} bytes"


def _align(value: int, align: int) -> int:
    return -(-value // align) * align if align > 1 else value


def _pow2_ceil(value: int) -> int:
    return 1 << (value - 1).bit_length() if value > 1 else 1


def _pow2_floor(value: int) -> int:
    return 1 << (value.bit_length() - 1) if value > 0 else 0


class BarKind(str, enum.Enum):
    """The window of a bridge a BAR needs: I/O, memory (non-prefetchable, 32-bit behind a bridge),
    or prefetchable memory (64-bit when the BAR is)."""

    IO = "io"
    MEM = "mem"
    PREF = "pref"


@attrs.frozen(kw_only=True)
class Bar:
    """One BAR of a PCI function (``index`` 0-5) and the address space it needs."""

    function: str
    index: int
    size: int
    kind: BarKind
    is64: bool = False

    def describe(self) -> str:
        """``BAR 2 of 0000:41:00.0 (256 GiB, 64-bit prefetchable)``."""
        what = {BarKind.IO: "I/O", BarKind.MEM: "non-prefetchable", BarKind.PREF: "prefetchable"}[self.kind]
        width = "" if self.kind is BarKind.IO else ("64-bit " if self.is64 else "32-bit ")
        return f"BAR {self.index} of {self.function} ({size_text(self.size)}, {width}{what})"


def _bars(value: Iterable[Bar]) -> tuple[Bar, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class BarSpace:
    """What the BARs of the functions placed together (on one port) need: bytes by window kind, and
    the BARs larger than the firmware's default window (they decide alignments and are named in
    errors). ``mem`` is non-prefetchable memory, which behind a bridge lives below 4 GiB."""

    mem: int = 0
    pref32: int = 0
    pref64: int = 0
    large: tuple[Bar, ...] = attrs.field(default=(), converter=_bars)

    @property
    def pref(self) -> int:
        return self.pref32 + self.pref64

    def largest(self, kind: BarKind) -> Bar | None:
        bars = [bar for bar in self.large if bar.kind is kind]
        return max(bars, key=lambda bar: bar.size) if bars else None

    def hot_reserve(self, *, uefi: bool) -> dict[str, int]:
        """The reservations a hot-plug port needs so that the firmware sizes its windows at boot for
        these BARs: none while the default 2 MiB windows hold them.

        A window holds its BARs packed from the largest down (sizes are powers of two), so it needs
        their sum, at an address aligned to the largest. OVMF rounds a reservation up to a power of
        two and aligns it to that, which is enough. SeaBIOS aligns a reserved window to 2 MiB only,
        so a BAR larger than that fits only if the window also covers the distance to the next
        address aligned to the BAR: the reservation is the sum plus the largest BAR less 2 MiB.
        """
        out: dict[str, int] = {}
        mem = _window_reserve(self.mem, self.largest(BarKind.MEM), uefi)
        if mem:
            out["mem-reserve"] = mem
        pref = _window_reserve(self.pref, self.largest(BarKind.PREF), uefi)
        if pref:
            out["pref64-reserve" if self.pref64 else "pref32-reserve"] = pref
        return out


def _window_reserve(need: int, largest: Bar | None, uefi: bool) -> int:
    if need <= DEFAULT_WINDOW:
        return 0
    if uefi or largest is None or largest.size <= SEABIOS_WINDOW_ALIGN:
        return need
    return need + largest.size - SEABIOS_WINDOW_ALIGN


@attrs.frozen(kw_only=True)
class MmioRange:
    """A range the firmware places in the 64-bit PCI window at boot: a port's or bridge's
    prefetchable window (``hot``: a reservation for devices plugged later), or the 64-bit BARs of
    a device on a root bus."""

    owner: str
    devices: tuple[str, ...]
    size: int
    align: int
    hot: bool = False
    largest: Bar | None = None


@attrs.frozen(kw_only=True)
class Mmio64Layout:
    """Where a firmware puts the 64-bit PCI window (``start`` to ``end``) after guest RAM and the
    memory hot-plug area (``first_free``), how many bytes the ranges need packed (``need``), OVMF's
    aperture (``aperture``: 0 for SeaBIOS), and the guest physical address bits that reach ``end``."""

    first_free: int
    need: int
    start: int
    end: int
    aperture: int
    bits: int
    uefi: bool


def _pack(parts: Iterable[tuple[int, int]], start: int = 0) -> int:
    """The end of ``(size, alignment)`` parts packed from ``start`` largest alignment first (as
    SeaBIOS and EDK2 place a bus's ranges)."""
    address = start
    for size, align in sorted(parts, key=lambda part: -part[1]):
        address = _align(address, align) + size
    return address


def mmio64_layout(ranges: Sequence[MmioRange], *, first_free: int, uefi: bool) -> Mmio64Layout:
    """The 64-bit PCI window ``ranges`` need, as the guest firmware lays it out.

    SeaBIOS starts it at ``first_free`` rounded to 1 GiB, then to the largest alignment, packs the
    ranges (largest alignment first) and rounds the end to 1 GiB. OVMF's aperture has a fixed size
    (32 GiB unless ``X-PciMmio64Mb`` says otherwise), starts at ``first_free`` rounded to 1 GiB and
    then to the largest power of two not above its size, and must hold the packed ranges. Both keep
    :data:`OTHER_BARS_ROOM` for the small 64-bit BARs of other devices, placed after the large ones.
    """
    need = _pack((r.size, r.align) for r in ranges)
    biggest = max((r.align for r in ranges), default=GiB)
    base = _align(first_free, GiB)
    if uefi:
        aperture = max(_align(need + OTHER_BARS_ROOM, GiB), OVMF_DEFAULT_MMIO64)
        start = _align(base, _pow2_floor(aperture))
        end = start + aperture
    else:
        aperture = 0
        start = _align(base, max(biggest, GiB))
        end = _align(_pack(((r.size, r.align) for r in ranges), start) + OTHER_BARS_ROOM, GiB)
    return Mmio64Layout(first_free=first_free, need=need, start=start, end=end, aperture=aperture,
                        bits=(end - 1).bit_length(), uefi=uefi)



class NodeKind(str, enum.Enum):
    """What a topology node is (its QEMU driver and its id prefix)."""

    ROOT_PORT = "root-port"
    SWITCH_ROOT_PORT = "switch-root-port"
    SWITCH_UPSTREAM = "switch-upstream-port"
    SWITCH_DOWNSTREAM = "switch-downstream-port"
    BRIDGE = "pci-bridge"
    #: the root port that carries one of Kata's nested bridges (never handed out to a device)
    BRIDGE_PORT = "bridge-root-port"
    #: a PCIe expander bridge: an extra root bus bound to a guest NUMA node
    PXB = "pxb"

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
    NodeKind.PXB: "pxb-numa",
}
_DRIVER: Final = {
    NodeKind.ROOT_PORT: "pcie-root-port",
    NodeKind.SWITCH_ROOT_PORT: "pcie-root-port",
    NodeKind.SWITCH_UPSTREAM: "x3130-upstream",
    NodeKind.SWITCH_DOWNSTREAM: "xio3130-downstream",
    NodeKind.BRIDGE: "pci-bridge",
    NodeKind.BRIDGE_PORT: "pcie-root-port",
    NodeKind.PXB: "pxb-pcie",
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
    #: the BAR space of the cold-plugged devices placed here, by device
    bars: list[tuple[str, BarSpace]] = attrs.field(factory=list)
    #: a root port for a device on this host NUMA node (moved behind a pxb-pcie by bind_numa)
    numa_host: int | None = None
    #: a pxb-pcie's guest NUMA node
    guest_node: int | None = None

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
        if self.kind is NodeKind.PXB:  # Kata's order: id, bus, bus_nr, numa_node
            node = self.guest_node or 0
            return ["-device", opts(self.kind.driver, {"id": self.id, "bus": self.bus,
                                                        "bus_nr": PXB_BUS_NR_SPACING * (node + 1),
                                                        "numa_node": node})]
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
    #: the guest firmware is UEFI (OVMF): it rounds window reservations up to powers of two
    uefi: bool = attrs.field(default=False, kw_only=True)
    #: guest NUMA is on: root ports asked for with a host NUMA node go behind a pxb-pcie
    numa: bool = attrs.field(default=False, kw_only=True)
    _nodes: list[_Node] = attrs.field(factory=list)
    _chassis: int = 0
    _root_bus_devices: list[str] = attrs.field(factory=list)
    #: the BAR space of the devices placed on the root bus itself
    _root_bus_bars: list[tuple[str, BarSpace]] = attrs.field(factory=list)

    @classmethod
    def for_settings(
        cls, settings: SandboxSettings, *, uefi: bool = False, numa: bool = False
    ) -> PcieTopology:
        pci = not (settings.is_microvm or settings.is_ccw)
        return cls(machine=settings.machine_type, pcie=pci and settings.has_pcie_root, pci=pci, uefi=uefi,
                   numa=numa and pci and settings.has_pcie_root)

    @property
    def root_bus(self) -> str:
        """``pcie.0`` on PCIe machines, ``pci.0`` on the others (``pc``)."""
        return "pcie.0" if self.pcie else "pci.0"

    # --- places ------------------------------------------------------------------------------
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
        """A ``pcie-root-port`` of its own for ``device``: its id (``rp<N>``).

        A spare port made by :meth:`ensure_root_ports` is used first. ``reserve`` adds
        window reservations in bytes (``mem-reserve``, ``pref64-reserve``...; ``bus-reserve``
        in bus numbers) that the firmware honours for a device hot-plugged later; the needs of
        several devices on one bridge add up. ``bars`` is what the device's BARs need: for a
        device plugged later (``hotplug``) it becomes the reservations its windows need, else it
        counts for the 64-bit PCI window (:meth:`mmio64_ranges`). With guest NUMA on, a device on
        host NUMA node ``numa_node`` gets a new port that :meth:`bind_numa` moves behind its
        node's pxb-pcie.
        """
        self._need_pcie(device, field, "a PCIe root port")
        reserved = _check_reserve(reserve)
        self._check_bars(device, bars, behind_port=True)
        numa_host = numa_node if self.numa and numa_node >= 0 else None
        node = None if numa_host is not None else self._spare(NodeKind.ROOT_PORT)
        if node is None:
            node = self._add_on_root_bus(NodeKind.ROOT_PORT, device, field)
            node.numa_host = numa_host
        self._take_bars(node, device, bars, hotplug, reserved)
        node.users.append(device)
        return node.id

    def switch_port(
        self, device: str, *, field: str = "port", bars: BarSpace | None = None, hotplug: bool = False
    ) -> str:
        """A switch downstream port of its own for ``device``: its id (``swdp<N>``).

        The first call creates the switch: root port ``swrp0`` and upstream port ``swup0``. QEMU's
        downstream ports cannot reserve windows: a device plugged later whose BARs need more than
        the firmware's default windows is refused, naming its largest BAR.
        """
        self._need_pcie(device, field, "a PCIe switch port")
        self._check_bars(device, bars, behind_port=True)
        if hotplug and bars is not None and bars.hot_reserve(uefi=self.uefi):
            bar = bars.largest(BarKind.PREF) or bars.largest(BarKind.MEM)
            what = bar.describe() if bar is not None else f"its BARs ({size_text(bars.mem + bars.pref)})"
            raise UnsupportedError(
                f"{what} needs a window larger than the firmware's default {size_text(DEFAULT_WINDOW)}, "
                "reserved at boot, and QEMU's switch downstream ports (xio3130-downstream) cannot reserve "
                "one: hot-plug it onto a root port or cold-plug it",
                device=device,
                field=field,
            )
        node = self._spare(NodeKind.SWITCH_DOWNSTREAM) or self._add_downstream(device, field)
        self._take_bars(node, device, bars, hotplug, {})
        node.users.append(device)
        return node.id

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
        """``count`` free slots on one PCI bridge (``bp<N>``), lowest first, for ``device``.

        All slots come from the same bridge; a new bridge is added when no bridge has
        ``count`` free slots left. ``bars`` and ``hotplug`` as for :meth:`root_port`.
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
        self._check_bars(device, bars, behind_port=True)
        for node in self._of_kind(NodeKind.BRIDGE):
            free = [slot for slot in BRIDGE_SLOTS if slot not in node.slots]
            if len(free) >= count:
                return self._take_slots(node, free[:count], device, reserved, bars, hotplug)
        node = self._add_on_root_bus(NodeKind.BRIDGE, device, field)
        return self._take_slots(node, list(BRIDGE_SLOTS[:count]), device, reserved, bars, hotplug)

    def root_bus_slots(
        self, device: str, count: int = 1, *, field: str = "port", bars: BarSpace | None = None
    ) -> str:
        """Count ``count`` devices that sit directly on the root bus (QEMU picks their
        slots) against its 30 free slots; returns the root bus name. ``bars``: what their BARs
        need (the firmware maps them at boot)."""
        self._need_pci(device, field)
        self._check_root_bus(device, field, extra=count)
        self._check_bars(device, bars, behind_port=False)
        self._root_bus_devices += [device] * count
        if bars is not None:
            self._root_bus_bars.append((device, bars))
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

    # --- address space and NUMA (read when the plan is assembled) ------------------------------
    def mmio64_ranges(self) -> list[MmioRange]:
        """What the firmware places in the 64-bit PCI window for the BARs placed with ``bars``: each
        root-bus port's or bridge's prefetchable window (its cold devices' BARs, or its
        reservation), and the 64-bit prefetchable BARs of devices on a root bus. Windows of ports
        and devices that told nothing are left out (they are small, and mostly below 4 GiB)."""
        roots = {self.root_bus} | {n.id for n in self._of_kind(NodeKind.PXB)}
        out = [self._range(n) for n in self._nodes if n.bus in roots and n.kind is not NodeKind.PXB]
        for device, space in self._root_bus_bars:
            largest = space.largest(BarKind.PREF)
            if space.pref64:
                out.append(MmioRange(owner=device, devices=(device,), size=space.pref64,
                                     align=largest.size if largest else MiB, largest=largest))
        return [r for r in out if r.size]

    def _range(self, node: _Node) -> MmioRange:
        children = [self._range(child) for child in self._nodes if child.bus == node.id]
        parts: list[tuple[int, int]] = []
        bars: list[Bar] = []
        for _, space in node.bars:
            largest = space.largest(BarKind.PREF)
            if space.pref:
                parts.append((space.pref, largest.size if largest else MiB))
            bars += [largest] if largest else []
        parts += [(child.size, child.align) for child in children if child.size]
        bars += [child.largest for child in children if child.largest]
        reserve = node.reserve.get("pref64-reserve", 0) + node.reserve.get("pref32-reserve", 0)
        if reserve and self.uefi:
            held, held_align = _pow2_ceil(reserve), _pow2_ceil(reserve)
        else:
            held, held_align = _align(reserve, SEABIOS_WINDOW_ALIGN), SEABIOS_WINDOW_ALIGN
        content = _pack(parts)
        align = max([SEABIOS_WINDOW_ALIGN, held_align, *(a for _, a in parts)])
        size = _align(max(content, held), align) if content or reserve else 0
        devices = tuple(dict.fromkeys([*node.users, *(d for c in children for d in c.devices)]))
        return MmioRange(owner=node.id, devices=devices, size=size, align=align,
                         hot=bool(reserve) and not content,
                         largest=max(bars, key=lambda bar: bar.size) if bars else None)

    @property
    def has_expander_bus(self) -> bool:
        """A pxb-pcie is in the machine (devices without a bus must then name the root bus)."""
        return bool(self._of_kind(NodeKind.PXB))

    def numa_ports(self) -> list[tuple[str, int, tuple[str, ...]]]:
        """``(port id, host NUMA node, users)`` of the root ports waiting for :meth:`bind_numa`."""
        return [(n.id, n.numa_host, tuple(n.users)) for n in self._nodes if n.numa_host is not None]

    def bind_numa(self, guest_node_of: Mapping[int, int], *, mapping: str) -> dict[str, str]:
        """Move each root port asked for with a host NUMA node behind the pxb-pcie of the guest node
        that covers that host node (``guest_node_of``: host node -> guest node), made on first use as
        Kata makes it (``pxb-numa<g>``, bus_nr ``0x20 * (g + 1)``, ``numa_node=<g>``). A host node no
        guest node covers is an error naming the device (``mapping`` says what the guest nodes
        cover). Returns port id -> pxb id."""
        moved: dict[str, str] = {}
        for node in list(self._nodes):
            host = node.numa_host
            if host is None:
                continue
            guest = guest_node_of.get(host)
            device = node.users[0] if node.users else node.id
            if guest is None:
                raise UnsupportedError(
                    f"sits on host NUMA node {host}, which no guest NUMA node covers ({mapping}); map it in "
                    "numa_mapping, or pass a device of a covered node",
                    device=device,
                    field="numa_mapping",
                )
            if PXB_BUS_NR_SPACING * (guest + 1) > MAX_PXB_BUS_NR:
                raise UnsupportedError(
                    f"needs a pxb-pcie for guest NUMA node {guest}, whose bus number "
                    f"0x{PXB_BUS_NR_SPACING:x} * {guest + 1} would pass 0x{MAX_PXB_BUS_NR:x} (Kata's "
                    f"numbering wraps there): give devices at most "
                    f"{MAX_PXB_BUS_NR // PXB_BUS_NR_SPACING - 1} guest NUMA nodes",
                    device=device,
                    field="numa_mapping",
                )
            pxb = self._pxb(guest, before=node)
            node.bus = pxb.id
            node.numa_host = None
            pxb.users.append(device)
            moved[node.id] = pxb.id
        return moved

    def _pxb(self, guest: int, *, before: _Node) -> _Node:
        found = next((n for n in self._of_kind(NodeKind.PXB) if n.guest_node == guest), None)
        if found is not None:
            return found
        pxb = _Node(kind=NodeKind.PXB, id=f"{NodeKind.PXB.prefix}{guest}", bus=self.root_bus, chassis=None,
                    guest_node=guest)
        self._nodes.insert(self._nodes.index(before), pxb)
        return pxb

    def describe(self, device: str) -> list[str]:
        """What ``device`` was given and the limits that applied, one line each (``vmdev explain``)."""
        lines: list[str] = []
        on_root = self._on_root_bus()
        for node in self._nodes:
            if device not in node.users:
                continue
            where = f"on {node.bus}"
            lines.append(f"{node.id}: {node.kind.driver} {where}" + self._describe_node(node, device))
        if device in self._root_bus_devices:
            lines.append(f"{self.root_bus}: {self._root_bus_devices.count(device)} slot(s) picked by QEMU")
        if lines:
            used = len(on_root) + len(self._root_bus_devices)
            ports = len(on_root)
            downstream = len(self._of_kind(NodeKind.SWITCH_DOWNSTREAM))
            lines.append(
                f"limits: {self.root_bus} has {ROOT_BUS_FREE_SLOTS} free slots, {used} used; {ports} of "
                f"{MAX_ROOT_PORTS} ports and bridges on it (each takes 4 KiB of QEMU's 64 KiB I/O space); "
                f"{downstream} of {MAX_SWITCH_PORTS} switch downstream ports; a port takes one device of up "
                f"to {SLOT_FUNCTIONS} functions"
            )
        return lines

    def _describe_node(self, node: _Node, device: str) -> str:
        if node.kind is NodeKind.PXB:
            guest = node.guest_node or 0
            return f" (the root bus of guest NUMA node {guest}, bus_nr {PXB_BUS_NR_SPACING * (guest + 1)})"
        parts = []
        if node.chassis is not None:
            parts.append(f"chassis {node.chassis}")
        if node.kind is NodeKind.BRIDGE:
            parts.append(f"slots {sorted(node.slots)} of {BRIDGE_SLOTS[0]}-{BRIDGE_SLOTS[-1]} in use")
        if node.reserve:
            parts.append("reserves " + ", ".join(f"{k}={size_text(v)}" for k, v in node.reserve.items()))
        pxb = next((n for n in self._of_kind(NodeKind.PXB) if n.id == node.bus), None)
        if pxb is not None:
            parts.append(f"behind {pxb.id}, the pxb-pcie of guest NUMA node {pxb.guest_node}")
        others = [user for user in node.users if user != device]
        if others:
            parts.append("shared with " + ", ".join(others))
        return f" ({'; '.join(parts)})" if parts else ""

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

    def _take_slots(
        self, node: _Node, slots: list[int], device: str, reserve: dict[str, int], bars: BarSpace | None,
        hotplug: bool,
    ) -> tuple[str, tuple[int, ...]]:
        node.slots.update(slots)
        node.users.append(device)
        self._take_bars(node, device, bars, hotplug, reserve)
        return node.id, tuple(slots)

    def _take_bars(
        self, node: _Node, device: str, bars: BarSpace | None, hotplug: bool, reserve: dict[str, int]
    ) -> None:
        """A hot-plugged device's BARs become its port's reservations; a cold one's are counted."""
        if bars is not None and hotplug:
            for key, size in bars.hot_reserve(uefi=self.uefi).items():
                reserve[key] = reserve.get(key, 0) + size  # a 32-bit and a 64-bit window merge in add_reserve
        elif bars is not None:
            node.bars.append((device, bars))
        (node.parent or node).add_reserve(reserve)

    def _check_bars(self, device: str, bars: BarSpace | None, *, behind_port: bool) -> None:
        """Refuse a BAR no firmware can map: one that must sit below 4 GiB (32-bit, or
        non-prefetchable behind a port) and is larger than 512 MiB, or a 64-bit one so large that,
        aligned to its size above 4 GiB, it ends beyond what the guest can address."""
        if bars is None:
            return
        limit, who = (OVMF_MAX_PHYS_BITS, "OVMF uses") if self.uefi else \
            (MAX_PHYS_BITS, "QEMU's x86 guests have")
        for bar in bars.large:
            if bar.kind is BarKind.IO:
                continue
            low = not bar.is64 or (behind_port and bar.kind is BarKind.MEM)
            if low and bar.size > MAX_BAR32:
                why = "a 32-bit BAR" if not bar.is64 else \
                    "non-prefetchable, so behind a port it sits in the port's 32-bit window, and"
                raise UnsupportedError(
                    f"{bar.describe()} is {why} larger than {size_text(MAX_BAR32)}, the largest "
                    f"aligned block of q35's 32-bit PCI hole (0x{PCI_HOLE32[0]:x}-0x{PCI_HOLE32[1]:x}): no "
                    "firmware can map it",
                    device=device,
                    field="bar",
                )
            bits = (2 * max(bar.size, 4 * GiB) - 1).bit_length()
            if bits > limit:
                raise UnsupportedError(
                    f"{bar.describe()} cannot be mapped: aligned to its size above 4 GiB it needs {bits} "
                    f"physical address bits, and {who} at most {limit}",
                    device=device,
                    field="bar",
                )
