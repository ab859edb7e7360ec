"""vmdev-block in real guests: the plan of the real CLI, booted under QEMU (TCG), seen from inside.

Every disk is matched by its serial (the drive id the plan gives) and checked by size, read-only
flag and the marker at offset 0 of its image: never by guest name order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from block_support import (
    MIB,
    allow_rule,
    block_devices,
    block_file_mount,
    device_entry,
    leftover_nodes,
    loop_device,
    plan,
    pmem_mount,
    require_tool,
    run_unplug,
    write_config,
)
from vmdev_rig import GuestReport, Rig
from vmdev_rig.images import MakeDisk

MEMORY = ("--memory", "256")


def assert_disk(report: GuestReport, device: dict[str, Any], *, size: int, marker: str, ro: bool) -> None:
    seen = report.block_by_serial(device["id"])
    assert (seen.size_bytes, seen.marker, seen.ro) == (size, marker, ro), seen


def test_virtio_blk_from_an_image_file_and_a_loop_device(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("file.img", 24, "QHBFILE")
    backing = make_disk("loop.img", 32, "QHBLOOP")
    with loop_device(backing) as node:
        config = write_config(
            tmp_path, devices=[device_entry("/dev/xvdb", node)], mounts=[block_file_mount("/disk", image)]
        )
        result = plan(config, "--block-driver", "virtio-blk", *MEMORY)
        devices = block_devices(result)
        loop, disk = devices["/dev/xvdb"], devices["/disk"]
        assert (loop["host_path"], loop["backing_file"], loop["host_device"]) == (node, str(backing), True)
        assert (disk["host_path"], disk["host_device"]) == (str(image), False)
        assert {loop["drive"]["virt_path"], disk["drive"]["virt_path"]} == {"/dev/vda", "/dev/vdb"}

        boot = rig.boot(result["qemu"]["argv"])

    assert boot.rc == 0
    assert_disk(boot.report, loop, size=32 * MIB, marker="QHBLOOP", ro=False)
    assert_disk(boot.report, disk, size=24 * MIB, marker="QHBFILE", ro=False)
    assert {d.driver for d in boot.report.virtio_by_driver("virtio_blk")} == {"virtio_blk"}


def test_read_only_requested_by_rule_and_mount_and_detected_on_the_device(
    rig: Rig, make_disk: MakeDisk, tmp_path: Path
) -> None:
    ruled = make_disk("ruled.img", 8, "QHRULE")
    detected = make_disk("detected.img", 12, "QHBLKRO")
    mounted = make_disk("mounted.img", 16, "QHMNTRO")
    with loop_device(ruled) as rw_node, loop_device(detected, read_only=True) as ro_node:
        config = write_config(
            tmp_path,
            devices=[device_entry("/dev/ruled", rw_node), device_entry("/dev/detected", ro_node)],
            mounts=[block_file_mount("/mounted", mounted, "ro")],
            rules=[allow_rule(rw_node, "r")],
        )
        result = plan(config, "--block-driver", "virtio-blk", *MEMORY)
        devices = block_devices(result)
        flags = {path: (d["read_only"], d["read_only_detected"]) for path, d in devices.items()}
        assert flags == {"/dev/ruled": (True, False), "/dev/detected": (True, True), "/mounted": (True, False)}

        boot = rig.boot(result["qemu"]["argv"])

    assert_disk(boot.report, devices["/dev/ruled"], size=8 * MIB, marker="QHRULE", ro=True)
    assert_disk(boot.report, devices["/dev/detected"], size=12 * MIB, marker="QHBLKRO", ro=True)
    assert_disk(boot.report, devices["/mounted"], size=16 * MIB, marker="QHMNTRO", ro=True)


def test_virtio_scsi_disks_sit_at_the_planned_hctl(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    first = make_disk("scsi1.img", 8, "QHSCSI1")
    second = make_disk("scsi2.img", 10, "QHSCSI2")
    with loop_device(second) as node:
        config = write_config(
            tmp_path, devices=[device_entry("/dev/sdx", node)], mounts=[block_file_mount("/scsi1", first)]
        )
        settings = tmp_path / "configuration.toml"
        settings.write_text('[hypervisor.qemu]\nblock_device_aio = "native"\n')
        result = plan(config, "--config", str(settings), *MEMORY)  # virtio-scsi: QEMU's default driver
        devices = block_devices(result)
        assert all("file.aio=native" in a and "cache.direct=on" in a for a in blockdev_args(result))
        boot = rig.boot(result["qemu"]["argv"])

    expected = {"/dev/sdx": (10 * MIB, "QHSCSI2"), "/scsi1": (8 * MIB, "QHSCSI1")}
    for path, device in devices.items():
        assert device["driver"] == "virtio-scsi" and device["qemu_driver"] == "scsi-hd"
        size, marker = expected[path]
        assert_disk(boot.report, device, size=size, marker=marker, ro=False)
        hctl = boot.report.block_by_serial(device["id"]).hctl.split(":")
        assert hctl[1:] == ["0", *device["drive"]["scsi_addr"].split(":")], (path, hctl)
    assert sorted(d["drive"]["scsi_addr"] for d in devices.values()) == ["0:0", "0:1"]


def blockdev_args(result: dict[str, Any]) -> list[str]:
    argv = result["qemu"]["argv"]
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-blockdev"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('block_device_aio = "threads"', ["file.aio=threads"]),
        ('block_device_aio = "io_uring"', ["file.aio=io_uring"]),
        ('block_device_aio = "native"', ["cache.direct=on", "file.aio=native"]),
        ('block_device_aio = "threads"\nblock_device_cache_set = true\nblock_device_cache_noflush = true',
         ["cache.direct=off", "cache.no-flush=on", "file.aio=threads"]),
    ],
)
def test_aio_and_cache_modes_are_accepted_by_qemu(
    rig: Rig, make_disk: MakeDisk, tmp_path: Path, settings: str, expected: list[str]
) -> None:
    image = make_disk("aio.img", 4, "QHAIO")
    with loop_device(make_disk("aioloop.img", 4, "QHAIOL")) as node:
        config = write_config(
            tmp_path, devices=[device_entry("/dev/vdz", node)], mounts=[block_file_mount("/aio", image)]
        )
        toml = tmp_path / "configuration.toml"
        toml.write_text(f"[hypervisor.qemu]\n{settings}\n")
        result = plan(config, "--config", str(toml), "--block-driver", "virtio-blk", *MEMORY)
        for arg in blockdev_args(result):
            assert [item for item in arg.split(",") if item.startswith(("cache.", "file.aio"))] == expected
        assert rig.dry_run(result["qemu"]["argv"]) == (0, "")  # QEMU opened both with these modes


def test_nvdimm_from_a_loop_mounted_image_with_a_pfn_info_block(
    rig: Rig, make_disk: MakeDisk, tmp_path: Path
) -> None:
    dataoff = 2 * MIB
    image = make_disk("pmem.img", 64, "QHHEAD")
    plain = make_disk("plain.img", 16, "QHPLAIN")
    with pmem_mount(image, tmp_path / "pmem", dataoff=dataoff, marker="QHPMEM"), \
            pmem_mount(plain, tmp_path / "plain", dataoff=dataoff, marker="QHNOPFN", pfn=False):
        config = write_config(tmp_path, mounts=[
            {"destination": "/pmem", "source": str(tmp_path / "pmem"), "type": "bind"},
            {"destination": "/plain", "source": str(tmp_path / "plain"), "type": "bind"},
        ])
        result = plan(config, *MEMORY)
        devices = block_devices(result)
        assert list(devices) == ["/pmem"]  # no PFN signature: an ordinary mount
        pmem = devices["/pmem"]
        assert (pmem["host_path"], pmem["driver"], pmem["pmem"], pmem["fstype"]) == (str(image), "nvdimm", True, "ext2")
        assert (pmem["size"], pmem["guest_path"]) == (64 * MIB, "/dev/pmem0")
        assert result["qemu"]["argv"][1].endswith(",nvdimm=on")

        boot = rig.boot(result["qemu"]["argv"])

    assert boot.report.pmem == ["/dev/pmem0"]
    # the kernel claimed the info block: one pfn device in "ram" mode (beside the idle seed device)
    assert [d.mode for d in boot.report.nd if d.name.startswith("pfn") and d.mode != "none"] == ["ram"]
    pmem0 = next(b for b in boot.report.block if b.name == "pmem0")
    assert (pmem0.size_bytes, pmem0.marker) == (64 * MIB - dataoff, "QHPMEM")  # data from dataoff on


def test_virtio_mmio_on_microvm(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("mmio.img", 12, "QHMMIO")
    config = write_config(tmp_path, mounts=[block_file_mount("/mmio", image)])
    result = plan(config, "--machine-type", "microvm", "--block-driver", "virtio-mmio", *MEMORY)
    (device,) = block_devices(result).values()
    assert (device["qemu_driver"], device["drive"]["virt_path"]) == ("virtio-blk-device", "/dev/vdb")

    boot = rig.boot(result["qemu"]["argv"])

    assert_disk(boot.report, device, size=12 * MIB, marker="QHMMIO", ro=False)
    blk = [d for d in boot.report.virtio if d.driver == "virtio_blk"]
    assert blk and all(d.parent.startswith("LNRO0005") for d in blk)


def test_file_name_with_comma_equals_and_space(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("disk,1=a b,readonly=on.img", 6, "QHCOMMA")
    config = write_config(tmp_path, mounts=[block_file_mount("/odd", image)])
    result = plan(config, "--block-driver", "virtio-blk", *MEMORY)
    (device,) = block_devices(result).values()
    assert device["host_path"] == str(image)

    boot = rig.boot(result["qemu"]["argv"])

    assert_disk(boot.report, device, size=6 * MIB, marker="QHCOMMA", ro=False)  # not silently read-only


def _hotplug_and_unplug(rig: Rig, result: dict[str, Any], device: dict[str, Any], image: Path,
                        size: int, marker: str) -> GuestReport:
    with rig.start(result["qemu"]["argv"], wait_seconds=120) as guest:
        assert guest.latest_report().find_block(serial=device["id"]) is None
        guest.run(result["qemu"]["hotplug"])
        added = guest.wait_report(lambda r: r.find_block(serial=device["id"]) is not None, timeout=60)
        assert_disk(added, device, size=size, marker=marker, ro=False)

        run_unplug(guest, result["qemu"]["unplug"])
        guest.wait_report(lambda r: r.find_block(serial=device["id"]) is None, timeout=60)
        assert leftover_nodes(guest, device["id"], str(image)) == []
    return added


def test_hot_plug_and_unplug_virtio_blk(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("hot,blk.img", 20, "QHHOTBLK")
    config = write_config(tmp_path, mounts=[block_file_mount("/hot", image)])
    result = plan(config, "--hotplug", "--block-driver", "virtio-blk", *MEMORY)
    (device,) = block_devices(result).values()
    assert device["hotplug"] and device["bus"].startswith("rp")
    assert "-blockdev" not in result["qemu"]["argv"]

    _hotplug_and_unplug(rig, result, device, image, 20 * MIB, "QHHOTBLK")


def test_hot_plug_and_unplug_virtio_scsi(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("hotscsi.img", 14, "QHHOTSCSI")
    with loop_device(image) as node:
        config = write_config(tmp_path, devices=[device_entry("/dev/sdh", node)])
        result = plan(config, "--hotplug", *MEMORY)
        (device,) = block_devices(result).values()
        assert device["qemu_driver"] == "scsi-hd" and "virtio-scsi-pci,id=scsi0" in result["qemu"]["argv"]

        added = _hotplug_and_unplug(rig, result, device, Path(node), 14 * MIB, "QHHOTSCSI")

    assert added.block_by_serial(device["id"]).hctl.split(":")[1:] == ["0", "0", "0"]


def test_virtio_blk_ccw_on_s390x(make_disk: MakeDisk, tmp_path: Path) -> None:
    qemu = require_tool("qemu-system-s390x")
    image = make_disk("ccw.img", 4, "QHCCW")
    config = write_config(tmp_path, mounts=[block_file_mount("/ccw", image, "ro")])
    result = plan(config, "--machine-type", "s390-ccw-virtio", "--block-driver", "virtio-blk-ccw", *MEMORY)
    (device,) = block_devices(result).values()
    assert (device["qemu_driver"], device["drive"]["dev_no"]) == ("virtio-blk-ccw", "0.0.1000")
    path = f"/machine/peripheral/virtio-{device['id']}"

    blocks, devno, props = Rig(qemu=qemu).qmp_oneshot(
        [("query-block", None), ("qom-get", {"path": path, "property": "devno"}), ("qom-list", {"path": path})],
        argv=result["qemu"]["argv"],
    )

    (block,) = [b for b in blocks if b.get("qdev", "").startswith(path)]
    assert (block["inserted"]["node-name"], block["inserted"]["file"], block["inserted"]["ro"]) == (
        device["id"], str(image), True)
    assert devno == "fe.0.1000"
    assert {"devno", "drive", "serial"} <= {p["name"] for p in props}


def test_hot_plug_nvdimm(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    dataoff = 2 * MIB
    image = make_disk("hotpmem.img", 32, "QHHEAD")
    with pmem_mount(image, tmp_path / "pmem", dataoff=dataoff, marker="QHHOTPMEM"):
        config = write_config(tmp_path, mounts=[{"destination": "/pmem", "source": str(tmp_path / "pmem"),
                                                 "type": "bind", "options": ["ro"]}])
        result = plan(config, "--hotplug", *MEMORY)
        (device,) = block_devices(result).values()
        assert device["hotplug"] and "cannot hot-unplug" in device["unplug"]
        with rig.start(result["qemu"]["argv"], wait_seconds=120) as guest:
            assert guest.latest_report().pmem == []
            guest.run(result["qemu"]["hotplug"])
            added = guest.wait_report(lambda r: any(b.name == "pmem0" for b in r.block), timeout=60)

    pmem0 = next(b for b in added.block if b.name == "pmem0")
    assert (pmem0.size_bytes, pmem0.marker, pmem0.ro) == (32 * MIB - dataoff, "QHHOTPMEM", True)
