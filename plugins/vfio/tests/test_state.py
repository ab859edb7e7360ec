"""Saved VFIO devices come back without the host; the host facts that decided them are recorded."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from vmdev.errors import DeviceError, PluginError
from vmdev.models import Device, GenericDevice, PCIePort
from vmdev.planner import Pipeline
from vmdev.serialize import to_json
from vmdev.testing import FakeHost
from vmdev_vfio import plugin
from vmdev_vfio.device import VfioBackend, VFIODevice, VFIODeviceType, VFIOMode
from vmdev_vfio.ports import PortReservation
from vmdev_vfio.testing import (
    ap_matrix_device,
    build_all,
    cdev_request,
    group_request,
    mdev_device,
    vfio_group,
)

MDEV = "f79944e4-5a3d-11e8-99ce-479cbab002e4"
AP = "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e"


def with_mdev_and_ap(host: FakeHost) -> list[dict[str, Any]]:
    """An i915 mdev (group 12) and an AP matrix device (group 30) on ``host``; their requests."""
    host.pci_function("0000:00:02.0", vendor="0x8086", device="0x5916", class_code="0x030000", driver="i915",
                      iommu_group=40, config_size=4096)
    mdev_device(host, MDEV, "0000:00:02.0", iommu_group=12)
    vfio_group(host, 12, 246, 12)
    ap_matrix_device(host, AP, ["05.001f", "06.0020"], iommu_group=30)
    vfio_group(host, 30, 246, 30)
    return [{"path": "/dev/vfio/12", "type": "c", "major": 246, "minor": 12},
            {"path": "/dev/vfio/30", "type": "c", "major": 246, "minor": 30}]


def saved(device: Device) -> dict[str, Any]:
    """What the device manager's state file holds for ``device`` (JSON, read back)."""
    data: dict[str, Any] = json.loads(json.dumps(to_json(device)))
    return data


def test_every_vfio_device_kind_comes_back_from_its_saved_form_without_the_host(
        l1_iommufd_host: FakeHost, start: Callable[..., Pipeline]) -> None:
    requests = [group_request(5, major=250), cdev_request(2), *with_mdev_and_ap(l1_iommufd_host)]
    pipeline = start(l1_iommufd_host, hot_plug_vfio="root-port", pcie_root_port=3, vfio_mode="vfio")
    devices = build_all(pipeline, *requests)
    data = [(d.kind, saved(d)) for d in devices]
    shutil.rmtree(l1_iommufd_host.root)  # nothing below may look at the host
    back = [pipeline.pm.device_from_state(kind, item, "vfio", name=kind) for kind, item in data]
    assert back == devices
    vfio = [d for d in back if isinstance(d, VFIODevice)]
    # every branch of the model went through the round trip
    assert {t for d in vfio for t in d.types} == {VFIODeviceType.NORMAL, VFIODeviceType.MEDIATED,
                                                  VFIODeviceType.AP}
    assert {d.backend for d in vfio} == {VfioBackend.GROUP, VfioBackend.IOMMUFD}
    assert vfio[0].skipped and vfio[0].windows.mem and vfio[0].functions[0].class_ == "0x00ff00"
    assert vfio[3].functions[0].ap_devices == ("05.001f", "06.0020")
    assert {(d.port, d.vfio_mode) for d in vfio} == {(PCIePort.ROOT_PORT, VFIOMode.VFIO)}
    assert back[-1] == PortReservation(port=PCIePort.ROOT_PORT, count=3)


def test_other_kinds_are_left_to_their_plugins() -> None:
    assert plugin.device_from_state("block", {"id": "x"}) is None


def test_a_saved_device_that_is_not_one_is_an_error_naming_it(l1_host: FakeHost,
                                                              start: Callable[..., Pipeline]) -> None:
    pipeline = start(l1_host)
    (device,) = build_all(pipeline, group_request(8))
    broken = {**saved(device), "functions": "0000:02:00.0"}
    with pytest.raises(DeviceError, match="saved functions is not a list") as exc:
        pipeline.pm.device_from_state("vfio", broken, "vfio", name="/dev/vfio/8")
    assert (exc.value.device, exc.value.field) == ("/dev/vfio/8", "functions")
    with pytest.raises(PluginError, match="plugin 'vfio' failed in device_from_state"):
        pipeline.pm.device_from_state("vfio", {"id": "x"}, "vfio", name="/dev/vfio/8")


# --- host facts -------------------------------------------------------------------------------------
def function_facts(bdf: str, driver: str, group: str, ids: str, class_code: str, numa: str = "-1") -> dict[str, str]:
    return {f"{bdf} driver": driver, f"{bdf} iommu_group": group, f"{bdf} vendor:device": ids,
            f"{bdf} class": class_code, f"{bdf} numa_node": numa}


def test_a_groups_facts_are_its_members_and_each_functions_driver_group_ids_class_and_numa_node(
        l1_host: FakeHost, start: Callable[..., Pipeline]) -> None:
    pipeline = start(l1_host)
    (device,) = build_all(pipeline, group_request(5))
    assert pipeline.pm.host_facts(device, l1_host.context(), name="/dev/vfio/5") == {
        "iommu_group 5 devices": "0000:00:06.0 0000:03:01.0 0000:03:02.0",
        **function_facts("0000:03:01.0", "vfio-pci", "5", "0x1234:0x11e8", "0x00ff00"),
        **function_facts("0000:03:02.0", "vfio-pci", "5", "0x1b36:0x0005", "0x00ff00"),
    }


def test_host_drift_changes_the_facts_and_a_vanished_function_reads_empty(
        l1_host: FakeHost, start: Callable[..., Pipeline]) -> None:
    pipeline = start(l1_host)
    (device,) = build_all(pipeline, group_request(5))
    before = pipeline.pm.host_facts(device, l1_host.context(), name="/dev/vfio/5")
    node = l1_host.sysfs / "devices/pci0000:00/0000:00:06.0/0000:03:02.0"
    l1_host.symlink("devices/pci0000:00/0000:00:06.0/0000:03:02.0/driver", "/bus/pci/drivers/pci-testdev")
    l1_host.pci_function("0000:03:03.0", iommu_group=5, parent="pci0000:00/0000:00:06.0")  # hot-added
    drifted = pipeline.pm.host_facts(device, l1_host.context(), name="/dev/vfio/5")
    assert {k for k in before if before[k] != drifted[k]} == {"0000:03:02.0 driver", "iommu_group 5 devices"}
    assert drifted["0000:03:02.0 driver"] == "pci-testdev"
    shutil.rmtree(node)
    (l1_host.sysfs / "bus/pci/devices/0000:03:02.0").unlink()
    gone = pipeline.pm.host_facts(device, l1_host.context(), name="/dev/vfio/5")
    assert function_facts("0000:03:02.0", "", "", "", "", "").items() <= gone.items()


def test_cdev_mdev_and_ap_facts_say_what_they_resolve_to(l1_iommufd_host: FakeHost,
                                                          start: Callable[..., Pipeline]) -> None:
    pipeline = start(l1_iommufd_host)
    cdev, mdev, ap = build_all(pipeline, cdev_request(2), *with_mdev_and_ap(l1_iommufd_host))
    host = l1_iommufd_host.context()
    cdev_facts = pipeline.pm.host_facts(cdev, host, name="cdev")
    assert cdev_facts["vfio2 function"] == "0000:03:01.0"
    assert cdev_facts["iommu_group 5 devices"] == "0000:00:06.0 0000:03:01.0 0000:03:02.0"
    assert cdev_facts["0000:03:01.0 driver"] == "vfio-pci"
    # the mdev: where it resolves, and its parent function (on the vendor's driver)
    assert pipeline.pm.host_facts(mdev, host, name="mdev") == {
        "iommu_group 12 devices": MDEV,
        f"{MDEV} device": f"/devices/pci0000:00/0000:00:02.0/{MDEV}",
        **function_facts("0000:00:02.0", "i915", "40", "0x8086:0x5916", "0x030000"),
    }
    assert pipeline.pm.host_facts(ap, host, name="ap") == {
        "iommu_group 30 devices": AP,
        f"{AP} device": f"/devices/vfio_ap/matrix/{AP}",
        f"{AP} matrix": "05.001f 06.0020",
    }


def test_the_spare_ports_have_no_host_facts_and_other_devices_are_not_ours(fake_host: FakeHost) -> None:
    assert plugin.host_facts(PortReservation(port=PCIePort.ROOT_PORT, count=2), fake_host.context()) == {}
    generic = GenericDevice(id="null", container_path="/dev/null", host_path="/dev/null", dev_type="c",
                            major=1, minor=3)
    assert plugin.host_facts(generic, fake_host.context()) is None


def test_the_family_names_are_importable_from_the_distribution() -> None:
    import vmdev_vfio

    assert vmdev_vfio.DEVICE_VFIO == VFIODevice.kind == "vfio"
    assert vmdev_vfio.PCI_CONFIG_SPACE_SIZE == 256
    assert (vmdev_vfio.VFIODeviceType.AP, vmdev_vfio.VFIOMode.VFIO.value) == (3, "vfio")
    assert vmdev_vfio.VFIODev(id="x").iommufd_id == ""
