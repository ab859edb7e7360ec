"""The generic PCIe topology of QemuTarget: Kata's names, one chassis numbering, QEMU's limits."""

from __future__ import annotations

import pytest

from vmdev.backends.clh import ClhTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.pcie import NodeKind, PcieTopology
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
