"""QEMU rendering: ports, multi-function slots, hot plug order, limits, IOMMUFD, AP, escaping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vmdev.backend import RenderContext
from vmdev.errors import ConfigError, UnsupportedError
from vmdev.planner import Built, Pipeline
from vmdev.qemu import QemuAttach, split_opts
from vmdev.state import PortRecord
from vmdev.testing import FakeHost
from vmdev_vfio.testing import (
    ap_matrix_device,
    build_all,
    cdev_request,
    group_request,
    mdev_device,
    vfio_group,
)


def devices_args(result: Any, prefix: str = "") -> list[list[str]]:
    argv = list(result.qemu.argv)
    found = [split_opts(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]
    return [d for d in found if d[0].startswith(prefix)]


def placement(result: Any) -> list[tuple[str, str, str]]:
    data = result.to_json()
    return [(p["bdf"], p["bus"], p["addr"]) for d in data["devices"] if d["kind"] == "vfio"
            for p in d["placement"]]


def qmp(commands: Any) -> list[dict[str, Any]]:
    return [c.to_json() for c in commands]


def test_no_port_cold_plug_goes_onto_the_root_bus(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(5), group_request(2))
    fid = {d.container_path: d.device.id for d in result.devices}
    assert devices_args(result) == [
        ["vfio-pci", "host=0000:03:01.0", f"id={fid['/dev/vfio/5']}-1"],
        ["vfio-pci", "host=0000:03:02.0", f"id={fid['/dev/vfio/5']}-2"],
        ["vfio-pci", "host=0000:00:03.0", f"id={fid['/dev/vfio/2']}-0"],
    ]
    assert result.qemu.hotplug == () and not any(d.hotplug for d in result.devices)


def test_root_ports_hold_one_slot_and_a_group_becomes_a_multi_function_device(
        l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(5), group_request(7), cold_plug_vfio="root-port")
    assert devices_args(result, "pcie-root-port") == [
        ["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1"],
        ["pcie-root-port", "id=rp1", "bus=pcie.0", "chassis=2", "slot=2"],
    ]
    vfio = devices_args(result, "vfio-pci")
    assert [a[1:2] + a[3:] for a in vfio] == [
        ["host=0000:03:01.0", "bus=rp0", "addr=00.0", "multifunction=on"],
        ["host=0000:03:02.0", "bus=rp0", "addr=00.1"],
        ["host=0000:01:00.0", "bus=rp1"],
    ]
    argv = list(result.qemu.argv)
    assert argv.index("pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2") < argv.index(
        "vfio-pci,host=0000:03:01.0," + vfio[0][2] + ",bus=rp0,addr=00.0,multifunction=on")


def test_hot_plug_adds_function_0_last_and_unplugs_the_slot_at_once(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(5), group_request(8), hotplug=True, hot_plug_vfio="root-port")
    g5, g8 = (d.device for d in result.devices)
    assert qmp(result.qemu.hotplug) == [
        {"execute": "device_add", "arguments": {"driver": "vfio-pci", "host": "0000:03:02.0",
                                                "id": f"{g5.id}-2", "bus": "rp0", "addr": "00.1"}},
        {"execute": "device_add", "arguments": {"driver": "vfio-pci", "host": "0000:03:01.0",
                                                "id": f"{g5.id}-1", "bus": "rp0", "addr": "00.0",
                                                "multifunction": True}},
        {"execute": "device_add", "arguments": {"driver": "vfio-pci", "host": "0000:02:00.0",
                                                "id": f"{g8.id}-0", "bus": "rp1"}},
    ]
    assert qmp(result.qemu.unplug) == [
        {"execute": "device_del", "arguments": {"id": f"{g8.id}-0"}},
        {"execute": "device_del", "arguments": {"id": f"{g5.id}-1"}},  # QEMU removes 00.1 with it
    ]
    assert result.to_json()["devices"][0]["unplug_removes"] == [f"{g5.id}-1", f"{g5.id}-2"]
    assert all(d.hotplug for d in result.devices)
    assert not devices_args(result, "vfio-pci")  # only the ports are on the command line
    assert len(devices_args(result, "pcie-root-port")) == 2


def test_cold_plug_vfio_wins_over_a_hot_plug_plan(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(2), hotplug=True, cold_plug_vfio="root-port")
    assert result.qemu.hotplug == ()
    assert placement(result) == [("0000:00:03.0", "rp0", "")]


def test_switch_ports(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(2), group_request(8), cold_plug_vfio="switch-port",
                       pcie_switch_port=3)
    assert devices_args(result)[:5] == [
        ["pcie-root-port", "id=swrp0", "bus=pcie.0", "chassis=1", "slot=1"],
        ["x3130-upstream", "id=swup0", "bus=swrp0"],
        ["xio3130-downstream", "id=swdp0", "bus=swup0", "chassis=2", "slot=2"],
        ["xio3130-downstream", "id=swdp1", "bus=swup0", "chassis=3", "slot=3"],
        ["xio3130-downstream", "id=swdp2", "bus=swup0", "chassis=4", "slot=4"],
    ]
    assert placement(result) == [("0000:00:03.0", "swdp0", ""), ("0000:02:00.0", "swdp1", "")]
    (ports,) = [d for d in result.to_json()["devices"] if d["kind"] == "pcie-ports"]
    assert (ports["port"], ports["count"], ports["spare"]) == ("switch-port", 3, ["swdp2"])


def test_bridge_port_puts_a_group_on_consecutive_slots_of_one_bridge(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(2), group_request(5), hotplug=True, hot_plug_vfio="bridge-port")
    assert devices_args(result) == [["pci-bridge", "id=bp0", "bus=pcie.0", "chassis_nr=1", "shpc=off"]]
    assert placement(result) == [("0000:00:03.0", "bp0", "01.0"), ("0000:03:01.0", "bp0", "02.0"),
                                 ("0000:03:02.0", "bp0", "03.0")]
    assert [c.arguments["addr"] for c in result.qemu.hotplug] == ["01.0", "02.0", "03.0"]
    assert len(result.qemu.unplug) == 3  # one device_del per slot


def test_pcie_root_port_keeps_spare_ports_and_hot_plug_ports_share_the_numbering(
        l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(7), hot_plug_vfio="root-port", pcie_root_port=3)
    assert [a[1] for a in devices_args(result, "pcie-root-port")] == ["id=rp0", "id=rp1", "id=rp2"]
    assert placement(result) == [("0000:01:00.0", "rp0", "")]
    ports = [d for d in result.to_json()["devices"] if d["kind"] == "pcie-ports"]
    assert ports[0]["spare"] == ["rp1", "rp2"]
    assert make_plan(l1_host, group_request(7), pcie_root_port=3).to_json()["devices"][-1]["kind"] == "vfio"


def test_hot_plug_onto_pcie_0_is_refused_but_works_on_pc(l1_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError, match=r"cannot hot-plug devices onto pcie\.0") as exc:
        make_plan(l1_host, group_request(2), hotplug=True)
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/2", "hot_plug_vfio")
    result = make_plan(l1_host, group_request(2), hotplug=True, machine_type="pc")
    assert qmp(result.qemu.hotplug)[0]["arguments"] == {
        "driver": "vfio-pci", "host": "0000:00:03.0", "id": result.devices[0].id + "-0"}


def test_pc_has_bridges_but_no_pcie_ports(l1_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError, match="machine pc has no PCIe root complex") as exc:
        make_plan(l1_host, group_request(2), machine_type="pc", cold_plug_vfio="root-port")
    assert exc.value.field == "cold_plug_vfio"
    result = make_plan(l1_host, group_request(2), machine_type="pc", cold_plug_vfio="bridge-port")
    assert devices_args(result, "pci-bridge") == [["pci-bridge", "id=bp0", "bus=pci.0", "chassis_nr=1", "shpc=off"]]


def test_microvm_has_no_pci_bus(l1_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError, match="microvm has no PCI bus for VFIO passthrough"):
        make_plan(l1_host, group_request(2), machine_type="microvm")


def many_groups(host: FakeHost, count: int, first: int = 20) -> list[dict[str, Any]]:
    requests = []
    for n in range(count):
        group = first + n
        host.pci_function(f"0000:{group:02x}:00.0", driver="vfio-pci", iommu_group=group, config_size=4096)
        vfio_group(host, group, 246, group)
        requests.append({"path": f"/dev/vfio/{group}", "type": "c", "major": 246, "minor": group})
    return requests


def test_sixteen_root_ports_fit_the_io_space_seventeen_do_not(fake_host: FakeHost, make_plan) -> None:
    requests = many_groups(fake_host, 17)
    assert len(devices_args(make_plan(fake_host, *requests[:16], cold_plug_vfio="root-port"),
                            "pcie-root-port")) == 16
    with pytest.raises(UnsupportedError, match="more than 16 PCIe root ports do not fit QEMU's I/O space") as exc:
        make_plan(fake_host, *requests, cold_plug_vfio="root-port")
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/36", "cold_plug_vfio")


def test_sixteen_switch_ports(fake_host: FakeHost, make_plan) -> None:
    requests = many_groups(fake_host, 17)
    with pytest.raises(UnsupportedError, match="more than 16 PCIe switch downstream ports"):
        make_plan(fake_host, *requests, cold_plug_vfio="switch-port")


def test_a_bridge_holds_30_slots_then_a_second_bridge_is_added(fake_host: FakeHost, make_plan) -> None:
    result = make_plan(fake_host, *many_groups(fake_host, 31), cold_plug_vfio="bridge-port")
    assert [a[1] for a in devices_args(result, "pci-bridge")] == ["id=bp0", "id=bp1"]
    assert placement(result)[29][1:] == ("bp0", "1e.0") and placement(result)[30][1:] == ("bp1", "01.0")


def test_the_root_bus_has_30_free_slots(fake_host: FakeHost, make_plan) -> None:
    requests = many_groups(fake_host, 31)
    assert len(devices_args(make_plan(fake_host, *requests[:30]), "vfio-pci")) == 30
    with pytest.raises(UnsupportedError, match=r"pcie\.0 has 32 slots and 30 free ones") as exc:
        make_plan(fake_host, *requests)
    assert exc.value.device == "/dev/vfio/50"


def big_group(host: FakeHost, functions: int) -> dict[str, Any]:
    for fn in range(functions):
        host.pci_function(f"0000:60:{fn // 8:02x}.{fn % 8}", driver="vfio-pci", iommu_group=60)
    vfio_group(host, 60, 246, 60)
    return {"path": "/dev/vfio/60", "type": "c", "major": 246, "minor": 60}


def test_a_port_slot_takes_at_most_8_functions(fake_host: FakeHost, make_plan) -> None:
    request = big_group(fake_host, 9)
    with pytest.raises(UnsupportedError, match="has 9 functions; a root-port takes one slot of 8 functions: "
                                               "use bridge-port"):
        make_plan(fake_host, request, cold_plug_vfio="root-port")
    assert len(placement(make_plan(fake_host, request, cold_plug_vfio="bridge-port"))) == 9


def test_a_group_larger_than_a_bridge(fake_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError, match="needs 31 slots on one PCI bridge, which has 30"):
        make_plan(fake_host, big_group(fake_host, 31), cold_plug_vfio="bridge-port")


def test_groups_and_cdevs_never_mix(l1_iommufd_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError, match="uses the VFIO iommufd backend but /dev/vfio/2 uses the group "
                                               "backend") as exc:
        make_plan(l1_iommufd_host, group_request(2, major=250), cdev_request(4))
    assert exc.value.device == "/dev/vfio/devices/vfio4"


def test_a_function_is_passed_once(
        l1_iommufd_host: FakeHost, make_plan, start: Callable[..., Pipeline]) -> None:
    # a plan refuses the second request for the same numbers before rendering (the core's rule)...
    with pytest.raises(ConfigError, match="is the same device"):
        make_plan(l1_iommufd_host, cdev_request(0), cdev_request(0, path="/dev/other"))
    # ...and the family refuses to render one function twice into one sandbox whatever built it
    pipeline = start(l1_iommufd_host)
    first, second = build_all(pipeline, cdev_request(0), cdev_request(0, path="/dev/other"))
    target = pipeline.target()
    pipeline.render(Built(device=first, plugin="vfio", container_path="/dev/vfio/devices/vfio0", host_path=""),
                    target, hotplug=False)
    with pytest.raises(UnsupportedError, match=r"0000:00:03\.0 is passed twice: /dev/vfio/devices/vfio0 already"):
        pipeline.render(Built(device=second, plugin="vfio", container_path="/dev/other", host_path=""),
                        target, hotplug=False)


def test_iommufd_cold_plug_shares_one_iommufd_object(l1_iommufd_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_iommufd_host, cdev_request(0), cdev_request(4), cold_plug_vfio="root-port")
    argv = list(result.qemu.argv)
    assert argv.count("iommufd,id=iommufd0") == 1 and argv[argv.index("iommufd,id=iommufd0") - 1] == "-object"
    assert [a[-1] for a in devices_args(result, "vfio-pci")] == ["iommufd=iommufd0"] * 2
    assert result.to_json()["devices"][0]["requires"].startswith("QEMU >= 9.0")


def test_iommufd_hot_plug_adds_the_object_first_and_removes_it_last(l1_iommufd_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_iommufd_host, cdev_request(0), cdev_request(4), hotplug=True, hot_plug_vfio="root-port")
    hot, unplug = qmp(result.qemu.hotplug), qmp(result.qemu.unplug)
    assert hot[0] == {"execute": "object-add", "arguments": {"qom-type": "iommufd", "id": "iommufd0"}}
    assert [c["execute"] for c in hot] == ["object-add", "device_add", "device_add"]
    assert all(c["arguments"]["iommufd"] == "iommufd0" for c in hot[1:])
    assert [c["execute"] for c in unplug] == ["device_del", "device_del", "object-del"]


def test_in_a_running_vm_every_cdev_request_carries_the_shared_iommufd_object(
        l1_iommufd_host: FakeHost, start: Callable[..., Pipeline]) -> None:
    # The device manager attaches and detaches them one by one: each must name the object it
    # needs (object-add first, object-del last) so that the manager adds it for the first user
    # and deletes it with the last one; a boot plan runs all at once and has the pair once.
    pipeline = start(l1_iommufd_host, hotplug=True, hot_plug_vfio="root-port")
    devices = build_all(pipeline, cdev_request(0), cdev_request(4))
    ports = [PortRecord(id="rp0", kind="root-port"), PortRecord(id="rp1", kind="root-port")]

    def attaches(context: RenderContext) -> list[QemuAttach]:
        target = pipeline.target(context)
        out = []
        for device in devices:
            attach = pipeline.render(Built(device=device, plugin="vfio", container_path=device.id, host_path=""),
                                     target, hotplug=True).attach
            assert isinstance(attach, QemuAttach)
            out.append(attach)
        return out

    add = {"execute": "object-add", "arguments": {"qom-type": "iommufd", "id": "iommufd0"}}
    delete = {"execute": "object-del", "arguments": {"id": "iommufd0"}}
    live = attaches(RenderContext(live_ports=lambda: ports))
    for attach in live:
        assert (qmp(attach.hotplug)[0], qmp(attach.unplug)[-1]) == (add, delete)
        assert [c.execute for c in attach.hotplug] == ["object-add", "device_add"]
        assert attach.hotplug[1].arguments["iommufd"] == "iommufd0"
    assert [c.arguments["bus"] for a in live for c in a.hotplug[1:]] == ["rp0", "rp1"]
    boot = attaches(RenderContext())
    assert [[c.execute for c in a.hotplug] for a in boot] == [["object-add", "device_add"], ["device_add"]]
    assert [[c.execute for c in a.unplug] for a in boot] == [["device_del", "object-del"], ["device_del"]]


def test_large_bars_reserve_the_hot_plug_ports_windows(fake_host: FakeHost, make_plan) -> None:
    node = fake_host.pci_function("0000:41:00.0", vendor="0x10de", device="0x2330", class_code="0x030200",
                                  driver="vfio-pci", iommu_group=41, config_size=4096)
    (node / "resource").write_text(
        "0x00000000f0000000 0x00000000f0ffffff 0x0000000000040200\n"  # 16 MiB registers
        "0x0000380000000000 0x00003807ffffffff 0x000000000014220c\n"  # 32 GiB prefetchable
    )
    vfio_group(fake_host, 41, 246, 41)
    request = {"path": "/dev/vfio/41", "type": "c", "major": 246, "minor": 41}
    hot = make_plan(fake_host, request, hotplug=True, hot_plug_vfio="root-port")
    # SeaBIOS aligns a reserved window to 2 MiB only: each window also covers the way to an address
    # aligned to its largest BAR (the BAR's size less 2 MiB)
    assert devices_args(hot, "pcie-root-port") == [[
        "pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1",
        f"mem-reserve={(16 << 20) + (16 << 20) - (2 << 20)}", f"pref64-reserve={(32 << 30) * 2 - (2 << 20)}"]]
    cold = make_plan(fake_host, request, cold_plug_vfio="root-port")  # the firmware sizes it at boot
    assert devices_args(cold, "pcie-root-port") == [["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1"]]
    # OVMF rounds a reservation up to a power of two and aligns it to that: the BARs' sum is enough
    ovmf = make_plan(fake_host, request, hotplug=True, hot_plug_vfio="root-port", firmware="/usr/share/OVMF.fd")
    assert devices_args(ovmf, "pcie-root-port")[0][5:] == [f"mem-reserve={16 << 20}", f"pref64-reserve={32 << 30}"]


def test_mediated_device_uses_sysfsdev_and_commas_are_escaped(fake_host: FakeHost, make_plan) -> None:
    fake_host.pci_function("0000:00:02.0", class_code="0x030000", driver="i915", iommu_group=0)
    uuid = "f79944e4-5a3d-11e8-99ce-479cbab002e4"
    node = mdev_device(fake_host, uuid, "0000:00:02.0", iommu_group=12)
    vfio_group(fake_host, 12, 246, 4)
    result = make_plan(fake_host, {"path": "/dev/vfio/12", "type": "c", "major": 246, "minor": 4})
    ((head, sysfsdev, _ident),) = devices_args(result, "vfio-pci")
    assert (head, sysfsdev) == ("vfio-pci", f"sysfsdev={node}")
    comma = FakeHost(fake_host.root.parent / "a,b")
    comma.pci_function("0000:00:02.0", class_code="0x030000", driver="i915", iommu_group=0)
    mdev_device(comma, uuid, "0000:00:02.0", iommu_group=12)
    vfio_group(comma, 12, 246, 4)
    argv = list(make_plan(comma, {"path": "/dev/vfio/12", "type": "c", "major": 246, "minor": 4}).qemu.argv)
    rendered = argv[-1]
    assert ",,b/" in rendered and split_opts(rendered)[1] == f"sysfsdev={comma.sysfs}/devices/pci0000:00/0000:00:02.0/{uuid}"


def ap_request(host: FakeHost) -> tuple[dict[str, Any], str]:
    node = ap_matrix_device(host, "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e", ["05.001f"], iommu_group=0)
    vfio_group(host, 0, 246, 0)
    return {"path": "/dev/vfio/0", "type": "c", "major": 246, "minor": 0}, str(node)


def test_ap_devices_are_vfio_ap_on_s390x_only(fake_host: FakeHost, make_plan) -> None:
    request, node = ap_request(fake_host)
    result = make_plan(fake_host, request, machine_type="s390-ccw-virtio", vfio_mode="vfio",
                       cold_plug_vfio="root-port")
    fid = result.devices[0].id + "-0"
    assert devices_args(result) == [["vfio-ap", f"sysfsdev={node}", f"id={fid}"]]
    assert result.to_json()["devices"][0]["agent_type"] == "vfio-ap-cold"
    hot = make_plan(fake_host, request, machine_type="s390-ccw-virtio", hotplug=True)
    assert qmp(hot.qemu.hotplug) == [{"execute": "device_add", "arguments": {
        "driver": "vfio-ap", "sysfsdev": node, "id": fid}}]
    assert qmp(hot.qemu.unplug) == [{"execute": "device_del", "arguments": {"id": fid}}]
    with pytest.raises(UnsupportedError, match=r"AP .* need an s390x machine"):
        make_plan(fake_host, request)


def test_vfio_mode_names_the_agent_device_type(l1_host: FakeHost, make_plan) -> None:
    assert make_plan(l1_host, group_request(2)).to_json()["devices"][0]["agent_type"] == "vfio-pci-gk"
    assert make_plan(l1_host, group_request(2), vfio_mode="vfio").to_json()["devices"][0][
        "agent_type"] == "vfio-pci"
