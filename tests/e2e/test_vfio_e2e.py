"""vmdev-vfio on a real kernel's IOMMU groups, and real passthrough into a nested guest.

One L1 guest (see ``vfio_support``) runs the real ``vmdev`` inside itself on its real sysfs: it
refuses a group that a host driver holds, binds the functions to vfio-pci, plans every group
with each port kind and hands each plan's QEMU options to the host's QEMU as a nested (L2),
firmware-only guest. QEMU opens the real VFIO groups; the L2 firmware and QEMU's own PCI tree
show the passed-through functions with their real vendor:device ids where the plan put them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l1_support import l1_or_fail, planned
from vfio_support import BRIDGE_BDF, L1_FUNCTIONS, PLAN_CONFIGS, L1Run, run_l1
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.qemu import split_opts
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_rig import Rig
from vmdev_vfio.testing import (
    ap_matrix_device,
    build_l1_host,
    cdev_request,
    group_request,
    iommu_group_member,
    mdev_device,
    vfio_group,
)


@pytest.fixture(scope="module")
def l1(tmp_path_factory: pytest.TempPathFactory) -> L1Run:
    """The L1 run, once for this module (about a minute under TCG)."""
    return l1_or_fail("VFIO real-kernel", lambda: run_l1(tmp_path_factory.mktemp("vfio-l1")),
                      kernels=("generic",))


def vfio_devices(plan_data: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in plan_data["devices"] if d["kind"] == "vfio"]


def pci_tree(query_pci: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """QEMU's PCI tree (query-pci) as qdev id -> parent port, function, vendor:device."""
    found: dict[str, dict[str, Any]] = {}

    def walk(devices: list[dict[str, Any]], parent: str) -> None:
        for device in devices:
            qdev = device.get("qdev_id") or f"{device['bus']:02x}:{device['slot']:02x}.{device['function']}"
            found[qdev] = {"parent": parent, "slot": device["slot"], "function": device["function"],
                           "ids": f"0x{device['id']['vendor']:04x}:0x{device['id']['device']:04x}"}
            walk(device.get("pci_bridge", {}).get("devices", []), qdev)

    for bus in query_pci["return"]:
        walk(bus["devices"], "pcie.0")
    return found


# --- the real kernel's sysfs, read by vmdev running inside it ---------------------------------------
def test_the_l1_kernel_has_the_machine_bound_to_vfio_pci(l1: L1Run) -> None:
    after = l1.result["pci_after"]
    assert l1.result["uname"].endswith("-amd64")
    for bdf, (vendor, device, pcie, _) in L1_FUNCTIONS.items():
        facts = after[bdf]
        assert (facts["vendor"], facts["device"], facts["driver"]) == (vendor, device, "vfio-pci")
        assert facts["config_size"] == (4096 if pcie else 256)
    assert l1.result["pci_before"]["0000:00:03.0"]["driver"] == "e1000e"
    assert l1.result["pci_before"]["0000:01:00.0"]["driver"] == "virtio-pci"
    # the devices behind the conventional bridge share the bridge's group
    assert after["0000:03:01.0"]["iommu_group"] == after["0000:03:02.0"]["iommu_group"] == \
        after[BRIDGE_BDF]["iommu_group"]


def test_vmdev_plans_every_real_group_with_the_kernels_facts(l1: L1Run) -> None:
    after = l1.result["pci_after"]
    data = planned(l1, "root-port")
    devices = vfio_devices(data)
    groups = {after[bdf]["iommu_group"] for bdf in L1_FUNCTIONS}
    assert sorted(d["iommu_group"] for d in devices) == sorted(groups, key=int)
    assert sorted(l1.result["dev_vfio"]) == sorted([*groups, "vfio"])
    seen = {}
    for device in devices:
        assert device["host_path"] == f"/dev/vfio/{device['iommu_group']}"  # resolved from the real major:minor
        assert device["drivers"] == {f["bdf"]: "vfio-pci" for f in device["functions"]}
        for function in device["functions"]:
            facts = after[function["bdf"]]
            vendor, dev_id, pcie, _ = L1_FUNCTIONS[function["bdf"]]
            assert (function["vendor_id"], function["device_id"], function["class"]) == (
                facts["vendor"], facts["device"], facts["class"])
            assert (function["vendor_id"], function["device_id"], function["is_pcie"]) == (vendor, dev_id, pcie)
            assert facts["iommu_group"] == device["iommu_group"]
            seen[function["bdf"]] = device
    assert set(seen) == set(L1_FUNCTIONS)
    bridged = seen["0000:03:01.0"]
    assert [f["bdf"] for f in bridged["functions"]] == ["0000:03:01.0", "0000:03:02.0"]
    assert bridged["skipped"] == [{"bdf": BRIDGE_BDF, "class": "0x060400", "reason": "PCI-to-PCI bridge"}]
    control = [d for d in data["devices"] if d["container_path"] == "/dev/vfio/vfio"]
    assert [(d["kind"], d["host_path"]) for d in control] == [("generic", "/dev/vfio/vfio")]


def test_a_group_held_by_a_host_driver_is_refused_and_the_doctor_says_why(l1: L1Run) -> None:
    group = l1.result["e1000e_group"]
    refused = l1.result["wrong_driver_plan"]
    assert refused["rc"] == 1 and refused["stdout"] == ""
    assert refused["stderr"].startswith(f"vmdev: error: /dev/vfio/{group}: driver: IOMMU group {group}: "
                                        "0000:00:03.0 (0x8086:0x10d3 class 0x020000) is bound to e1000e, "
                                        "not vfio-pci")
    before = l1.result["doctor_before"]
    assert before["rc"] == 1
    (report,) = json.loads(before["stdout"])
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert set(failed) == {"0000:00:03.0", "viable", "node"}
    assert failed["viable"] == f"group {group} is not viable: host drivers use 0000:00:03.0 (e1000e)"


def test_the_doctor_finds_the_host_ready_after_binding(l1: L1Run) -> None:
    doctor = l1.result["doctor"]
    assert doctor["rc"] == 0, doctor["stdout"]
    reports = json.loads(doctor["stdout"])
    assert all(r["ready"] for r in reports) and len(reports) == 4
    checks = {c["name"]: c["detail"] for r in reports for c in r["checks"]}
    assert checks["iommu"].endswith("(dmar0)")
    assert checks[BRIDGE_BDF].endswith("PCI-to-PCI bridge: skipped")


# --- real passthrough: the plans' options given to QEMU inside L1 ------------------------------
@pytest.mark.parametrize("name", list(PLAN_CONFIGS))
def test_l2_qemu_puts_the_real_functions_where_the_plan_says(l1: L1Run, name: str) -> None:
    data = planned(l1, name)
    session = l1.result["l2"][name]
    assert session["rc"] == 0 and session["firmware_done"], session["stderr"]
    assert all(reply is not None and reply.get("return") == {} for reply in session["replies"]), session["replies"]
    tree = pci_tree(session["query_pci"])
    placements = [p for d in vfio_devices(data) for p in d["placement"]]
    assert len(placements) == len(L1_FUNCTIONS)
    for place in placements:
        vendor, device, _, _ = L1_FUNCTIONS[place["bdf"]]
        node = tree[place["id"]]
        assert node["ids"] == f"{vendor}:{device}"  # QEMU read them from the real function
        assert node["parent"] == place["bus"]
        slot, _, function = place["addr"].partition(".")
        assert (node["slot"], node["function"]) == ((int(slot, 16), int(function)) if slot else (0, 0))


def test_the_nested_guests_firmware_scans_the_passed_through_functions(l1: L1Run) -> None:
    log = l1.result["l2"]["root-port"]["log"]
    scanned = {line.split("id=")[1] for line in log.splitlines() if line.startswith("PCI: init bdf=")}
    for vendor, device, _, _ in L1_FUNCTIONS.values():
        assert f"{vendor[2:]}:{device[2:]}" in scanned
    # the two functions of the bridged group are one multi-function device on one root port
    lines = [line for line in log.splitlines() if line.startswith("PCI: init bdf=")]
    edu_bus = next(line for line in lines if line.endswith("1b36:0005")).split("=")[1][:2]
    assert f"PCI: init bdf={edu_bus}:00.0 id=1234:11e8" in lines


# --- QEMU's own property lists --------------------------------------------------------------------
def fake_plans(tmp_path: Path) -> list[Plan]:
    """Plans over the L1 machine's sysfs (a fake copy) covering every rendering branch."""
    pm = PluginManager(LoadPolicy(only=("vmdev-vfio",))).load()
    host = build_l1_host(FakeHost(tmp_path / "legacy"))
    uuid = "f79944e4-5a3d-11e8-99ce-479cbab002e4"
    mdev_device(host, uuid, "0000:02:00.0", iommu_group=20, vfio_node=(246, 20))
    node = host.sysfs / "devices/pci0000:00/0000:00:03.0/resource"
    node.write_text("0x00000000f0000000 0x00000000f0ffffff 0x0000000000040200\n"
                    "0x0000380000000000 0x00003807ffffffff 0x000000000014220c\n")
    groups = [group_request(g) for g in (2, 5, 7, 8)] + [{"path": "/dev/vfio/20", "type": "c", "major": 246,
                                                         "minor": 20}]
    iommufd = build_l1_host(FakeHost(tmp_path / "iommufd"), iommufd=True)
    cases: list[tuple[FakeHost, list[dict[str, Any]], dict[str, Any]]] = [
        (host, groups, {}),
        (host, groups, {"options": {"cold_plug_vfio": "root-port"}}),
        (host, groups, {"hotplug": True, "options": {"hot_plug_vfio": "root-port"}}),
        # cold: a 32 GiB BAR cannot be hot-plugged behind a switch port (no window reservation there)
        (host, groups, {"options": {"cold_plug_vfio": "switch-port", "pcie_switch_port": 8}}),
        (host, groups, {"hotplug": True, "options": {"hot_plug_vfio": "bridge-port"}}),
        (host, groups, {"machine_type": "pc", "hotplug": True}),
        (iommufd, [cdev_request(n) for n in range(5)], {"options": {"cold_plug_vfio": "root-port"}}),
    ]
    return [plan(parse_spec({"linux": {"devices": devices}}), SandboxSettings(**settings),
                 host=fake.context(), plugins=pm) for fake, devices, settings in cases]


def rendered_options(plans: list[Plan]) -> Iterator[tuple[str, str, str]]:
    """(kind, driver, property) for every -device/-object option and QMP device_add argument."""
    generic = {"id", "bus", "driver", "qom-type"}
    for result in plans:
        assert result.qemu is not None
        argv = list(result.qemu.argv)
        for index, arg in enumerate(argv):
            if arg in ("-device", "-object"):
                head, *props = split_opts(argv[index + 1])
                for prop in props:
                    key = prop.partition("=")[0]
                    if key not in generic:
                        yield arg, head, key
        for command in result.qemu.hotplug:
            args = dict(command.arguments)
            kind = "-device" if command.execute == "device_add" else "-object"
            head = str(args.get("driver") or args.get("qom-type"))
            for key in args:
                if key not in generic:
                    yield kind, head, key


def test_every_rendered_vfio_option_is_a_property_qemu_has(rig: Rig, tmp_path: Path) -> None:
    options = set(rendered_options(fake_plans(tmp_path)))
    drivers = {head for kind, head, _ in options if kind == "-device"}
    assert drivers == {"vfio-pci", "pcie-root-port", "xio3130-downstream", "pci-bridge"}
    assert {(kind, head) for kind, head, _ in options if kind == "-object"} == set()  # iommufd has no props
    known = {driver: {p["name"] for p in rig.device_properties(driver)} for driver in drivers}
    iommufd = {(h, k) for _, h, k in options if k == "iommufd"}
    missing = {(h, k) for _, h, k in options if k not in known[h]} - iommufd
    assert missing == set()
    assert {("vfio-pci", "sysfsdev"), ("vfio-pci", "multifunction"), ("vfio-pci", "addr"),
            ("pcie-root-port", "chassis"), ("pcie-root-port", "pref64-reserve"), ("pcie-root-port", "mem-reserve"),
            ("pci-bridge", "shpc"), ("pci-bridge", "chassis_nr")} <= {(h, k) for _, h, k in options}
    # IOMMUFD needs QEMU >= 9.0: this QEMU (7.2) has neither the property nor the object, which
    # is why the plan says so ("requires") instead of pretending
    assert iommufd == {("vfio-pci", "iommufd")}
    assert "iommufd" not in known["vfio-pci"]


def test_s390x_vfio_ap_and_vfio_ccw_options_exist(tmp_path: Path) -> None:
    s390 = Rig(qemu="qemu-system-s390x")
    if shutil.which(s390.qemu) is None:
        pytest.fail("qemu-system-s390x is missing: apt-get install qemu-system-misc", pytrace=False)
    pm = PluginManager(LoadPolicy(only=("vmdev-vfio",))).load()
    host = FakeHost(tmp_path / "s390")
    ap_matrix_device(host, "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e", ["05.001f"], iommu_group=0,
                     vfio_node=(511, 0))
    host.write("devices/css0/0.0.0313/uevent")
    (host.sysfs / "devices/css0/0.0.0313/c1a4d0e9-5c2b-4a36-9a3b-6f2a1d0e7c55").mkdir()
    iommu_group_member(host, 1, "c1a4d0e9-5c2b-4a36-9a3b-6f2a1d0e7c55",
                       "devices/css0/0.0.0313/c1a4d0e9-5c2b-4a36-9a3b-6f2a1d0e7c55")
    vfio_group(host, 1, 511, 1)
    devices = [{"path": f"/dev/vfio/{g}", "type": "c", "major": 511, "minor": g} for g in (0, 1)]
    result = plan(parse_spec({"linux": {"devices": devices}}), SandboxSettings(machine_type="s390-ccw-virtio"),
                  host=host.context(), plugins=pm)
    assert result.qemu is not None
    heads = [split_opts(a) for a in result.qemu.argv if a.startswith("vfio-")]
    assert [h[0] for h in heads] == ["vfio-ap", "vfio-ccw"]
    for head, *props in heads:
        known = {p["name"] for p in s390.device_properties(head)}
        assert {p.partition("=")[0] for p in props} - {"id"} <= known


# --- the QEMU behaviour the unplug plan relies on (no VFIO needed) ----------------------------------
def test_one_device_del_of_function_0_removes_a_whole_multi_function_slot(rig: Rig) -> None:
    """The plan unplugs a multi-function group on a root port with one device_del of function 0,
    and hot-plugs function 0 last: proven here with emulated functions in a real guest."""
    argv = ["-machine", "q35", "-m", "256", "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1"]
    with rig.start(argv, wait_seconds=60) as guest:
        guest.execute("device_add", {"driver": "e1000e", "id": "fn1", "bus": "rp0", "addr": "00.1"})
        time.sleep(3)  # function 1 alone stays hidden: the guest sees the slot when function 0 arrives
        assert all(p.bdf[5:7] == "00" for report in guest.reports() for p in report.pci)
        guest.execute("device_add", {"driver": "virtio-rng-pci", "id": "fn0", "bus": "rp0", "addr": "00.0",
                                     "multifunction": True})
        seen = guest.wait_report(lambda r: sum(p.bdf[5:7] != "00" for p in r.pci) == 2, 30)
        assert {(p.bdf[-4:], p.vendor, p.device) for p in seen.pci if p.bdf[5:7] != "00"} == {
            ("00.0", 0x1AF4, 0x1044), ("00.1", 0x8086, 0x10D3)}
        guest.execute("device_del", {"id": "fn0"})
        guest.wait_event("DEVICE_DELETED", 30, {"device": "fn0"})
        guest.wait_event("DEVICE_DELETED", 5, {"device": "fn1"})
        gone = guest.wait_report(lambda r: all(p.bdf[5:7] == "00" for p in r.pci), 30)
        assert all(p.bdf.startswith("0000:00:") for p in gone.pci)
