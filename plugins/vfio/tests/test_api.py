"""Cloud Hypervisor (devices / vm.add-device) and Firecracker (no VFIO)."""

from __future__ import annotations

import pytest

from vmdev.errors import UnsupportedError
from vmdev.testing import FakeHost
from vmdev_vfio.testing import ap_matrix_device, cdev_request, group_request, vfio_group


def test_clh_cold_plug_lists_every_function_with_its_sysfs_path(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(5), group_request(2), hypervisor="cloud-hypervisor",
                       enable_iommu=True)
    g5, g2 = (d.id for d in result.devices)
    sysfs = l1_host.sysfs / "bus/pci/devices"
    assert result.to_json()["cloud_hypervisor"] == {
        "vm_config": {"devices": [
            {"id": f"{g5}-1", "path": f"{sysfs}/0000:03:01.0", "iommu": True},
            {"id": f"{g5}-2", "path": f"{sysfs}/0000:03:02.0", "iommu": True},
            {"id": f"{g2}-0", "path": f"{sysfs}/0000:00:03.0", "iommu": True},
        ], "platform": {"iommu_segments": [0]}},  # the backend's part of enable_iommu (Kata's clh.go)
        "hotplug": [],
        "unplug": [],
    }


def test_clh_hot_plug_and_unplug(l1_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_host, group_request(5), hypervisor="cloud-hypervisor", hotplug=True,
                       hot_plug_vfio="root-port")
    fid = result.devices[0].id
    data = result.to_json()["cloud_hypervisor"]
    assert data["vm_config"] == {}
    assert data["hotplug"] == [
        {"method": "PUT", "path": "/api/v1/vm.add-device",
         "body": {"id": f"{fid}-1", "path": str(l1_host.sysfs / "bus/pci/devices/0000:03:01.0"), "iommu": False}},
        {"method": "PUT", "path": "/api/v1/vm.add-device",
         "body": {"id": f"{fid}-2", "path": str(l1_host.sysfs / "bus/pci/devices/0000:03:02.0"), "iommu": False}},
    ]
    assert data["unplug"] == [
        {"method": "PUT", "path": "/api/v1/vm.remove-device", "body": {"id": f"{fid}-2"}},
        {"method": "PUT", "path": "/api/v1/vm.remove-device", "body": {"id": f"{fid}-1"}},
    ]
    assert result.devices[0].hotplug


def test_clh_cdev_goes_through_the_sysfs_path(l1_iommufd_host: FakeHost, make_plan) -> None:
    result = make_plan(l1_iommufd_host, cdev_request(1), hypervisor="cloud-hypervisor")
    (config,) = result.to_json()["cloud_hypervisor"]["vm_config"]["devices"]
    assert config["path"] == str(l1_iommufd_host.sysfs / "bus/pci/devices/0000:02:00.0")
    assert "through its VFIO group" in result.to_json()["devices"][0]["note"]


def test_clh_refuses_ap_devices(fake_host: FakeHost, make_plan) -> None:
    ap_matrix_device(fake_host, "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e", ["05.001f"], iommu_group=0)
    vfio_group(fake_host, 0, 246, 0)
    with pytest.raises(UnsupportedError, match="Cloud Hypervisor passes only PCI VFIO devices") as exc:
        make_plan(fake_host, {"path": "/dev/vfio/0", "type": "c", "major": 246, "minor": 0},
                  hypervisor="cloud-hypervisor")
    assert exc.value.device == "/dev/vfio/0"


def test_clh_never_mixes_groups_and_cdevs_either(l1_iommufd_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError, match="one sandbox uses one"):
        make_plan(l1_iommufd_host, cdev_request(1), group_request(2, major=250), hypervisor="cloud-hypervisor")


def test_firecracker_has_no_vfio(l1_host: FakeHost, make_plan) -> None:
    with pytest.raises(UnsupportedError) as exc:
        make_plan(l1_host, group_request(2), hypervisor="firecracker")
    assert str(exc.value) == ("/dev/vfio/2: hypervisor: Firecracker has no VFIO (PCI passthrough) support; "
                              "use QEMU or Cloud Hypervisor")


def test_firecracker_and_clh_plans_without_vfio_devices_are_unaffected(fake_host: FakeHost, make_plan) -> None:
    for hypervisor in ("firecracker", "cloud-hypervisor"):
        assert make_plan(fake_host, hypervisor=hypervisor, hot_plug_vfio="root-port", pcie_root_port=4).devices == ()
