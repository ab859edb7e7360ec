"""Kata's block keys of issue 10 in real QEMU and real guests: virtio-pmem, the sector sizes, the
iothreads, and a disk the host has mounted (the real CLI's plans, QEMU under TCG).

Guest boots are few (the machine's cores are shared): one for cold virtio-pmem, one for the
sector sizes cold and hot, one for virtio-pmem hot plug; QEMU's acceptance of the iothreads and
the SCSI sector sizes is read over QMP from a machine that is built but never run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from block_support import (
    MIB,
    allow_rule,
    block_devices,
    block_file_mount,
    block_sizes,
    device_entry,
    mounted_loop,
    mounted_root_device,
    plan,
    plan_error,
    pmem_mount,
    sector_rig,
    write_config,
)
from vmdev_rig import GuestReport, Rig
from vmdev_rig.images import MakeDisk

MEMORY = ("--memory", "256")
VIRTIO_PMEM_ID = 0x1B


def settings_file(directory: Path, qemu: str, vmdev: str = "") -> Path:
    path = directory / "configuration.toml"
    path.write_text(f"[hypervisor.qemu]\n{qemu}\n" + (f"[vmdev]\n{vmdev}\n" if vmdev else ""))
    return path


def pmem_disk(report: GuestReport, marker: str) -> Any:
    return next((b for b in report.block if b.name.startswith("pmem") and b.marker == marker), None)


def test_virtio_pmem_disks_and_a_pfn_image_reach_the_guest(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    dataoff = 2 * MIB
    plain = make_disk("plain.img", 24, "QHVPMEM")
    read_only = make_disk("ro.img", 8, "QHVPMEMRO")
    pfn = make_disk("pfn.img", 64, "QHHEAD")
    with pmem_mount(pfn, tmp_path / "pmem", dataoff=dataoff, marker="QHVPFN"):
        config = write_config(tmp_path, mounts=[
            block_file_mount("/plain", plain),
            block_file_mount("/ro", read_only, "ro"),
            {"destination": "/pmem", "source": str(tmp_path / "pmem"), "type": "bind"},
        ])
        result = plan(config, "--block-driver", "virtio-pmem", *MEMORY)
        devices = block_devices(result)
        assert {p: (d["driver"], d["qemu_driver"]) for p, d in devices.items()} == {
            p: ("virtio-pmem", "virtio-pmem-pci") for p in ("/plain", "/ro", "/pmem")}
        assert (devices["/pmem"]["pmem"], devices["/pmem"]["fstype"]) == (True, "ext2")
        argv = result["qemu"]["argv"]
        assert argv[argv.index("-m") + 1] == "256M,slots=3,maxmem=352M"  # 24 + 8 + 64 MiB of room
        assert "nvdimm=on" not in argv[argv.index("-machine") + 1]
        before = read_only.read_bytes()

        boot = rig.boot(argv)

    assert boot.rc == 0
    assert len([v for v in boot.report.virtio if v.device == VIRTIO_PMEM_ID and v.driver == "virtio_pmem"]) == 3
    seen = {marker: pmem_disk(boot.report, marker) for marker in ("QHVPMEM", "QHVPMEMRO", "QHVPFN")}
    assert seen["QHVPMEM"] is not None and seen["QHVPMEM"].size_bytes == 24 * MIB
    assert seen["QHVPMEMRO"] is not None and seen["QHVPMEMRO"].size_bytes == 8 * MIB
    # the guest's pmem driver honours the PFN info block on virtio-pmem too: data from dataoff on
    assert seen["QHVPFN"] is not None and seen["QHVPFN"].size_bytes == 64 * MIB - dataoff
    assert read_only.read_bytes() == before  # QEMU mapped it read-only
    planned = {"QHVPMEM": "/plain", "QHVPMEMRO": "/ro", "QHVPFN": "/pmem"}
    assert {path: f"/dev/{seen[marker].name}" for marker, path in planned.items()} == {
        path: devices[path]["guest_path"] for path in planned.values()}  # each is the /dev/pmemN planned


def test_sector_sizes_reach_cold_and_hot_plugged_disks(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    cold_image = make_disk("cold.img", 16, "QHLBSCOLD")
    hot_image = make_disk("hot.img", 12, "QHLBSHOT")
    toml = settings_file(tmp_path, 'block_device_driver = "virtio-blk"\nblock_device_logical_sector_size = 4096\n'
                         "block_device_physical_sector_size = 8192", "hotplug_root_ports = 1")
    cold_dir, hot_dir = tmp_path / "cold", tmp_path / "hot"
    cold_dir.mkdir()
    hot_dir.mkdir()
    cold = plan(write_config(cold_dir, mounts=[block_file_mount("/cold", cold_image)]), "--config", str(toml), *MEMORY)
    hot = plan(write_config(hot_dir, mounts=[block_file_mount("/hot", hot_image)]), "--config", str(toml),
               "--hotplug", *MEMORY)
    (cold_disk,) = block_devices(cold).values()
    (hot_disk,) = block_devices(hot).values()
    assert any("logical_block_size=4096,physical_block_size=8192" in a for a in cold["qemu"]["argv"])
    commands = [c for c in hot["qemu"]["hotplug"] if hot_disk["id"] in (c["arguments"].get("node-name"),
                                                                       c["arguments"].get("drive"))]
    (add,) = [c["arguments"] for c in commands if c["execute"] == "device_add"]
    assert (add["logical_block_size"], add["physical_block_size"]) == (4096, 8192)
    assert f"pcie-root-port,id={add['bus']}" in " ".join(cold["qemu"]["argv"])  # the cold plan's spare port

    twin = sector_rig(rig)
    with twin.start(cold["qemu"]["argv"], wait_seconds=120) as guest:
        assert block_sizes(guest.serial_text(), "boot") == {cold_disk["id"]: (4096, 8192)}
        guest.run(commands)  # the disk's (the plan of the installed plugins may hot-plug more)
        added = guest.wait_report(lambda r: r.find_block(serial=hot_disk["id"]) is not None, timeout=60)
        sizes = block_sizes(guest.serial_text(), added.tag)

    assert sizes == {cold_disk["id"]: (4096, 8192), hot_disk["id"]: (4096, 8192)}
    assert added.block_by_serial(hot_disk["id"]).size_bytes == 12 * MIB
    assert added.block_by_serial(cold_disk["id"]).marker == "QHLBSCOLD"


def test_qemu_takes_the_iothreads_and_scsi_sector_sizes(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    scsi_image, blk_image = make_disk("scsi.img", 4, "QHSCSI"), make_disk("blk.img", 4, "QHBLK")
    keys = ("enable_iothreads = true\nindep_iothreads = 2\nblock_device_logical_sector_size = 512\n"
            "block_device_physical_sector_size = 4096")
    scsi_dir, blk_dir = tmp_path / "scsi", tmp_path / "blk"
    scsi_dir.mkdir()
    blk_dir.mkdir()
    scsi = plan(write_config(scsi_dir, mounts=[block_file_mount("/s", scsi_image)]),
                "--config", str(settings_file(scsi_dir, keys)), *MEMORY)
    blk = plan(write_config(blk_dir, mounts=[block_file_mount("/b", blk_image)]),
               "--config", str(settings_file(blk_dir, keys + '\nblock_device_driver = "virtio-blk"')), *MEMORY)
    (scsi_disk,) = block_devices(scsi).values()
    (blk_disk,) = block_devices(blk).values()
    disk_path = "/machine/peripheral/virtio-{}"

    controller_thread, scsi_sizes, objects = Rig(qemu=rig.qemu).qmp_oneshot([
        ("qom-get", {"path": "/machine/peripheral/scsi0", "property": "iothread"}),
        ("qom-get", {"path": disk_path.format(scsi_disk["id"]), "property": "physical_block_size"}),
        ("qom-list", {"path": "/objects"}),
    ], argv=scsi["qemu"]["argv"])
    blk_thread, blk_logical = Rig(qemu=rig.qemu).qmp_oneshot([
        ("qom-get", {"path": disk_path.format(blk_disk["id"]), "property": "iothread"}),
        ("qom-get", {"path": disk_path.format(blk_disk["id"]), "property": "logical_block_size"}),
    ], argv=blk["qemu"]["argv"])

    names = {o["name"] for o in objects if o["type"] == "child<iothread>"}
    assert controller_thread.startswith("/objects/iothread-") and controller_thread.removeprefix("/objects/") in names
    assert {"indep_iothread_0", "indep_iothread_1"} <= names
    assert scsi_sizes == 4096
    assert (blk_thread, blk_logical) == ("/objects/indep_iothread_0", 512)


def test_virtio_pmem_hot_plug(rig: Rig, make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("hot.img", 16, "QHHOTVPMEM")
    result = plan(write_config(tmp_path, mounts=[block_file_mount("/hot", image)]),
                  "--block-driver", "virtio-pmem", "--hotplug", *MEMORY)
    (device,) = block_devices(result).values()
    mine = [c for c in result["qemu"]["hotplug"] if device["id"] in json.dumps(c)]
    assert [c["execute"] for c in mine] == ["object-add", "device_add"]
    assert device["hotplug"] and "cannot hot-unplug" in device["unplug"]
    assert not any(device["id"] in json.dumps(c) for c in result["qemu"]["unplug"])
    with rig.start(result["qemu"]["argv"], wait_seconds=120) as guest:
        assert pmem_disk(guest.latest_report(), "QHHOTVPMEM") is None
        guest.run(mine)
        added = guest.wait_report(lambda r: pmem_disk(r, "QHHOTVPMEM") is not None, timeout=60)

    assert pmem_disk(added, "QHHOTVPMEM").size_bytes == 16 * MIB
    assert any(v.device == VIRTIO_PMEM_ID and v.driver == "virtio_pmem" for v in added.virtio)


def test_the_host_s_mounted_root_disk_is_refused(tmp_path: Path) -> None:
    """A privileged spec lists the host's own root disk: two kernels would write one file system."""
    node, major, minor = mounted_root_device()
    config = write_config(tmp_path, devices=[{"path": "/dev/hostroot", "type": "b", "major": major, "minor": minor}])
    error = plan_error(config, *MEMORY)
    assert error.count("\n") == 1 and f'"{node}" is mounted read-write on the host at "/"' in error
    assert "allow_host_mounted_block_devices = true" in error
    read_only = write_config(tmp_path, devices=[{"path": "/dev/hostroot", "type": "b", "major": major,
                                                 "minor": minor}],
                             rules=[{"allow": True, "type": "b", "major": major, "minor": minor, "access": "r"}])
    (device,) = block_devices(plan(read_only, *MEMORY)).values()
    assert (device["host_path"], device["read_only"]) == (node, True)


def test_a_loop_device_the_host_mounted_read_write(make_disk: MakeDisk, tmp_path: Path) -> None:
    image = make_disk("mounted.img", 8, "QHMOUNTED")
    with mounted_loop(image, tmp_path / "mnt") as node:
        config = write_config(tmp_path, devices=[device_entry("/dev/xvdm", node)])
        error = plan_error(config, *MEMORY)
        assert f'"{node}" is mounted read-write on the host at "{tmp_path / "mnt"}"' in error
        allowed = settings_file(tmp_path, "", "allow_host_mounted_block_devices = true")
        (device,) = block_devices(plan(config, "--config", str(allowed), *MEMORY)).values()
        assert (device["host_path"], device["read_only"]) == (node, False)
        ruled = write_config(tmp_path, devices=[device_entry("/dev/xvdm", node)], rules=[allow_rule(node, "r")])
        assert block_devices(plan(ruled, *MEMORY))["/dev/xvdm"]["read_only"] is True
    with mounted_loop(image, tmp_path / "ro", "ro") as node:
        config = write_config(tmp_path, devices=[device_entry("/dev/xvdm", node)])
        assert block_devices(plan(config, *MEMORY))["/dev/xvdm"]["read_only"] is False  # a read-only mount
    assert os.path.exists(image)
