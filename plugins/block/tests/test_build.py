"""Which requests the plugin claims and the devices it builds (OCI devices and mounts)."""

from __future__ import annotations

import logging
import stat
import struct
from typing import Any

import attrs
import pytest

from vmdev.errors import DeviceError, ResolveError, UnclaimedDeviceError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.planner import plan
from vmdev.resources import Allocator
from vmdev.settings import SandboxSettings
from vmdev_block import host as block_host
from vmdev_block.device import build_block_device

MIB = 1024 * 1024
FILE_OPT = "io.katacontainers.fs-opt.block_device=file"


def only(result: Any) -> dict[str, Any]:
    (dev,) = [d for d in result.to_json()["devices"] if d["kind"] == "block"]
    found: dict[str, Any] = dev
    return found


def test_oci_block_device(host: Any, run: Any) -> None:
    host.disk(8, 16, "sdb", size=64 * MIB)
    dev = only(run(host.spec([host.device("/dev/xvdb", 8, 16)])))
    assert (dev["plugin"], dev["container_path"], dev["host_path"]) == ("block", "/dev/xvdb", "/dev/sdb")
    assert (dev["driver"], dev["host_device"], dev["size"], dev["read_only"]) == ("virtio-scsi", True, 64 * MIB, False)
    assert dev["id"].startswith("drive-") and len(dev["id"]) == 20
    assert (dev["major"], dev["minor"], dev["backing_file"], dev["pmem"]) == (8, 16, "", False)


def test_ids_are_stable_and_distinct(host: Any, run: Any) -> None:
    host.disk(8, 16, "sdb")
    host.disk(8, 32, "sdc")
    oci = host.spec([host.device("/dev/xvdb", 8, 16), host.device("/dev/xvdc", 8, 32)])
    first = [d["id"] for d in run(oci).to_json()["devices"]]
    assert first == [d["id"] for d in run(oci).to_json()["devices"]]
    assert len(set(first)) == 2


def test_loop_device_keeps_the_node_and_shows_the_backing_file(host: Any, run: Any) -> None:
    backing = host.image("backing.img", size=8 * MIB)
    host.loop(0, backing)
    dev = only(run(host.spec([host.device("/dev/xvda", 7, 0)])))
    assert (dev["host_path"], dev["backing_file"], dev["size"]) == ("/dev/loop0", str(backing), 8 * MIB)
    assert dev["drive"]["file"] == "/dev/loop0"


def test_read_only_requested_by_an_allow_rule(host: Any, run: Any) -> None:
    host.disk(8, 16, "sdb")
    rules = [{"allow": True, "type": "b", "major": 8, "minor": 16, "access": "r"}]
    dev = only(run(host.spec([host.device("/dev/xvdb", 8, 16)], rules=rules)))
    assert (dev["read_only"], dev["read_only_detected"], dev["drive"]["read_only"]) == (True, False, True)


def test_read_only_detected_with_blkroget(host: Any, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    host.disk(8, 16, "sdb")
    seen: list[str] = []

    def blkroget(path: Any) -> bool:
        seen.append(str(path))
        return True

    monkeypatch.setattr(block_host, "blkroget", blkroget)
    dev = only(run(host.spec([host.device("/dev/xvdb", 8, 16)])))
    assert (dev["read_only"], dev["read_only_detected"]) == (True, True)
    assert seen == [str(host.fake.dev / "sdb")]


def test_blkroget_failure_counts_as_writable(host: Any, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    host.disk(8, 16, "sdb")  # a fake node: the real ioctl fails
    monkeypatch.setattr("vmdev_block.host.fcntl.ioctl", lambda *a: (_ for _ in ()).throw(OSError(25, "Inappropriate ioctl")))
    assert only(run(host.spec([host.device("/dev/xvdb", 8, 16)])))["read_only"] is False
    monkeypatch.setattr("vmdev_block.host.fcntl.ioctl", lambda *a: struct.pack("i", 0))
    assert only(run(host.spec([host.device("/dev/xvdb", 8, 16)])))["read_only"] is False


def test_vhost_user_majors_are_left_alone_when_the_store_is_on(host: Any, vmdev_plugins: Any) -> None:
    host.disk(241, 0, "vhostblk0")
    oci = host.spec([host.device("/dev/vhost0", 241, 0)])
    pm = vmdev_plugins("vmdev-block")
    store = SandboxSettings(options={"enable_vhost_user_store": True})
    with pytest.raises(UnclaimedDeviceError):
        plan(oci, store, host=host.fake.context(), plugins=pm)
    # without the store, 241 is an ordinary block major
    assert only(plan(oci, SandboxSettings(), host=host.fake.context(), plugins=pm))["host_path"] == "/dev/vhostblk0"


def test_character_devices_are_not_claimed(host: Any, prepared: Any) -> None:
    info = DeviceInfo(container_path="/dev/null", dev_type="c", major=1, minor=3, host_path="/dev/null")
    assert build_block_device(info, host.fake.context(), prepared(), Allocator()) is None


def test_missing_host_node_is_an_error(host: Any, run: Any) -> None:
    # no uevent: the core refuses the block device (Kata falls back to the container path and would
    # attach whatever host file sits there)
    with pytest.raises(ResolveError, match=r"this host has no block device 8:99") as exc:
        run(host.spec([host.device("/dev/xvdq", 8, 99)]))
    assert (exc.value.device, exc.value.field) == ("/dev/xvdq", "major:minor")


def test_per_device_block_driver_option(host: Any, prepared: Any) -> None:
    host.disk(8, 16, "sdb")
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, host_path="/dev/sdb",
                      driver_options={"block-driver": "virtio-blk"})
    device = build_block_device(info, host.fake.context(), prepared(), Allocator())
    assert device is not None and device.driver == "virtio-blk"
    runtime_rs = attrs.evolve(info, driver_options={"block-driver": "virtio-blk-mmio"})
    device = build_block_device(runtime_rs, host.fake.context(), prepared(), Allocator())
    assert device is not None and device.driver == "virtio-mmio"  # runtime-rs' name for it
    bad = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, host_path="/dev/sdb",
                     driver_options={"block-driver": "ide"})
    with pytest.raises(DeviceError, match=r"'ide' is not a block driver") as exc:
        build_block_device(bad, host.fake.context(), prepared(), Allocator())
    assert exc.value.field == "block-driver"


# --- mounts ---------------------------------------------------------------------------------------


def test_bind_mount_of_a_block_device(host: Any, run: Any) -> None:
    source = host.tmp / "blknode"
    source.touch()
    host.fake.fake_stat(str(source), mode=stat.S_IFBLK | 0o660, rdev=(7, 3))
    host.fake.write("dev/block/7:3/size", f"{4 * MIB // 512}\n")
    mount = {"destination": "/data", "source": str(source), "type": "bind", "options": ["rbind", "ro"]}
    dev = only(run(host.spec(mounts=[mount])))
    assert (dev["container_path"], dev["host_path"], dev["major"], dev["minor"]) == ("/data", str(source), 7, 3)
    assert (dev["read_only"], dev["host_device"], dev["size"]) == (True, True, 4 * MIB)


def test_block_file_mount(host: Any, run: Any) -> None:
    image = host.image("disk,1=a b.img", size=4 * MIB)
    mount = {"destination": "/disk", "source": str(image), "type": "bind", "options": [FILE_OPT]}
    dev = only(run(host.spec(mounts=[mount])))
    assert (dev["major"], dev["minor"], dev["host_path"], dev["host_device"]) == (-1, 0, str(image), False)
    assert (dev["size"], dev["read_only"]) == (4 * MIB, False)


def test_block_file_option_works_without_bind_type(host: Any, run: Any) -> None:
    image = host.image("disk.img")
    mount = {"destination": "/disk", "source": str(image), "type": "ext4", "options": [FILE_OPT, "ro"]}
    assert only(run(host.spec(mounts=[mount])))["read_only"] is True


def test_block_file_option_on_a_directory_is_an_error(host: Any, run: Any) -> None:
    mount = {"destination": "/disk", "source": str(host.tmp), "type": "bind", "options": [FILE_OPT]}
    with pytest.raises(DeviceError, match=r"is marked io.katacontainers.fs-opt.block_device") as exc:
        run(host.spec(mounts=[mount]))
    assert (exc.value.device, exc.value.field) == ("/disk", "source")


def test_regular_file_bind_mount_is_not_a_disk(host: Any, run: Any) -> None:
    image = host.image("plain.img")
    mount = {"destination": "/etc/hosts", "source": str(image), "type": "bind", "options": ["rbind"]}
    assert run(host.spec(mounts=[mount])).devices == ()


def test_non_bind_mounts_are_ignored(host: Any, run: Any) -> None:
    mounts = [{"destination": "/proc", "source": "proc", "type": "proc"},
              {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}]
    assert run(host.spec(mounts=mounts)).devices == ()


def test_missing_bind_source_is_katas_stat_error(host: Any, run: Any) -> None:
    mount = {"destination": "/data", "source": str(host.tmp / "gone"), "type": "bind"}
    with pytest.raises(DeviceError, match=r"stat .*gone failed: No such file or directory") as exc:
        run(host.spec(mounts=[mount]))
    assert (exc.value.device, exc.value.field) == ("/data", "source")


def test_disable_block_device_use(host: Any, run: Any) -> None:
    image = host.image("disk.img")
    source, _ = host.pmem_mount(5)
    mounts = [{"destination": "/disk", "source": str(image), "type": "bind", "options": [FILE_OPT]},
              {"destination": "/pmem", "source": str(source), "type": "bind"}]
    assert run(host.spec(mounts=mounts), options={"disable_block_device_use": True}).devices == ()
    # OCI type b devices are still passed (as in Kata)
    host.disk(8, 16, "sdb")
    result = run(host.spec([host.device("/dev/xvdb", 8, 16)], mounts), options={"disable_block_device_use": True})
    assert [d.container_path for d in result.devices] == ["/dev/xvdb"]


def test_pmem_mount(host: Any, run: Any) -> None:
    source, backing = host.pmem_mount(5, fstype="ext2")
    mount = {"destination": "/pmem", "source": str(source), "type": "bind", "options": ["ro"]}
    dev = only(run(host.spec(mounts=[mount])))
    assert (dev["host_path"], dev["driver"], dev["pmem"], dev["fstype"], dev["format"]) == (
        str(backing), "nvdimm", True, "ext2", "raw")
    assert (dev["major"], dev["minor"], dev["size"], dev["read_only"]) == (7, 5, 16 * MIB, True)
    assert dev["drive"]["pmem"] is True and dev["drive"]["nvdimm_id"] == "0"


def test_pmem_ignores_the_sandbox_driver(host: Any, run: Any) -> None:
    source, _ = host.pmem_mount(5)
    mount = {"destination": "/pmem", "source": str(source), "type": "bind"}
    dev = only(run(host.spec(mounts=[mount]), options={"block_device_driver": "virtio-blk"}))
    assert dev["driver"] == "nvdimm"


def test_loop_mount_without_pfn_signature_stays_a_mount(
    host: Any, run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    source, backing = host.pmem_mount(5, pfn=False)
    mount = {"destination": "/data", "source": str(source), "type": "bind"}
    with caplog.at_level(logging.DEBUG, logger="vmdev.block"):
        assert run(host.spec(mounts=[mount])).devices == ()
    assert f"backing file {backing} has not PFN signature" in caplog.text


def test_pmem_image_size_must_be_page_aligned(host: Any, run: Any) -> None:
    source, backing = host.pmem_mount(5)
    with open(backing, "ab") as image:
        image.write(b"x")
    mount = {"destination": "/pmem", "source": str(source), "type": "bind"}
    with pytest.raises(DeviceError, match=r"an nvdimm needs a multiple of 4096 bytes") as exc:
        run(host.spec(mounts=[mount]))
    assert (exc.value.device, exc.value.field) == ("/pmem", "size")


def test_nvdimm_driver_needs_a_known_size(host: Any, run: Any) -> None:
    host.fake.block_device(8, 16, "sdb")  # no sysfs size
    host.fake.fake_stat(str(host.fake.dev / "sdb"), mode=stat.S_IFBLK | 0o660, rdev=(8, 16))
    with pytest.raises(DeviceError, match=r"cannot tell the size of /dev/sdb"):
        run(host.spec([host.device("/dev/xvdb", 8, 16)]), options={"block_device_driver": "nvdimm"})


def test_resolve_host_path_keeps_a_given_source(host: Any) -> None:
    from vmdev_block.plugin import resolve_host_path

    given = DeviceInfo(container_path="/data", dev_type="b", major=7, minor=3, host_path="/dev/loop3")
    assert resolve_host_path(given, HostContext()) == "/dev/loop3"
    oci = DeviceInfo(container_path="/dev/xvda", dev_type="b", major=7, minor=3)
    assert resolve_host_path(oci, HostContext()) is None  # the core's sysfs lookup
    block_file = DeviceInfo(container_path="/d", dev_type="b", major=-1, minor=0, host_path="/img")
    assert resolve_host_path(block_file, HostContext()) is None  # the core returns it


def test_a_directory_is_not_a_disk(host: Any, prepared: Any) -> None:
    info = DeviceInfo(container_path="/d", dev_type="b", major=-1, minor=0, host_path=str(host.tmp))
    with pytest.raises(DeviceError, match="is neither a block device nor a regular file") as exc:
        build_block_device(info, host.fake.context(), prepared(), Allocator())
    assert (exc.value.device, exc.value.field) == ("/d", "path")


def test_a_block_file_needs_a_host_path(host: Any, prepared: Any) -> None:
    info = DeviceInfo(container_path="/d", dev_type="b", major=-1, minor=0)
    with pytest.raises(DeviceError, match="no host path") as exc:
        build_block_device(info, host.fake.context(), prepared(), Allocator())
    assert exc.value.field == "path"
