"""Guest PCI paths replayed from QEMU command lines (QEMU's slot choice, bus by bus)."""

from __future__ import annotations

import pytest

from vmdev_cdi.pcipath import guest_pci_paths, place_devices


def dev(text: str) -> list[str]:
    return ["-device", text]


def test_root_ports_take_the_lowest_free_slots_after_the_host_bridge() -> None:
    argv = ["-machine", "q35", *dev("pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1"),
            *dev("pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2"), *dev("vfio-pci,host=0000:02:00.0,id=f0,bus=rp1"),
            *dev("virtio-rng-pci,rng=rng0,id=virtio-rng0")]
    placed = place_devices(argv, "q35")
    assert placed is not None
    assert {k: (v.bus, v.slot) for k, v in placed.items()} == {
        "rp0": ("pcie.0", 1), "rp1": ("pcie.0", 2), "f0": ("rp1", 0), "virtio-rng0": ("pcie.0", 3)}
    assert guest_pci_paths(argv, "q35", [{"id": "f0", "bus": "rp1", "addr": ""}]) == ["02/00"]


def test_functions_of_one_slot_share_the_path() -> None:
    argv = [*dev("pcie-root-port,id=rp0,bus=pcie.0"), *dev("vfio-pci,id=a,bus=rp0,addr=00.0,multifunction=on"),
            *dev("vfio-pci,id=b,bus=rp0,addr=00.1")]
    assert guest_pci_paths(argv, "q35", [{"id": "a", "bus": "rp0", "addr": "00.0"},
                                         {"id": "b", "bus": "rp0", "addr": "00.1"}]) == ["01/00", "01/00"]


def test_bridge_slots_and_switch_ports() -> None:
    argv = [*dev("virtio-blk-pci,id=disk0,drive=d"), *dev("pci-bridge,id=bp0,bus=pcie.0,chassis_nr=1,shpc=off"),
            *dev("pcie-root-port,id=swrp0,bus=pcie.0,chassis=2,slot=2"), *dev("x3130-upstream,id=swup0,bus=swrp0"),
            *dev("xio3130-downstream,id=swdp0,bus=swup0,chassis=3,slot=3"),
            *dev("xio3130-downstream,id=swdp1,bus=swup0,chassis=4,slot=4")]
    assert guest_pci_paths(argv, "q35", [{"id": "x", "bus": "bp0", "addr": "03.0"},
                                         {"id": "y", "bus": "swdp1", "addr": ""}]) == ["02/03", "03/00/01/00"]


def test_a_function_on_the_root_bus_is_found_by_id_and_explicit_addresses_are_kept() -> None:
    argv = [*dev("virtio-rng-pci,id=r,addr=05.0"), *dev("vfio-pci,host=0000:00:03.0,id=f"),
            *dev("nvdimm,id=nv0,memdev=m"), *dev("virtio-blk-device,id=mmio0"), *dev("e1000,id=n,addr=0x2")]
    assert guest_pci_paths(argv, "q35", [{"id": "f", "bus": "", "addr": ""}]) == ["01"]
    placed = place_devices(argv, "q35")
    assert placed is not None and placed["n"].slot == 2 and "nv0" not in placed


def test_pc_machines_have_the_piix3_at_slot_1() -> None:
    assert guest_pci_paths([*dev("vfio-pci,id=f")], "pc", [{"id": "f", "bus": ""}]) == ["02"]


def test_commas_in_values_are_doubled_not_separators() -> None:
    placed = place_devices([*dev("virtio-blk-pci,drive=a,,b,id=x")], "q35")
    assert placed is not None and placed["x"].slot == 1


@pytest.mark.parametrize(
    ("argv", "machine", "placement"),
    [
        ([*dev("some-unknown-thing,id=u"), *dev("vfio-pci,id=f")], "q35", [{"id": "f", "bus": ""}]),
        ([*dev("vfio-pci,id=f")], "microvm", [{"id": "f", "bus": ""}]),
        ([*dev("vfio-pci,id=f")], "s390-ccw-virtio", [{"id": "f", "bus": ""}]),
        ([*dev("vfio-pci,id=f,bus=rp9")], "q35", [{"id": "f", "bus": "rp9"}]),
        ([], "q35", [{"id": "missing", "bus": ""}]),
    ],
)
def test_an_uncertain_layout_gives_no_path_rather_than_a_wrong_one(argv: list[str], machine: str, placement: list[dict[str, str]]) -> None:
    assert guest_pci_paths(argv, machine, placement) is None
