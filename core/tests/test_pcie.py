"""The generic PCIe topology of QemuTarget: Kata's names, one chassis numbering, QEMU's limits."""

from __future__ import annotations

import pytest

from vmdev.backends.clh import ClhTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.pcie import Bar, BarKind, BarSpace, NodeKind, PcieTopology, mmio64_layout
from vmdev.qemu import split_opts
from vmdev.settings import SandboxSettings


def topology(machine: str = "q35") -> PcieTopology:
    return QemuTarget(SandboxSettings(machine_type=machine)).topology


def rendered(topo: PcieTopology) -> list[list[str]]:
    args = topo.args()
    assert args[::2] == ["-device"] * (len(args) // 2)
    return [split_opts(value) for value in args[1::2]]


def test_every_kind_shares_one_chassis_numbering_and_parents_come_first() -> None:
    topo = topology()
    assert topo.root_port("a") == "rp0"
    assert topo.switch_port("b") == "swdp0"
    assert topo.bridge_slots("c", 2) == ("bp0", (1, 2))
    assert topo.root_port("d") == "rp1"
    assert topo.switch_port("e") == "swdp1"
    assert rendered(topo) == [
        ["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1"],
        ["pcie-root-port", "id=swrp0", "bus=pcie.0", "chassis=2", "slot=2"],
        ["x3130-upstream", "id=swup0", "bus=swrp0"],
        ["xio3130-downstream", "id=swdp0", "bus=swup0", "chassis=3", "slot=3"],
        ["pci-bridge", "id=bp0", "bus=pcie.0", "chassis_nr=4", "shpc=off"],
        ["pcie-root-port", "id=rp1", "bus=pcie.0", "chassis=5", "slot=5"],
        ["xio3130-downstream", "id=swdp1", "bus=swup0", "chassis=6", "slot=6"],
    ]
    assert [(p.id, p.kind, p.users) for p in topo.ports()][:2] == [
        ("rp0", NodeKind.ROOT_PORT, ("a",)), ("swrp0", NodeKind.SWITCH_ROOT_PORT, ())]


def test_hotplug_bus_takes_the_same_numbering() -> None:
    target = QemuTarget(SandboxSettings())
    assert target.topology.root_port("cold") == "rp0"
    assert target.hotplug_bus("hot") == "rp1"
    assert target.topology_args() == target.topology.args()


def test_spare_ports_are_made_once_and_handed_out_first() -> None:
    topo = topology()
    topo.root_port("a")
    assert topo.ensure_root_ports(3, device="cfg", field="pcie_root_port") == ("rp1", "rp2")
    assert topo.ensure_root_ports(2, device="cfg", field="pcie_root_port") == ("rp1", "rp2")
    assert topo.root_port("b") == "rp1"
    assert topo.ensure_switch_ports(2, device="cfg", field="pcie_switch_port") == ("swdp0", "swdp1")
    assert topo.switch_port("c") == "swdp0"
    assert len(rendered(topo)) == 3 + 2 + 2


def test_window_reservations_accumulate_and_merge_prefetchable_windows() -> None:
    topo = topology()
    topo.root_port("gpu", reserve={"mem-reserve": 16 << 20, "pref64-reserve": 32 << 30})
    topo.bridge_slots("a", reserve={"pref32-reserve": 8 << 20})
    topo.bridge_slots("b", reserve={"pref64-reserve": 4 << 20, "mem-reserve": 1 << 20})
    assert rendered(topo) == [
        ["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1",
         f"mem-reserve={16 << 20}", f"pref64-reserve={32 << 30}"],
        ["pci-bridge", "id=bp0", "bus=pcie.0", "chassis_nr=2", "shpc=off",
         f"pref64-reserve={12 << 20}", f"mem-reserve={1 << 20}"],
    ]
    with pytest.raises(ValueError, match="unknown window reservation io-size"):
        topo.root_port("x", reserve={"io-size": 1})
    with pytest.raises(ValueError, match="cannot both be set"):
        topo.root_port("x", reserve={"pref32-reserve": 1, "pref64-reserve": 1})


def test_at_most_16_ports_take_io_windows() -> None:
    topo = topology()
    for n in range(16):
        topo.root_port(f"d{n}")
    with pytest.raises(UnsupportedError) as exc:
        topo.root_port("d16", field="hotplug")
    assert str(exc.value) == "d16: hotplug: more than 16 PCIe root ports do not fit QEMU's I/O space"
    mixed = topology()
    mixed.bridge_slots("b")
    for n in range(15):
        mixed.root_port(f"d{n}")
    with pytest.raises(UnsupportedError, match=r"root ports do not fit QEMU's I/O space \(PCI bridges and"):
        mixed.root_port("x")


def test_at_most_16_downstream_ports() -> None:
    topo = topology()
    for n in range(16):
        topo.switch_port(f"d{n}")
    with pytest.raises(UnsupportedError, match="more than 16 PCIe switch downstream ports"):
        topo.switch_port("x")


def test_bridges_fill_slots_1_to_30_then_a_new_bridge() -> None:
    topo = topology()
    assert topo.bridge_slots("a", 29) == ("bp0", tuple(range(1, 30)))
    assert topo.bridge_slots("b", 2) == ("bp1", (1, 2))  # a request's slots stay on one bridge
    assert topo.bridge_slots("c", 1) == ("bp0", (30,))
    with pytest.raises(UnsupportedError, match="needs 31 slots on one PCI bridge, which has 30"):
        topo.bridge_slots("d", 31)


def test_the_root_bus_has_30_free_slots() -> None:
    topo = topology()
    assert topo.root_bus_slots("a", 20) == "pcie.0"
    for n in range(10):
        topo.root_port(f"p{n}")
    with pytest.raises(UnsupportedError, match=r"pcie\.0 has 32 slots and 30 free ones .* 30 are taken"):
        topo.root_bus_slots("z")


def test_machines_without_pcie_or_pci() -> None:
    pc = topology("pc")
    assert (pc.root_bus, pc.bridge_slots("a")) == ("pci.0", ("bp0", (1,)))
    assert rendered(pc) == [["pci-bridge", "id=bp0", "bus=pci.0", "chassis_nr=1", "shpc=off"]]
    with pytest.raises(UnsupportedError, match="machine pc has no PCIe root complex for a PCIe root port"):
        pc.root_port("a", field="cold_plug_vfio")
    with pytest.raises(UnsupportedError, match="machine pc has no PCIe root complex for a PCIe switch port"):
        pc.switch_port("a")
    pc.check_hotplug_bus(None, "a")  # pci.0 takes hot-plugged devices
    assert pc.ensure_root_ports(0, device="a", field="f") == ()
    for machine in ("microvm", "s390-ccw-virtio"):
        with pytest.raises(UnsupportedError, match=f"machine {machine} has no PCI bus"):
            topology(machine).bridge_slots("a")


def test_hot_plug_onto_pcie_0_is_refused() -> None:
    topo = topology()
    with pytest.raises(UnsupportedError, match=r"cannot hot-plug devices onto pcie\.0") as exc:
        topo.check_hotplug_bus(None, "dev")
    assert (exc.value.device, exc.value.field) == ("dev", "hotplug")
    topo.check_hotplug_bus("rp0", "dev")


def test_record_lets_plugins_check_rules_across_one_plans_devices() -> None:
    target = ClhTarget(SandboxSettings(hypervisor="cloud-hypervisor"))
    assert target.record("backend", "/dev/a", "group") == {"/dev/a": "group"}
    assert target.record("backend", "/dev/b", "cdev") == {"/dev/a": "group", "/dev/b": "cdev"}
    assert target.record("other", "/dev/b", "x") == {"/dev/b": "x"}
    assert ClhTarget(SandboxSettings(hypervisor="cloud-hypervisor")).record("backend", "/dev/c", "g") == {
        "/dev/c": "g"}


# --- Kata's hot-plug bridges (default_bridges) -------------------------------------------------------
def test_katas_bridges_are_written_as_kata_writes_them_and_share_the_chassis_numbering() -> None:
    topo = topology()
    assert topo.add_kata_bridges(2, nested=False) == ("pci-bridge-0", "pci-bridge-1")
    assert topo.root_port("a") == "rp0"
    assert topo.args(fixed=True) == [
        "-device", "pci-bridge,bus=pcie.0,id=pci-bridge-0,chassis_nr=1,shpc=off,addr=2,io-reserve=4k,"
        "mem-reserve=1m,pref64-reserve=1m",
        "-device", "pci-bridge,bus=pcie.0,id=pci-bridge-1,chassis_nr=2,shpc=off,addr=3,io-reserve=4k,"
        "mem-reserve=1m,pref64-reserve=1m",
    ]
    assert rendered_unfixed(topo) == [["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=3", "slot=3"]]
    assert topo.args() == topo.args(fixed=True) + topo.args(fixed=False)


def rendered_unfixed(topo: PcieTopology) -> list[list[str]]:
    args = topo.args(fixed=False)
    return [split_opts(value) for value in args[1::2]]


def test_nested_bridges_sit_behind_their_own_root_ports_as_on_kata_with_uefi() -> None:
    topo = topology()
    topo.add_kata_bridges(1, nested=True)
    # Kata's reference (section 8.9), property for property
    assert topo.args(fixed=True) == [
        "-device", "pcie-root-port,id=rp-pci-bridge-0,bus=pcie.0,chassis=16,slot=0,addr=2,multifunction=off,"
        "bus-reserve=0x1,pref64-reserve=1m,mem-reserve=1m,io-reserve=4k",
        "-device", "pcie-pci-bridge,bus=rp-pci-bridge-0,id=pci-bridge-0",
    ]
    assert [(p.id, p.kind, p.bus) for p in topo.ports()] == [
        ("rp-pci-bridge-0", NodeKind.BRIDGE_PORT, "pcie.0"), ("pci-bridge-0", NodeKind.BRIDGE, "rp-pci-bridge-0")]
    assert topo.root_port("a") == "rp0"  # the bridge's root port is never handed out


def test_devices_get_katas_bridge_slots_before_a_new_bridge_is_added() -> None:
    topo = topology()
    topo.add_kata_bridges(1, nested=False)
    assert topo.bridge_slots("a", 29) == ("pci-bridge-0", tuple(range(1, 30)))
    assert topo.bridge_slots("b", 2) == ("bp0", (1, 2))  # numbered apart from Kata's bridges
    assert topo.bridge_slots("c", reserve={"pref64-reserve": 8 << 20}) == ("pci-bridge-0", (30,))
    assert "pref64-reserve=9m" in topo.args(fixed=True)[1]


def test_a_nested_bridges_window_needs_go_to_its_root_port() -> None:
    topo = topology()
    topo.add_kata_bridges(1, nested=True)
    topo.bridge_slots("gpu", reserve={"pref64-reserve": 1 << 30, "mem-reserve": 1 << 20})
    port, bridge = topo.args(fixed=True)[1::2]
    assert "pref64-reserve=1025m" in port and "mem-reserve=2m" in port
    assert bridge == "pcie-pci-bridge,bus=rp-pci-bridge-0,id=pci-bridge-0"


def test_katas_bridges_count_against_the_root_bus_and_its_io_space() -> None:
    topo = topology()
    topo.add_kata_bridges(5, nested=True)  # 5 root ports on pcie.0, their bridges behind them
    for n in range(11):
        topo.root_port(f"d{n}")
    with pytest.raises(UnsupportedError, match="more than 16 PCIe root ports"):
        topo.root_port("d11")


def test_katas_bridges_come_first_and_number_at_most_five() -> None:
    topo = topology()
    topo.root_port("a")
    with pytest.raises(ValueError, match="before any other port or device"):
        topo.add_kata_bridges(1, nested=False)
    with pytest.raises(ValueError, match="at most 5 bridges, not 6"):
        topology().add_kata_bridges(6, nested=False)
    with pytest.raises(UnsupportedError, match="machine microvm has no PCI bus"):
        topology("microvm").add_kata_bridges(1, nested=False)
    assert topology("microvm").add_kata_bridges(0, nested=False) == ()


def test_on_pc_and_pseries_katas_bridges_sit_on_pci_0_and_are_never_nested() -> None:
    topo = topology("pseries")
    topo.add_kata_bridges(1, nested=True)  # nesting needs a PCIe root port
    assert topo.args(fixed=True)[1].startswith("pci-bridge,bus=pci.0,id=pci-bridge-0,chassis_nr=1,")


# --- large BARs ------------------------------------------------------------------------------------
GiB, MiB = 1 << 30, 1 << 20


def h200(function: str = "0000:41:00.0") -> BarSpace:
    """An NVIDIA H200's BARs: 16 MiB, 256 GiB and 32 MiB, all 64-bit prefetchable."""
    bars = [Bar(function=function, index=i, size=s, kind=BarKind.PREF, is64=True)
            for i, s in ((0, 16 * MiB), (2, 256 * GiB), (4, 32 * MiB))]
    return BarSpace(pref64=256 * GiB + 48 * MiB, large=bars)


def test_a_hot_plug_port_reserves_the_bars_sum_plus_the_way_to_an_aligned_address_on_seabios() -> None:
    # SeaBIOS aligns a reserved window to 2 MiB only: the 256 GiB BAR fits only if the window
    # reaches the next address aligned to 256 GiB wherever it starts
    topo = topology()
    assert topo.root_port("gpu", bars=h200(), hotplug=True) == "rp0"
    assert rendered(topo)[0][-1] == f"pref64-reserve={256 * GiB + 48 * MiB + 256 * GiB - 2 * MiB}"
    # OVMF rounds a reservation up to a power of two and aligns it: the sum is enough
    ovmf = QemuTarget(SandboxSettings(values={"firmware": "OVMF.fd"})).topology
    ovmf.root_port("gpu", bars=h200(), hotplug=True)
    assert rendered(ovmf)[0][-1] == f"pref64-reserve={256 * GiB + 48 * MiB}"
    # small BARs keep the firmware's default windows; a cold device needs no reservation at all
    small = BarSpace(mem=MiB, pref64=MiB)
    topo.root_port("nic", bars=small, hotplug=True)
    topo.root_port("cold-gpu", bars=h200())
    assert [len(r) for r in rendered(topo)] == [6, 5, 5]


def test_a_cold_large_bar_counts_for_the_64_bit_window_as_seabios_lays_it_out() -> None:
    topo = topology()
    topo.root_port("gpu", bars=h200())
    (window,) = topo.mmio64_ranges()
    # SeaBIOS sizes a port's window to its BARs' sum rounded up to the largest BAR: 512 GiB
    assert (window.owner, window.size, window.align, window.devices, window.hot) == ("rp0", 512 * GiB, 256 * GiB,
                                                                                    ("gpu",), False)
    assert window.largest is not None and window.largest.index == 2
    # both keep 1 GiB for the other devices' small 64-bit BARs, placed after the large ones
    layout = mmio64_layout([window], first_free=10 * GiB, uefi=False)
    assert (layout.start, layout.end, layout.bits) == (256 * GiB, 769 * GiB, 40)
    ovmf = mmio64_layout([window], first_free=10 * GiB, uefi=True)
    assert (ovmf.aperture, ovmf.start, ovmf.end, ovmf.bits) == (513 * GiB, 512 * GiB, 1025 * GiB, 41)
    # eight of them: 4 TiB of windows, 43 bits
    many = topology()
    for n in range(8):
        many.root_port(f"gpu{n}", bars=h200(f"0000:{n + 1:02x}:00.0"))
    assert mmio64_layout(many.mmio64_ranges(), first_free=10 * GiB, uefi=False).bits == 43


def test_a_bar_that_must_sit_below_4_gib_and_is_larger_than_512_mib_is_refused_naming_it() -> None:
    big32 = BarSpace(mem=GiB, large=[Bar(function="0000:05:00.0", index=1, size=GiB, kind=BarKind.MEM)])
    with pytest.raises(UnsupportedError) as exc:
        topology().root_port("card", bars=big32)
    assert str(exc.value) == (
        "card: bar: BAR 1 of 0000:05:00.0 (1 GiB, 32-bit non-prefetchable) is a 32-bit BAR larger than 512 MiB, "
        "the largest aligned block of q35's 32-bit PCI hole (0xc0000000-0xfec00000): no firmware can map it")
    mem64 = BarSpace(mem=GiB, large=[Bar(function="0000:05:00.0", index=0, size=GiB, kind=BarKind.MEM, is64=True)])
    with pytest.raises(UnsupportedError, match="non-prefetchable, so behind a port it sits in the port's 32-bit"):
        topology().root_port("card", bars=mem64)
    assert topology().root_bus_slots("card", bars=mem64) == "pcie.0"  # on the root bus it may go above 4 GiB
    assert topology().root_port("ok", bars=BarSpace(mem=512 * MiB, large=[
        Bar(function="0000:05:00.0", index=0, size=512 * MiB, kind=BarKind.MEM)])) == "rp0"


def test_a_64_bit_bar_beyond_what_the_guest_can_address_is_refused() -> None:
    huge = Bar(function="0000:07:00.0", index=2, size=1 << 51, kind=BarKind.PREF, is64=True)
    with pytest.raises(UnsupportedError, match=r"BAR 2 of 0000:07:00.0 \(2048 TiB, 64-bit prefetchable\) cannot be "
                                               r"mapped: aligned to its size above 4 GiB it needs 52 physical"):
        QemuTarget(SandboxSettings(values={"firmware": "OVMF.fd"})).topology.root_port(
            "x", bars=BarSpace(pref64=1 << 51, large=[huge]))
    assert topology().root_port("x", bars=BarSpace(pref64=1 << 51, large=[huge])) == "rp0"  # SeaBIOS: 52 bits


def test_a_large_bar_cannot_be_hot_plugged_onto_a_switch_port_which_reserves_no_window() -> None:
    with pytest.raises(UnsupportedError, match=r"^gpu: hot_plug_vfio: BAR 2 of 0000:41:00.0 \(256 GiB, 64-bit "
                                               r"prefetchable\) needs a window larger than the firmware's default"):
        topology().switch_port("gpu", field="hot_plug_vfio", bars=h200(), hotplug=True)
    topo = topology()
    assert topo.switch_port("gpu", bars=h200()) == "swdp0"  # cold: the firmware sizes the switch's windows
    (window,) = topo.mmio64_ranges()
    assert (window.owner, window.size, window.devices) == ("swrp0", 512 * GiB, ("gpu",))


# --- NUMA: pxb-pcie per guest node ----------------------------------------------------------------
def numa_topology() -> PcieTopology:
    return QemuTarget(SandboxSettings(values={"enable_numa": True})).topology


def test_root_ports_of_devices_on_host_numa_nodes_go_behind_their_guest_nodes_pxb() -> None:
    topo = numa_topology()
    assert topo.root_port("nic") == "rp0"  # no host node: stays on pcie.0
    assert topo.root_port("gpu-a", numa_node=1) == "rp1"
    assert topo.root_port("gpu-b", numa_node=0) == "rp2"
    assert topo.root_port("gpu-c", numa_node=1) == "rp3"
    assert topo.numa_ports() == [("rp1", 1, ("gpu-a",)), ("rp2", 0, ("gpu-b",)), ("rp3", 1, ("gpu-c",))]
    assert topo.bind_numa({0: 0, 1: 1}, mapping="m") == {"rp1": "pxb-numa1", "rp2": "pxb-numa0", "rp3": "pxb-numa1"}
    assert rendered(topo) == [
        ["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1"],
        ["pxb-pcie", "id=pxb-numa1", "bus=pcie.0", "bus_nr=64", "numa_node=1"],  # Kata's: 0x20 * (node + 1)
        ["pcie-root-port", "id=rp1", "bus=pxb-numa1", "chassis=2", "slot=2"],
        ["pxb-pcie", "id=pxb-numa0", "bus=pcie.0", "bus_nr=32", "numa_node=0"],
        ["pcie-root-port", "id=rp2", "bus=pxb-numa0", "chassis=3", "slot=3"],
        ["pcie-root-port", "id=rp3", "bus=pxb-numa1", "chassis=4", "slot=4"],
    ]
    assert topo.describe("gpu-c")[:2] == [
        "pxb-numa1: pxb-pcie on pcie.0 (the root bus of guest NUMA node 1, bus_nr 64)",
        "rp3: pcie-root-port on pxb-numa1 (chassis 4; behind pxb-numa1, the pxb-pcie of guest NUMA node 1)"]
    # without guest NUMA the host node is ignored
    plain = topology()
    plain.root_port("gpu", numa_node=1)
    assert plain.numa_ports() == []


def test_a_device_on_a_host_node_no_guest_node_covers_is_refused_naming_it() -> None:
    topo = numa_topology()
    topo.root_port("gpu", numa_node=3)
    with pytest.raises(UnsupportedError) as exc:
        topo.bind_numa({0: 0, 1: 1}, mapping="numa_mapping: guest 0 = host 0, guest 1 = host 1")
    assert (exc.value.device, exc.value.field) == ("gpu", "numa_mapping")
    assert "sits on host NUMA node 3, which no guest NUMA node covers (numa_mapping: guest 0 = host 0" in str(exc.value)
    far = numa_topology()
    far.root_port("gpu", numa_node=7)
    with pytest.raises(UnsupportedError, match=r"pxb-pcie for guest NUMA node 7, whose bus number 0x20 \* 8 would"):
        far.bind_numa({7: 7}, mapping="m")


def test_describe_says_where_a_device_went_and_the_limits() -> None:
    topo = topology()
    topo.root_port("gpu", bars=h200(), hotplug=True)
    topo.bridge_slots("nic", 2)
    (port, limits) = topo.describe("gpu")
    assert port.startswith("rp0: pcie-root-port on pcie.0 (chassis 1; reserves pref64-reserve=512 GiB + 46 MiB)")
    assert limits.startswith("limits: pcie.0 has 30 free slots, 2 used; 2 of 16 ports and bridges on it")
    assert topo.describe("nic")[0] == "bp0: pci-bridge on pcie.0 (chassis 2; slots [1, 2] of 1-30 in use)"
    assert topo.describe("nobody") == []


def test_the_qemu_backend_names_a_root_port_as_the_topology_does() -> None:
    """``vmdev.backends.qemu.ROOT_PORT`` is written out so that the backend need not import the
    topology; a running VM's ports and the libvirt backend match it against the topology's kinds."""
    from vmdev.backends.qemu import ROOT_PORT
    from vmdev.backends.qemu_pcie import PORT_KINDS

    assert ROOT_PORT == NodeKind.ROOT_PORT.value == PORT_KINDS[NodeKind.ROOT_PORT]
