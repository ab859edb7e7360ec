"""Saved devices come back (device_from_state): every kind of block device, without the host."""

from __future__ import annotations

import shutil
from typing import Any

import attrs
import pytest

from vmdev.errors import DeviceError
from vmdev.models import DeviceInfo
from vmdev.planner import Pipeline
from vmdev.resources import Allocator
from vmdev.serialize import to_json
from vmdev_block import host as block_host
from vmdev_block.device import BlockDevice
from vmdev_block.host import pmem_device_info

FILE_OPT = "io.katacontainers.fs-opt.block_device=file"


def _requests(host: Any) -> dict[str, tuple[DeviceInfo, dict[str, Any]]]:
    """One request of each kind the plugin builds, with the settings it is built under."""
    disk = host.disk(8, 16, "sdb")
    loop = host.loop(0, host.image("backing.img"))
    image = host.image("disk,1=a b.img")
    source, _ = host.pmem_mount(5)
    return {
        "virtio-scsi disk": (DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16,
                                        host_path=disk, read_only=True), {}),
        "virtio-blk loop": (DeviceInfo(container_path="/dev/xvdc", dev_type="b", major=7, minor=0,
                                       host_path=loop, discard_unmap=True),
                            {"options": {"block_device_driver": "virtio-blk"}}),
        "virtio-mmio file": (DeviceInfo(container_path="/disk", dev_type="b", major=-1, minor=0,
                                        host_path=str(image), cold_plug=True),
                             {"options": {"block_device_driver": "virtio-mmio"}, "machine_type": "microvm"}),
        "virtio-blk-ccw disk": (DeviceInfo(container_path="/dev/xvdd", dev_type="b", major=8, minor=16,
                                           host_path=disk),
                                {"options": {"block_device_driver": "virtio-blk-ccw"},
                                 "machine_type": "s390-ccw-virtio"}),
        "nvdimm pmem": (pmem_device_info(str(source), "/pmem", host.fake.context(), read_only=True), {}),
        "virtio-pmem file": (DeviceInfo(container_path="/vpmem", dev_type="b", major=-1, minor=0,
                                        host_path=str(image), read_only=True),
                             {"options": {"block_device_driver": "virtio-pmem"}}),
    }


@pytest.mark.parametrize("which", ["virtio-scsi disk", "virtio-blk loop", "virtio-mmio file",
                                   "virtio-blk-ccw disk", "nvdimm pmem", "virtio-pmem file"])
def test_every_kind_of_block_device_round_trips_without_the_host(
    host: Any, prepared: Any, vmdev_plugins: Any, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, settings = _requests(host)[which]
    monkeypatch.setattr(block_host, "blkroget", lambda path: "loop" in str(path))  # losetup -r
    pm = vmdev_plugins("vmdev-block")
    pipeline = Pipeline(pm, prepared(**settings), host.fake.context())
    alloc = Allocator()
    alloc.take("block.index", "someone else", limit=10)  # so the device's index is not 0
    built = pipeline.build(pipeline.resolve(info), alloc)
    assert isinstance(built.device, BlockDevice)
    target = pipeline.target()
    saved = pipeline.render(built, target, hotplug=False).to_json()  # what a plan or the state shows
    shutil.rmtree(host.fake.root)  # the host is gone: rebuilding must not need it
    shutil.rmtree(host.tmp, ignore_errors=True)

    again = pm.device_from_state("block", saved, "block", name=info.container_path)
    assert again == built.device
    assert again.drive.index == 1 and again.drive == built.device.drive
    assert again.read_only_detected is (which == "virtio-blk loop")
    assert to_json(again) == to_json(built.device)
    rendered = pipeline.render(built, pipeline.target(), hotplug=False).attach
    assert pm.attach_options(again, pipeline.target(), False, name="x") == rendered


def test_a_drive_with_a_pci_path_round_trips(vmdev_plugins: Any, host: Any, prepared: Any) -> None:
    from vmdev.models import PciPath

    pm = vmdev_plugins("vmdev-block")
    info, _ = _requests(host)["virtio-scsi disk"]
    device = Pipeline(pm, prepared(), host.fake.context()).build(info, Allocator()).device
    assert isinstance(device, BlockDevice)
    moved = attrs.evolve(device, drive=attrs.evolve(device.drive, pci_path=PciPath.parse("02/00")))
    assert to_json(moved)["drive"]["pci_path"] == "02/00"
    assert pm.device_from_state("block", to_json(moved), "block", name="d") == moved


def test_devices_of_other_kinds_or_plugins_are_not_answered(host: Any, prepared: Any, vmdev_plugins: Any) -> None:
    from vmdev_block.plugin import device_from_state

    info, _ = _requests(host)["virtio-scsi disk"]
    pm = vmdev_plugins("vmdev-block")
    saved = to_json(Pipeline(pm, prepared(), host.fake.context()).build(info, Allocator()).device)
    assert device_from_state("vhost-user", saved, "block") is None
    assert device_from_state("block", saved, "vendor-disks") is None
    assert device_from_state("block", saved, "block") is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [({"driver": "ide"}, "driver: 'ide' is not a block driver"),
     ({"drive": None}, "$.drive: required field missing"),
     ({"drive": {"file": "/f", "id": "drive-1", "index": -1}}, "index: must not be negative, got -1"),
     ({"drive": {"file": "/f", "id": "drive-1", "pci_path": "zz"}}, "$.drive.pci_path: invalid PCI path 'zz'"),
     ({"drive": {"file": "/f", "id": "drive-1", "index": "2"}}, "$.drive.index: invalid value, expected int")],
)
def test_a_malformed_saved_device_is_one_line_naming_it(
    host: Any, prepared: Any, vmdev_plugins: Any, change: dict[str, Any], message: str
) -> None:
    info, _ = _requests(host)["virtio-scsi disk"]
    pm = vmdev_plugins("vmdev-block")
    saved = to_json(Pipeline(pm, prepared(), host.fake.context()).build(info, Allocator()).device)
    saved.update(change)
    if saved["drive"] is None:
        del saved["drive"]
    with pytest.raises(DeviceError) as exc:
        pm.device_from_state("block", saved, "block", name="/dev/xvdb")
    assert (exc.value.device, exc.value.field) == ("/dev/xvdb", "state")
    assert message in exc.value.message and "\n" not in str(exc.value)
