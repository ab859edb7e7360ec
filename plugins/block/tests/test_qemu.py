"""QEMU rendering: every driver cold and hot, AIO and cache, escaping, indexes in plan order."""

from __future__ import annotations

from typing import Any

import pytest

from vmdev.errors import UnsupportedError
from vmdev.qemu import split_opts

MIB = 1024 * 1024
FILE_OPT = "io.katacontainers.fs-opt.block_device=file"


def option(argv: tuple[str, ...], flag: str, head: str) -> list[str]:
    """The split value of the first ``flag`` option whose value starts with ``head``."""
    for index, arg in enumerate(argv[:-1]):
        if arg == flag and argv[index + 1].startswith(head):
            return split_opts(argv[index + 1])
    raise AssertionError(f"no {flag} {head}... in {argv}")


def values(argv: tuple[str, ...], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


@pytest.fixture
def two_disks(host: Any) -> Any:
    host.disk(8, 16, "sdb")
    host.disk(8, 32, "sdc")
    return host.spec([host.device("/dev/xvdb", 8, 16), host.device("/dev/xvdc", 8, 32)])


def ids(result: Any) -> list[str]:
    return [d.id for d in result.devices]


def test_virtio_scsi_cold_plug(run: Any, two_disks: Any) -> None:
    result = run(two_disks)
    first, second = ids(result)
    argv = result.qemu.argv
    assert values(argv, "-device").count("virtio-scsi-pci,id=scsi0") == 1  # the controller, once
    assert option(argv, "-blockdev", f"driver=raw,node-name={first}") == [
        "driver=raw", f"node-name={first}", "read-only=off",
        "file.driver=host_device", "file.filename=/dev/sdb", "file.aio=io_uring",
    ]
    assert option(argv, "-device", f"scsi-hd,id=virtio-{second}") == [
        "scsi-hd", f"id=virtio-{second}", f"drive={second}", "bus=scsi0.0", "channel=0",
        "scsi-id=0", "lun=1", f"serial={second}",
    ]
    drives = [d["drive"] for d in result.to_json()["devices"]]
    assert [(d["index"], d["scsi_addr"], d["virt_path"]) for d in drives] == [(0, "0:0", ""), (1, "0:1", "")]
    assert argv.index("virtio-scsi-pci,id=scsi0") < argv.index(values(argv, "-blockdev")[0])  # controller first


def test_virtio_blk_cold_plug(run: Any, two_disks: Any) -> None:
    result = run(two_disks, options={"block_device_driver": "virtio-blk"})
    first, _second = ids(result)
    assert option(result.qemu.argv, "-device", "virtio-blk-pci") == [
        "virtio-blk-pci", f"id=virtio-{first}", f"drive={first}", f"serial={first}",
    ]
    assert "virtio-scsi-pci,id=scsi0" not in result.qemu.argv
    drives = [d["drive"] for d in result.to_json()["devices"]]
    assert [(d["virt_path"], d["scsi_addr"]) for d in drives] == [("/dev/vda", ""), ("/dev/vdb", "")]
    assert result.qemu.hotplug == () and not any(d.hotplug for d in result.devices)


def test_virtio_mmio_on_microvm(run: Any, two_disks: Any) -> None:
    result = run(two_disks, machine_type="microvm", options={"block_device_driver": "virtio-mmio"})
    first, _ = ids(result)
    assert option(result.qemu.argv, "-device", "virtio-blk-device")[:2] == ["virtio-blk-device", f"id=virtio-{first}"]
    drives = [d["drive"] for d in result.to_json()["devices"]]
    assert [d["virt_path"] for d in drives] == ["/dev/vdb", "/dev/vdc"]  # Kata: the image is vda


def test_virtio_mmio_cannot_hot_plug_so_it_is_cold_plugged(run: Any, two_disks: Any) -> None:
    result = run(two_disks, machine_type="microvm", hotplug=True, options={"block_device_driver": "virtio-mmio"})
    assert result.qemu.hotplug == () and len(values(result.qemu.argv, "-blockdev")) == 2


def test_virtio_blk_ccw(run: Any, two_disks: Any) -> None:
    result = run(two_disks, machine_type="s390-ccw-virtio", options={"block_device_driver": "virtio-blk-ccw"})
    _first, second = ids(result)
    assert option(result.qemu.argv, "-device", f"virtio-blk-ccw,id=virtio-{second}") == [
        "virtio-blk-ccw", f"id=virtio-{second}", f"drive={second}", f"serial={second}", "devno=fe.0.1001",
    ]
    drives = [d["drive"] for d in result.to_json()["devices"]]
    assert [(d["dev_no"], d["virt_path"]) for d in drives] == [("0.0.1000", "/dev/vda"), ("0.0.1001", "/dev/vdb")]


def test_virtio_scsi_controller_follows_the_transport(run: Any, two_disks: Any) -> None:
    assert "virtio-scsi-device,id=scsi0" in run(two_disks, machine_type="microvm").qemu.argv
    assert "virtio-scsi-ccw,id=scsi0" in run(two_disks, machine_type="s390-ccw-virtio").qemu.argv


@pytest.mark.parametrize(
    ("machine", "driver", "transport"),
    [("microvm", "virtio-blk", "mmio"), ("q35", "virtio-mmio", "pci"), ("q35", "virtio-blk-ccw", "pci"),
     ("s390-ccw-virtio", "virtio-blk", "ccw")],
)
def test_driver_the_machine_cannot_take(run: Any, two_disks: Any, machine: str, driver: str, transport: str) -> None:
    with pytest.raises(UnsupportedError, match=f"block driver {driver} needs the .* machine {machine} uses {transport}") as exc:
        run(two_disks, machine_type=machine, options={"block_device_driver": driver})
    assert (exc.value.device, exc.value.field) == ("/dev/xvdb", "block_device_driver")


@pytest.mark.parametrize("machine", ["microvm", "s390-ccw-virtio"])
def test_nvdimm_needs_a_pc_machine(run: Any, host: Any, machine: str) -> None:
    source, _ = host.pmem_mount(5)
    with pytest.raises(UnsupportedError, match=f"machine {machine} has no nvdimm support"):
        run(host.spec(mounts=[{"destination": "/pmem", "source": str(source), "type": "bind"}]), machine_type=machine)


@pytest.mark.parametrize(
    ("options", "cache"),
    [({"block_device_aio": "threads"}, []),
     ({"block_device_aio": "native"}, ["cache.direct=on"]),
     ({"block_device_aio": "io_uring", "block_device_cache_set": True, "block_device_cache_direct": True,
       "block_device_cache_noflush": True}, ["cache.direct=on", "cache.no-flush=on"]),
     ({"block_device_aio": "threads", "block_device_cache_set": True}, ["cache.direct=off", "cache.no-flush=off"])],
)
def test_aio_and_cache_on_cold_plug(run: Any, two_disks: Any, options: dict[str, Any], cache: list[str]) -> None:
    result = run(two_disks, options=options)
    first = ids(result)[0]
    blockdev = option(result.qemu.argv, "-blockdev", f"driver=raw,node-name={first}")
    assert blockdev == ["driver=raw", f"node-name={first}", "read-only=off", *cache,
                        "file.driver=host_device", "file.filename=/dev/sdb", f"file.aio={options['block_device_aio']}"]


def test_every_value_is_escaped(host: Any, run: Any) -> None:
    image = host.image("a,b=c d,file.filename=x.img")
    mount = {"destination": "/disk", "source": str(image), "type": "bind", "options": [FILE_OPT, "ro"]}
    result = run(host.spec(mounts=[mount]), options={"block_device_driver": "virtio-blk"})
    (drive_id,) = ids(result)
    blockdev = option(result.qemu.argv, "-blockdev", "driver=raw")
    assert blockdev == ["driver=raw", f"node-name={drive_id}", "read-only=on", "file.driver=file",
                        f"file.filename={image}", "file.aio=io_uring"]
    raw = values(result.qemu.argv, "-blockdev")[0]
    assert f"file.filename={str(image).replace(',', ',,')}," in raw


def test_discard(host: Any, vmdev_plugins: Any) -> None:
    from vmdev.models import DeviceInfo
    from vmdev.oci import OciSpec
    from vmdev.planner import plan
    from vmdev.settings import SandboxSettings

    host.disk(8, 16, "sdb")
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, discard_unmap=True)
    settings = SandboxSettings(options={"block_device_driver": "virtio-blk"}, hotplug=True)
    result = plan(OciSpec(devices=(info,)), settings, host=host.fake.context(), plugins=vmdev_plugins("vmdev-block"))
    add, device_add = (c.to_json()["arguments"] for c in result.qemu.hotplug)
    assert add["discard"] == "unmap" and add["file"]["discard"] == "unmap"
    assert device_add["discard"] is True


def test_virtio_blk_hot_plug_and_unplug(run: Any, two_disks: Any) -> None:
    result = run(two_disks, hotplug=True, options={"block_device_driver": "virtio-blk", "block_device_aio": "native"})
    first, second = ids(result)
    assert [c.to_json() for c in result.qemu.hotplug[:2]] == [
        {"execute": "blockdev-add", "arguments": {
            "driver": "raw", "node-name": first, "read-only": False, "cache": {"direct": True},
            "file": {"driver": "host_device", "filename": "/dev/sdb", "aio": "native"}}},
        {"execute": "device_add", "arguments": {
            "driver": "virtio-blk-pci", "id": f"virtio-{first}", "drive": first, "serial": first, "bus": "rp0"}},
    ]
    assert result.qemu.hotplug[3].arguments["bus"] == "rp1"  # one root port per disk
    assert [c.to_json() for c in result.qemu.unplug] == [
        {"execute": "device_del", "arguments": {"id": f"virtio-{second}"}},
        {"execute": "blockdev-del", "arguments": {"node-name": second}},
        {"execute": "device_del", "arguments": {"id": f"virtio-{first}"}},
        {"execute": "blockdev-del", "arguments": {"node-name": first}},
    ]
    argv = result.qemu.argv
    assert "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1" in argv and "-blockdev" not in argv
    assert all(d.hotplug for d in result.devices)


def test_virtio_blk_hot_plug_on_pc_uses_the_root_bus(run: Any, two_disks: Any) -> None:
    result = run(two_disks, machine_type="pc", hotplug=True, options={"block_device_driver": "virtio-blk"})
    assert "bus" not in result.qemu.hotplug[1].arguments
    assert not any(a.startswith("pcie-root-port") for a in result.qemu.argv)


def test_virtio_scsi_hot_plug(run: Any, two_disks: Any) -> None:
    result = run(two_disks, hotplug=True)
    _, second = ids(result)
    assert result.qemu.hotplug[3].to_json() == {"execute": "device_add", "arguments": {
        "driver": "scsi-hd", "id": f"virtio-{second}", "drive": second, "bus": "scsi0.0", "channel": 0,
        "scsi-id": 0, "lun": 1, "serial": second}}
    assert "virtio-scsi-pci,id=scsi0" in result.qemu.argv  # the controller is there at boot
    assert not any(a.startswith("pcie-root-port") for a in result.qemu.argv)


def test_virtio_blk_ccw_hot_plug(run: Any, two_disks: Any) -> None:
    result = run(two_disks, hotplug=True, machine_type="s390-ccw-virtio",
                 options={"block_device_driver": "virtio-blk-ccw"})
    assert result.qemu.hotplug[1].arguments["devno"] == "fe.0.1000" and "bus" not in result.qemu.hotplug[1].arguments


def test_cold_plug_flag_wins_over_hotplug(host: Any, vmdev_plugins: Any) -> None:
    from vmdev.models import DeviceInfo
    from vmdev.oci import OciSpec
    from vmdev.planner import plan
    from vmdev.settings import SandboxSettings

    host.disk(8, 16, "sdb")
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, cold_plug=True)
    result = plan(OciSpec(devices=(info,)), SandboxSettings(hotplug=True), host=host.fake.context(),
                  plugins=vmdev_plugins("vmdev-block"))
    assert result.qemu.hotplug == () and len(values(result.qemu.argv, "-blockdev")) == 1


def test_nvdimm_cold_plug(host: Any, run: Any) -> None:
    source, backing = host.pmem_mount(5)
    host.disk(8, 16, "sdb")
    mounts = [{"destination": "/pmem", "source": str(source), "type": "bind", "options": ["ro"]}]
    result = run(host.spec([host.device("/dev/xvdb", 8, 16)], mounts), memory_mib=512)
    _disk_id, pmem_id = ids(result)
    argv = result.qemu.argv
    assert argv[:4] == ("-machine", "q35,nvdimm=on", "-m", "512M,slots=1,maxmem=528M")
    assert option(argv, "-object", "memory-backend-file") == [
        "memory-backend-file", f"id=nvdimmbackmem{pmem_id}", f"mem-path={backing}", f"size={16 * MIB}",
        "share=on", "readonly=on"]
    assert option(argv, "-device", "nvdimm") == [
        "nvdimm", f"id=nvdimm{pmem_id}", f"memdev=nvdimmbackmem{pmem_id}", "unarmed=on"]
    pmem = result.to_json()["devices"][1]
    assert (pmem["drive"]["index"], pmem["drive"]["nvdimm_id"], pmem["guest_path"]) == (1, "0", "/dev/pmem0")


def test_two_nvdimms_get_their_own_numbers_and_slots(host: Any, run: Any) -> None:
    mounts = []
    for minor in (5, 6):
        source, _ = host.pmem_mount(minor)
        mounts.append({"destination": f"/pmem{minor}", "source": str(source), "type": "bind"})
    result = run(host.spec(mounts=mounts), memory_mib=256)
    assert "256M,slots=2,maxmem=288M" in result.qemu.argv
    assert [d["drive"]["nvdimm_id"] for d in result.to_json()["devices"]] == ["0", "1"]


def test_nvdimm_driver_for_a_block_device(run: Any, host: Any) -> None:
    host.disk(8, 16, "sdb", size=32 * MIB)
    result = run(host.spec([host.device("/dev/xvdb", 8, 16)]), options={"block_device_driver": "nvdimm"})
    assert option(result.qemu.argv, "-object", "memory-backend-file")[2:4] == ["mem-path=/dev/sdb", f"size={32 * MIB}"]


def test_nvdimm_hot_plug_has_no_unplug(host: Any, run: Any) -> None:
    source, backing = host.pmem_mount(5)
    mount = {"destination": "/pmem", "source": str(source), "type": "bind"}
    result = run(host.spec(mounts=[mount]), hotplug=True, memory_mib=256)
    (pmem_id,) = ids(result)
    assert [c.to_json() for c in result.qemu.hotplug] == [
        {"execute": "object-add", "arguments": {"qom-type": "memory-backend-file", "id": f"nvdimmbackmem{pmem_id}",
                                                "mem-path": str(backing), "size": 16 * MIB, "share": True}},
        {"execute": "device_add", "arguments": {"driver": "nvdimm", "id": f"nvdimm{pmem_id}",
                                                "memdev": f"nvdimmbackmem{pmem_id}"}},
    ]
    assert result.qemu.unplug == ()
    assert "cannot hot-unplug" in result.to_json()["devices"][0]["unplug"]
    assert result.qemu.argv[:4] == ("-machine", "q35,nvdimm=on", "-m", "256M,slots=1,maxmem=272M")


def test_indexes_follow_plan_order_across_drivers(host: Any, run: Any) -> None:
    source, _ = host.pmem_mount(5)
    host.disk(8, 16, "sdb")
    host.disk(8, 32, "sdc")
    oci = host.spec([host.device("/dev/xvdb", 8, 16), host.device("/dev/xvdc", 8, 32)],
                    [{"destination": "/pmem", "source": str(source), "type": "bind"}])
    drives = [d["drive"] for d in run(oci).to_json()["devices"]]
    assert [(d["index"], d["scsi_addr"], d["nvdimm_id"]) for d in drives] == [(0, "0:0", ""), (1, "0:1", ""), (2, "", "0")]


def test_index_and_devno_limits(host: Any, prepared: Any) -> None:
    from vmdev.errors import DeviceError
    from vmdev.models import DeviceInfo
    from vmdev.resources import Allocator
    from vmdev_block.constants import BLOCK_INDEX_POOL
    from vmdev_block.device import build_block_device
    from vmdev_block.drive import ccw_devno

    host.disk(8, 16, "sdb")
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, host_path="/dev/sdb")
    alloc = Allocator.restore({BLOCK_INDEX_POOL: {str(i): f"other{i}" for i in range(65534)}})
    device = build_block_device(info, host.fake.context(), prepared(), alloc)
    assert device is not None and device.drive.scsi_addr == "255:254"  # index 65534, the last one
    again = build_block_device(info, host.fake.context(), prepared(), alloc)
    assert again is not None and again.drive.index == 65534  # the same owner keeps its index
    second = DeviceInfo(container_path="/dev/xvdc", dev_type="b", major=8, minor=16, host_path="/dev/sdb")
    with pytest.raises(DeviceError, match=r"no free block\.index left") as exc:
        build_block_device(second, host.fake.context(), prepared(), alloc)
    assert (exc.value.device, exc.value.field) == ("/dev/xvdc", "block.index")
    assert ccw_devno(0xEFFF, device="/d") == 0xFFFF
    with pytest.raises(DeviceError, match="no CCW device number left"):
        ccw_devno(0xF000, device="/d")


def test_freed_indexes_are_reused_smallest_first(host: Any, prepared: Any) -> None:
    from vmdev.models import DeviceInfo
    from vmdev.resources import Allocator
    from vmdev_block.device import build_block_device

    host.disk(8, 16, "sdb")
    alloc = Allocator()
    built = {}
    for path in ("/dev/a", "/dev/b", "/dev/c"):
        info = DeviceInfo(container_path=path, dev_type="b", major=8, minor=16, host_path="/dev/sdb")
        built[path] = build_block_device(info, host.fake.context(), prepared(), alloc)
    assert [d.drive.scsi_addr if d else None for d in built.values()] == ["0:0", "0:1", "0:2"]
    alloc.release("/dev/b|/dev/sdb")  # the device manager detached /dev/b
    info = DeviceInfo(container_path="/dev/d", dev_type="b", major=8, minor=16, host_path="/dev/sdb")
    device = build_block_device(info, host.fake.context(), prepared(), alloc)
    assert device is not None and device.drive.scsi_addr == "0:1"


def test_other_devices_are_not_rendered(host: Any, prepared: Any) -> None:
    from vmdev.backends.qemu import QemuTarget
    from vmdev.models import GenericDevice
    from vmdev.resources import Allocator
    from vmdev.targets import RenderTarget
    from vmdev_block.plugin import attach_options

    null = GenericDevice(id="null", container_path="/dev/null", host_path="/dev/null", dev_type="c", major=1, minor=3)
    assert attach_options(null, QemuTarget(prepared()), False) is None
    host.disk(8, 16, "sdb")
    from vmdev.models import DeviceInfo
    from vmdev_block.device import build_block_device

    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, host_path="/dev/sdb")
    device = build_block_device(info, host.fake.context(), prepared(), Allocator())
    assert device is not None
    assert attach_options(device, RenderTarget(prepared()), False) is None  # an unknown hypervisor
