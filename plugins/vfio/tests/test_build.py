"""Host side: which requests are VFIO, and what a group or cdev holds (real kernels' sysfs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import DeviceError, ResolveError
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_vfio.device import VfioBackend, VFIODev, VFIODevice, VFIODeviceType
from vmdev_vfio.host import Windows, bridge_kind, parse_resources
from vmdev_vfio.testing import (
    ap_matrix_device,
    build_l1_host,
    cdev_request,
    group_request,
    iommu_group_member,
    mdev_device,
    vfio_group,
)


def vfio_device(result: Any) -> VFIODevice:
    (device,) = [d.device for d in result.devices if d.kind == "vfio"]
    assert isinstance(device, VFIODevice)
    return device


def test_the_plugin_is_found_through_its_entry_point(vmdev_plugins) -> None:
    info = {i.name: i for i in vmdev_plugins("vmdev-vfio").list_plugins()}["vfio"]
    assert info.distribution == "vmdev-vfio"
    assert info.hooks == ("attach_options", "build_device", "check_settings", "device_from_state", "host_facts",
                          "register_lazy_commands", "register_settings", "sandbox_devices")


def test_multi_function_group_behind_a_pci_bridge(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(5))
    device = vfio_device(result)
    (planned,) = result.devices
    assert (planned.host_path, planned.plugin) == ("/dev/vfio/5", "vfio")
    assert (device.backend, device.iommu_group) == (VfioBackend.GROUP, "5")
    assert [(s.bdf, s.class_, s.reason) for s in device.skipped] == [("0000:00:06.0", "0x060400", "PCI-to-PCI bridge")]
    edu, testdev = device.functions
    assert edu == VFIODev(
        id=f"{device.id}-1",  # Kata counts the skipped bridge: entry 0
        type=VFIODeviceType.NORMAL,
        bdf="0000:03:01.0",
        sysfs_dev=str(l1_host.sysfs / "bus/pci/devices/0000:03:01.0"),
        vendor_id="0x1234",
        device_id="0x11e8",
        class_="0x00ff00",
        numa_node=-1,
        is_pcie=False,
        host_path="/dev/vfio/5",
    )
    assert (testdev.id, testdev.bdf, testdev.vendor_id, testdev.device_id) == (
        f"{device.id}-2", "0000:03:02.0", "0x1b36", "0x0005")
    assert device.drivers == {"0000:03:01.0": "vfio-pci", "0000:03:02.0": "vfio-pci"}
    # BARs: edu 1 MiB, pci-testdev 4 KiB + 256 bytes of I/O
    assert device.windows == Windows(io=0x100, mem=0x100000 + 0x1000)


@pytest.mark.parametrize(("group", "bdf", "ids", "pcie"), [
    (2, "0000:00:03.0", ("0x8086", "0x10d3", "0x020000"), True),   # e1000e, root-complex integrated
    (7, "0000:01:00.0", ("0x1af4", "0x1041", "0x020000"), True),   # virtio-net behind a root port
    (8, "0000:02:00.0", ("0x1234", "0x11e8", "0x00ff00"), False),  # edu: conventional PCI
])
def test_single_function_groups(l1_host: FakeHost, make_plan, group: int, bdf: str, ids: tuple[str, ...],
                                pcie: bool) -> None:
    (function,) = vfio_device(make_plan(l1_host, group_request(group))).functions
    assert (function.bdf, (function.vendor_id, function.device_id, function.class_), function.is_pcie) == (
        bdf, ids, pcie)
    assert function.id.endswith("-0") and function.devfs_dev == "" and function.iommufd_id == ""


def test_the_control_node_and_dev_iommu_stay_container_devices(l1_iommufd_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_iommufd_host,
                       {"path": "/dev/vfio/vfio", "type": "c", "major": 10, "minor": 196},
                       {"path": "/dev/iommu", "type": "c", "major": 10, "minor": 257})
    assert [(d.kind, d.plugin) for d in result.devices] == [("generic", "vmdev.generic")] * 2


def test_a_function_on_a_host_driver_is_refused_with_its_name_and_driver(l1_host: FakeHost, make_plan) -> None:
    l1_host.pci_function("0000:00:01.0", vendor="0x1af4", device="0x1009", class_code="0x000200",
                         driver="virtio-pci", iommu_group=11)
    l1_host.char_device(246, 9, "vfio/11")
    with pytest.raises(DeviceError) as exc:
        make_plan(l1_host, {"path": "/dev/vfio/11", "type": "c", "major": 246, "minor": 9})
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/11", "driver")
    assert "IOMMU group 11: 0000:00:01.0 (0x1af4:0x1009 class 0x000200) is bound to virtio-pci, not vfio-pci" \
        in exc.value.message
    assert "echo 0000:00:01.0 > " + str(l1_host.sysfs / "bus/pci/devices/0000:00:01.0/driver/unbind") \
        in exc.value.message


def test_an_unbound_function_in_a_group_is_refused(l1_host: FakeHost, make_plan) -> None:
    (l1_host.sysfs / "devices/pci0000:00/0000:00:06.0/0000:03:02.0/driver").unlink()
    with pytest.raises(DeviceError, match=r"0000:03:02.0 \(0x1b36:0x0005 class 0x00ff00\) is bound to no driver"):
        make_plan(l1_host, group_request(5))


def test_vfio_pci_variant_drivers_are_vfio(fake_host: FakeHost, make_plan) -> None:
    fake_host.pci_function("0000:41:00.0", vendor="0x15b3", device="0x101e", driver="mlx5_vfio_pci",
                           iommu_group=40, config_size=4096)
    vfio_group(fake_host, 40, 246, 0)
    (function,) = vfio_device(make_plan(fake_host, {"path": "/dev/vfio/40", "type": "c", "major": 246,
                                                    "minor": 0})).functions
    assert function.bdf == "0000:41:00.0" and function.is_pcie


@pytest.mark.parametrize(("class_code", "skipped"), [
    ("0x060000", True), ("0x060400", True), ("0x068000", False), ("0x030200", False), ("0x040300", False),
])
def test_bridges_are_skipped_but_other_bridge_class_0x0680_is_passed(
        fake_host: FakeHost, make_plan, class_code: str, skipped: bool) -> None:
    fake_host.pci_function("0000:05:00.0", vendor="0x10de", device="0x22a3", class_code=class_code,
                           driver="vfio-pci", iommu_group=3)
    fake_host.pci_function("0000:05:00.1", vendor="0x10de", device="0x2330", class_code="0x030200",
                           driver="vfio-pci", iommu_group=3)
    vfio_group(fake_host, 3, 246, 0)
    device = vfio_device(make_plan(fake_host, {"path": "/dev/vfio/3", "type": "c", "major": 246, "minor": 0}))
    assert [f.bdf for f in device.functions] == (["0000:05:00.1"] if skipped else ["0000:05:00.0", "0000:05:00.1"])
    assert len(device.skipped) == int(skipped)


def test_a_group_of_bridges_only_is_an_error(l1_host: FakeHost, make_plan) -> None:
    l1_host.char_device(246, 7, "vfio/3")
    with pytest.raises(DeviceError, match=r"IOMMU group 3 holds no function to pass, only 0000:00:04.0 "
                                          r"\(PCI-to-PCI bridge\)"):
        make_plan(l1_host, {"path": "/dev/vfio/3", "type": "c", "major": 246, "minor": 7})


def test_bridge_kind_parses_class_codes() -> None:
    assert bridge_kind("") == ""
    assert bridge_kind("0x060000") == "host bridge"
    assert bridge_kind("0X060400") == "PCI-to-PCI bridge"
    with pytest.raises(DeviceError, match="not a PCI class code"):
        bridge_kind("0xzz", device="/dev/vfio/1")


def test_missing_group_and_missing_iommu(fake_host: FakeHost, make_plan) -> None:
    request = {"path": "/dev/vfio/9", "type": "c", "major": 500, "minor": 3}
    with pytest.raises(DeviceError, match="this host has no IOMMU groups: enable the IOMMU") as exc:
        make_plan(fake_host, request)
    assert exc.value.field == "iommu_group"
    build_l1_host(fake_host)
    with pytest.raises(DeviceError, match=r"IOMMU group 9 does not exist .* the host has 9 IOMMU groups"):
        make_plan(fake_host, request)


@pytest.mark.parametrize(("path", "message"), [
    ("/dev/vfio/noiommu-0", "no-IOMMU VFIO group"),
    ("/dev/vfio/abc", "is not a VFIO node"),
    ("/dev/vfio/devices/vfioX", "unexpected device name format: vfioX"),
    ("/dev/vfio/devices/card0", "unexpected device name format: card0"),
])
def test_malformed_vfio_paths(l1_host: FakeHost, make_plan, path: str, message: str) -> None:
    # no uevent for these numbers: the core resolves to the container path itself
    with pytest.raises(DeviceError, match=message) as exc:
        make_plan(l1_host, {"path": path, "type": "c", "major": 500, "minor": 1})
    assert exc.value.device == path


def test_a_block_device_under_dev_vfio_is_refused(l1_host: FakeHost, make_plan) -> None:
    # the core refuses a block request with no block device behind it before any family sees it
    with pytest.raises(ResolveError, match="this host has no block device 500:1") as exc:
        make_plan(l1_host, {"path": "/dev/vfio/5", "type": "b", "major": 500, "minor": 1})
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/5", "major:minor")
    # and where one exists, the family refuses to pass it as a VFIO group
    l1_host.block_device(500, 1, "vfio/5")
    with pytest.raises(DeviceError, match="a character device, not type 'b'"):
        make_plan(l1_host, {"path": "/dev/vfio/5", "type": "b", "major": 500, "minor": 1})


def test_an_entry_that_is_neither_bdf_nor_uuid(fake_host: FakeHost, make_plan) -> None:
    fake_host.write("devices/platform/foo/uevent")
    iommu_group_member(fake_host, 4, "foo.0", "devices/platform/foo")
    with pytest.raises(DeviceError, match=r"neither a PCI address .* nor a mediated device UUID"):
        make_plan(fake_host, {"path": "/dev/vfio/4", "type": "c", "major": 500, "minor": 4})


def test_mediated_device(fake_host: FakeHost, make_plan) -> None:
    uuid = "f79944e4-5a3d-11e8-99ce-479cbab002e4"
    fake_host.pci_function("0000:00:02.0", vendor="0x8086", device="0x5916", class_code="0x030000",
                           driver="i915", iommu_group=0, config_size=4096)
    node = mdev_device(fake_host, uuid, "0000:00:02.0", iommu_group=12, vfio_node=(246, 4))
    (function,) = vfio_device(make_plan(fake_host, {"path": "/dev/vfio/12", "type": "c", "major": 246,
                                                    "minor": 4})).functions
    assert function.type is VFIODeviceType.MEDIATED
    assert function.sysfs_dev == str(node)
    # Kata reads the ids from the parent function (whose driver is the vendor's, not vfio-pci)
    assert (function.bdf, function.vendor_id, function.device_id, function.class_, function.is_pcie) == (
        "0000:00:02.0", "0x8086", "0x5916", "0x030000", True)
    assert vfio_device(make_plan(fake_host, {"path": "/dev/vfio/12", "type": "c", "major": 246, "minor": 4})
                       ).drivers == {"0000:00:02.0": "i915"}


def test_ap_matrix_device(fake_host: FakeHost, make_plan) -> None:
    uuid = "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e"
    node = ap_matrix_device(fake_host, uuid, ["05.001f", "06.0020"], iommu_group=0, vfio_node=(246, 0))
    result = make_plan(fake_host, {"path": "/dev/vfio/0", "type": "c", "major": 246, "minor": 0},
                       machine_type="s390-ccw-virtio")
    (function,) = vfio_device(result).functions
    assert (function.type, function.ap_devices, function.sysfs_dev, function.bdf, function.host_path) == (
        VFIODeviceType.AP, ("05.001f", "06.0020"), str(node), "", "")
    assert function.numa_node == -1


@pytest.mark.parametrize(("queues", "message"), [([], "is empty: assign AP queues"), (["5.1f"], "holds '5.1f'")])
def test_ap_matrix_errors(fake_host: FakeHost, make_plan, queues: list[str], message: str) -> None:
    ap_matrix_device(fake_host, "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e", queues, iommu_group=0)
    with pytest.raises(DeviceError, match=message) as exc:
        make_plan(fake_host, {"path": "/dev/vfio/0", "type": "c", "major": 500, "minor": 0},
                  machine_type="s390-ccw-virtio")
    assert exc.value.field == "ap_devices"


def test_iommufd_cdev_is_exactly_one_function(l1_iommufd_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_iommufd_host, cdev_request(2))
    device = vfio_device(result)
    assert result.devices[0].host_path == "/dev/vfio/devices/vfio2"  # resolved through /sys/dev/char/249:2
    (function,) = device.functions
    assert (device.backend, device.iommu_group) == (VfioBackend.IOMMUFD, "5")
    assert (function.bdf, function.devfs_dev, function.iommufd_id, function.id) == (
        "0000:03:01.0", "/dev/vfio/devices/vfio2", "2", f"{device.id}-2")


def test_cdev_needs_dev_iommu_and_a_cdev_kernel(fake_host: FakeHost, make_plan) -> None:
    build_l1_host(fake_host, iommufd=True)
    (fake_host.dev / "iommu").unlink()
    with pytest.raises(DeviceError, match="needs /dev/iommu, which this host lacks"):
        make_plan(fake_host, cdev_request(0))


def test_cdev_on_a_kernel_without_cdevs(l1_host: FakeHost, make_plan) -> None:
    with pytest.raises(DeviceError, match=r"this kernel has no VFIO device cdevs .*CONFIG_VFIO_DEVICE_CDEV"):
        make_plan(l1_host, {"path": "/dev/vfio/devices/vfio0", "type": "c", "major": 500, "minor": 0})
    with pytest.raises(DeviceError, match="no VFIO device vfio9"):
        make_plan(l1_host, {"path": "/dev/vfio/devices/vfio9", "type": "c", "major": 500, "minor": 0})


# --- the numbers of the node passed are the numbers requested -------------------------------------
def plan_without_dev_nodes(
        host: FakeHost, empty_dev: Path, vmdev_plugins: Any, *devices: dict[str, Any]) -> Plan:
    """A plan on ``host``'s sysfs with a /dev that has no VFIO node (only ``/dev/iommu``): the core
    finds no node to compare the numbers with (Kata's fallback keeps the container path), so only
    the plugin's own check stands."""
    empty_dev.mkdir(exist_ok=True)
    (empty_dev / "iommu").touch()
    return plan(parse_spec({"linux": {"devices": list(devices)}}), SandboxSettings(),
                host=host.context(dev_root=empty_dev), plugins=vmdev_plugins("vmdev-vfio"))


def test_a_group_asked_for_with_other_numbers_is_refused_naming_the_group_and_both_numbers(
        l1_host: FakeHost, tmp_path: Path, vmdev_plugins: Any) -> None:
    request = {"path": "/dev/vfio/2", "type": "c", "major": 999, "minor": 999}
    with pytest.raises(DeviceError) as exc:
        plan_without_dev_nodes(l1_host, tmp_path / "empty", vmdev_plugins, request)
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/2", "major:minor")
    sysfs = l1_host.sysfs
    assert exc.value.message == (
        f"VFIO group 2 is character device 246:0 ({sysfs}/class/vfio/2/dev), not the requested c 999:999")
    # with the host's node there the core says it first; either way group 2 is never passed for 999:999
    with pytest.raises(DeviceError, match="not the requested c 999:999"):
        make_plan_from(l1_host, vmdev_plugins, request)


def test_a_cdev_asked_for_with_other_numbers_is_refused_naming_both_numbers(
        l1_iommufd_host: FakeHost, tmp_path: Path, vmdev_plugins: Any) -> None:
    request = {"path": "/dev/vfio/devices/vfio0", "type": "u", "major": 249, "minor": 40}
    with pytest.raises(DeviceError) as exc:
        plan_without_dev_nodes(l1_iommufd_host, tmp_path / "empty", vmdev_plugins, request)
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/devices/vfio0", "major:minor")
    sysfs = l1_iommufd_host.sysfs
    assert exc.value.message == (
        f"VFIO device cdev vfio0 is character device 249:0 ({sysfs}/class/vfio-dev/vfio0/dev), "
        "not the requested u 249:40")


def test_a_group_the_host_exposes_no_vfio_node_for_is_refused(
        l1_host: FakeHost, tmp_path: Path, vmdev_plugins: Any) -> None:
    (l1_host.sysfs / "class/vfio/8").unlink()
    with pytest.raises(DeviceError) as exc:
        plan_without_dev_nodes(l1_host, tmp_path / "empty", vmdev_plugins, group_request(8))
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/8", "host_path")
    assert exc.value.message == (
        f"IOMMU group 8 is not a VFIO group this host exposes ({l1_host.sysfs}/class/vfio/8/dev is missing: "
        "is the device bound to vfio-pci?)")


@pytest.mark.parametrize("content", ["", "246:0x\n", "246\n", "-1:0\n", "\u00b2:0\n", "246:0:1\n"])
def test_a_group_dev_file_that_is_not_major_minor_is_one_line_naming_it(
        l1_host: FakeHost, vmdev_plugins: Any, content: str) -> None:
    dev = l1_host.sysfs / "devices/virtual/vfio/2/dev"
    dev.write_text(content)
    with pytest.raises(DeviceError) as exc:
        make_plan_from(l1_host, vmdev_plugins, group_request(2))
    assert exc.value.field == "major:minor" and "\n" not in exc.value.message
    assert exc.value.message.startswith(f'"{l1_host.sysfs}/class/vfio/2/dev" holds ')


@pytest.mark.parametrize(("iommufd", "request_"), [
    (False, group_request(5)), (False, group_request(8)), (True, group_request(2, major=250)),
    (True, cdev_request(3)),
])
def test_a_group_or_cdev_asked_for_with_its_own_numbers_is_built(
        fake_host: FakeHost, tmp_path: Path, vmdev_plugins: Any, iommufd: bool,
        request_: dict[str, Any]) -> None:
    build_l1_host(fake_host, iommufd=iommufd)
    for result in (plan_without_dev_nodes(fake_host, tmp_path / "empty", vmdev_plugins, request_),
                   make_plan_from(fake_host, vmdev_plugins, request_)):
        assert vfio_device(result).container_path == request_["path"]


def make_plan_from(host: FakeHost, vmdev_plugins: Any, *devices: dict[str, Any]) -> Plan:
    return plan(parse_spec({"linux": {"devices": list(devices)}}), SandboxSettings(), host=host.context(),
                plugins=vmdev_plugins("vmdev-vfio"))


def test_parse_resources_sorts_bars_into_windows() -> None:
    text = "".join(f"0x{s:016x} 0x{e:016x} 0x{f:016x}\n" for s, e, f in [
        (0xF0000000, 0xF0FFFFFF, 0x40200),  # 16 MiB non-prefetchable
        (0x380000000000, 0x3807FFFFFFFF, 0x14220C),  # 32 GiB prefetchable 64-bit
        (0xE0000000, 0xE1FFFFFF, 0x42208),  # 32 MiB prefetchable 32-bit
        (0xD000, 0xD07F, 0x40101),  # 128 bytes of I/O
        (0, 0, 0), (0, 0, 0),
        (0xF1000000, 0xF107FFFF, 0x46200),  # expansion ROM: not a BAR
    ])
    assert parse_resources(text) == Windows(io=0x80, mem=16 << 20, pref32=32 << 20, pref64=32 << 30)
    assert parse_resources("") == Windows()


@pytest.mark.parametrize("line", ["zz zz zz", "0x1 0x2", "0x1_0 0x2_0 0x200", "-0x1 0x0 0x200", "² ² ²",
                                  "0x" + "f" * 40 + " 0x0 0x200", "0x1 0x2 0x3 0x4"])
def test_a_malformed_resource_line_is_one_line_naming_the_file(l1_host: FakeHost, make_plan, line: str) -> None:
    resource = l1_host.sysfs / "bus/pci/devices/0000:02:00.0/resource"
    resource.write_text(f"0x00000000fde00000 0x00000000fdefffff 0x0000000000040200\n{line}\n")
    with pytest.raises(DeviceError) as caught:
        make_plan(l1_host, group_request(8))
    error = caught.value
    assert (error.device, error.field) == ("/dev/vfio/8", "resource")
    assert "\n" not in str(error) and "0000:02:00.0/resource" in str(error) and "line 2" in str(error)


def test_parse_resources_skips_blank_lines() -> None:
    assert parse_resources("\n0x0000000000001000 0x0000000000001fff 0x0000000000040200\n\n") == Windows(mem=4096)


def test_numa_node_is_read(fake_host: FakeHost, make_plan) -> None:
    fake_host.pci_function("0000:41:00.0", driver="vfio-pci", iommu_group=42, numa_node=1, config_size=4096)
    vfio_group(fake_host, 42, 246, 0)
    (function,) = vfio_device(make_plan(fake_host, {"path": "/dev/vfio/42", "type": "c", "major": 246,
                                                    "minor": 0})).functions
    assert function.numa_node == 1
