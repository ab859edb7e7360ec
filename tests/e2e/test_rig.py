"""The rig's own proof: hand-written QEMU options booted in a real guest (no vmdev code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmdev_rig import GuestBootError, GuestReport, Rig, parse_report, parse_reports
from vmdev_rig.argv import force_tcg, kernel_append, machine_type
from vmdev_rig.daemon import Daemon, vhost_user_blk_command, virtiofsd_command
from vmdev_rig.images import MakeDisk
from vmdev_rig.initramfs import ModuleIndex, module_closure

MIB = 1024 * 1024
RNG_ARGS = [
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    "virtio-rng-pci,rng=rng0",
]


def _raw_blockdev(node: str, image: Path) -> list[str]:
    spec = {"driver": "raw", "node-name": node, "file": {"driver": "file", "filename": str(image)}}
    return ["-blockdev", json.dumps(spec)]


# (a) cold boot ---------------------------------------------------------------------------------


def test_q35_virtio_blk_and_rng_reach_the_guest(rig: Rig, make_disk: MakeDisk) -> None:
    disk = make_disk("disk1.img", 64, "QHDISK1")
    argv = [
        "-machine",
        "q35",
        "-m",
        "256",
        *_raw_blockdev("d1", disk),
        "-device",
        "virtio-blk-pci,drive=d1,serial=SER1",
        *RNG_ARGS,
    ]

    result = rig.boot(argv)

    assert result.rc == 0
    blk = result.report.block_by_serial("SER1")
    assert (blk.size_bytes, blk.marker, blk.ro, blk.lbs) == (64 * MIB, "QHDISK1", False, 512)
    assert result.report.rng.current.startswith("virtio_rng")
    assert result.report.rng.sample  # the guest read bytes from /dev/hwrng
    assert {d.driver for d in result.report.virtio} == {"virtio_blk", "virtio_rng"}


def test_microvm_virtio_mmio_devices(rig: Rig, make_disk: MakeDisk) -> None:
    disk = make_disk("mmio.img", 12, "QHMMIO")
    argv = [
        "-machine",
        "microvm",
        "-m",
        "256",
        "-drive",
        f"file={disk},if=none,id=m1,format=raw",
        "-device",
        "virtio-blk-device,drive=m1,serial=MMIOSER",
        "-object",
        "rng-builtin,id=rng0",
        "-device",
        "virtio-rng-device,rng=rng0",
    ]

    result = rig.boot(argv)

    assert "tsc_early_khz=" in " ".join(result.command)
    assert result.report.block_by_marker("QHMMIO").serial == "MMIOSER"
    assert result.report.rng.current.startswith("virtio_rng")
    assert all(d.parent.startswith("LNRO0005") for d in result.report.virtio)


def test_refused_options_raise_with_qemu_stderr(rig: Rig) -> None:
    with pytest.raises(GuestBootError, match=r"Property 'virtio-blk-pci\.bogus' not found"):
        rig.boot(["-machine", "q35", "-device", "virtio-blk-pci,bogus=1"])


def test_vhost_user_backends_virtiofs_and_blk(
    rig: Rig, make_disk: MakeDisk, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hello from host\n")
    image = make_disk("vhu.img", 40, "QHVHU")
    vfs_sock, vhu_sock = tmp_path / "vfs.sock", tmp_path / "vhu.sock"
    argv = [
        "-machine",
        "q35,memory-backend=mem",
        "-m",
        "256",
        "-object",
        "memory-backend-memfd,id=mem,size=256M,share=on",
        "-chardev",
        f"socket,id=vfs0,path={vfs_sock}",
        "-device",
        "vhost-user-fs-pci,chardev=vfs0,tag=hostshare",
        "-chardev",
        f"socket,id=vhu0,path={vhu_sock}",
        "-device",
        "vhost-user-blk-pci,chardev=vhu0",
    ]

    with (
        Daemon(virtiofsd_command(vfs_sock, share), ready=vfs_sock),
        Daemon(vhost_user_blk_command(vhu_sock, image), ready=vhu_sock),
    ):
        result = rig.boot(argv, append="qh.virtiofs=hostshare")

    fs = result.report.share("hostshare")
    assert (fs.mounted, fs.files, fs.hello, fs.write_ok) == (
        True,
        ["hello.txt"],
        "hello_from_host",
        True,
    )
    assert (share / "from-guest.txt").read_text() == "hello-from-guest\n"
    assert result.report.block_by_marker("QHVHU").size_bytes == 40 * MIB


# (b) hotplug over QMP --------------------------------------------------------------------------


def _has_virtio_rng(report: GuestReport) -> bool:
    return bool(report.virtio_by_driver("virtio_rng"))


def test_hotplug_virtio_rng_on_root_port(rig: Rig) -> None:
    argv = [
        "-machine",
        "q35",
        "-m",
        "256",
        "-device",
        "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1",
        "-device",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2",
    ]
    with rig.start(argv, wait_seconds=90) as guest:
        assert not _has_virtio_rng(guest.latest_report())
        guest.run(
            [
                {
                    "execute": "object-add",
                    "arguments": {
                        "qom-type": "rng-random",
                        "id": "hrng",
                        "filename": "/dev/urandom",
                    },
                },
                {
                    "execute": "device_add",
                    "arguments": {
                        "driver": "virtio-rng-pci",
                        "id": "hotrng",
                        "bus": "rp0",
                        "rng": "hrng",
                    },
                },
            ]
        )
        added = guest.wait_report(_has_virtio_rng, timeout=30)
        assert added.tag.startswith("hotplug-")
        assert added.rng.current.startswith("virtio_rng")
        assert any(
            p.bdf.endswith(":00.0") and p.vendor == 0x1AF4 and p.device == 0x1044 for p in added.pci
        )  # modern-only virtio-rng behind the root port

        guest.execute("device_del", {"id": "hotrng"})
        guest.wait_event("DEVICE_DELETED", timeout=30, match={"device": "hotrng"})
        removed = guest.wait_report(lambda r: not _has_virtio_rng(r), timeout=30)
        assert removed.rng.current == "none"
    assert guest.returncode == 0


# (c) dry run and property schema ---------------------------------------------------------------


def test_dry_run_accepts_good_and_rejects_bogus_property(rig: Rig, make_disk: MakeDisk) -> None:
    disk = make_disk("dry.img", 8, "QHDRY")
    base = ["-machine", "q35", "-m", "256", *_raw_blockdev("d1", disk), *RNG_ARGS]

    assert rig.dry_run([*base, "-device", "virtio-blk-pci,drive=d1,serial=OK1"]) == (0, "")
    rc, stderr = rig.dry_run([*base, "-device", "virtio-blk-pci,drive=d1,bogus=1"])
    assert rc == 1
    assert "Property 'virtio-blk-pci.bogus' not found" in stderr


def test_device_properties_schema(rig: Rig) -> None:
    props = {p["name"]: p["type"] for p in rig.device_properties("virtio-blk-pci")}
    assert props["serial"] == "str"
    assert props["drive"] == "str"
    assert props["logical_block_size"] == "size"


def test_module_closure_orders_dependencies_first(rig: Rig) -> None:
    order = module_closure(ModuleIndex.scan(rig.kernel.modules_dir), ["virtio_blk", "sd_mod"])
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_blk")
    assert order.index("scsi_mod") < order.index("sd_mod")


# (d) pure unit tests (no QEMU) -----------------------------------------------------------------

CANNED_SERIAL = """\
[    0.000000] Linux version 6.1.0-56-cloud-amd64 (noise before init)\r
QH-INIT-START uptime=1.74 kernel=6.1.0-56-cloud-amd64\r
QH-INSMOD-FAIL nfit insmod:_can't_insert\r
QH-REPORT-BEGIN boot\r
pci 0000:00:01.0 vendor=0x1af4 device=0x1001 class=0x010000 driver=virtio-pci\r
pci 0000:00:1f.0 vendor=0x8086 device=0x2918 class=0x060100 driver=\r
virtio virtio0 device=0x0002 vendor=0x1af4 driver=virtio_blk parent=0000:00:01.0\r
block vda size512=131072 ro=0 serial=SER-D1 hctl= wwid= lbs=512 marker=QHDISK1\r
block sdb size512=49152 ro=1 serial= hctl=0:0:3:0 wwid=naa.5000c50015ea71ac lbs=4096 marker=\r
scsi 0:0:3:0 type=0 vendor=ACME model=TESTDISK rev=2.5+\r
rng available=virtio_rng.0,tpm-rng-0 current=virtio_rng.0\r
rng sample=9005d6d3a4ad2837\r
nd namespace0.0 devtype=nd_namespace_io size=134217728 mode=raw\r
nd ndbus0 devtype= size= mode=\r
pmemdev /dev/pmem0\r
mount /mnt/virtiofs-myfs source=myfs type=virtiofs opts=rw,relatime\r
virtiofs myfs mounted=1 files=hello.txt,sub_dir hello=hello_from_host write=1\r
9p hostshare mounted=0 error=mount:_mounting_hostshare_failed\r
something-new x=1\r
QH-REPORT-END boot\r
QH-READY-FOR-HOTPLUG\r
QH-REPORT-BEGIN hotplug-1\r
block vda size512=131072 ro=0 serial=SER-D1 hctl= wwid= lbs=512 marker=QHDISK1\r
rng available= current=none\r
QH-REPORT-END hotplug-1\r
QH-REPORT-BEGIN hotplug-2\r
block vdb size512=2048 ro=0 serial=HOT marker=QHHOT\r
"""


def test_parse_reports_boot_and_hotplug() -> None:
    reports = parse_reports(CANNED_SERIAL)
    assert [r.tag for r in reports] == ["boot", "hotplug-1"]  # hotplug-2 is incomplete
    boot = reports[0]
    assert [(p.bdf, p.vendor, p.device, p.class_code, p.driver) for p in boot.pci] == [
        ("0000:00:01.0", 0x1AF4, 0x1001, 0x010000, "virtio-pci"),
        ("0000:00:1f.0", 0x8086, 0x2918, 0x060100, ""),
    ]
    assert boot.virtio[0].device == 2 and boot.virtio[0].parent == "0000:00:01.0"
    assert boot.rng.available == ["virtio_rng.0", "tpm-rng-0"]
    assert (boot.rng.current, boot.rng.sample) == ("virtio_rng.0", "9005d6d3a4ad2837")
    assert boot.scsi[0].hctl == "0:0:3:0" and boot.scsi[0].model == "TESTDISK"
    assert boot.nd[0].size == 134217728 and boot.nd[1].size is None
    assert boot.pmem == ["/dev/pmem0"]
    assert boot.mounts[0].target == "/mnt/virtiofs-myfs" and boot.mounts[0].fstype == "virtiofs"
    assert boot.unknown == ["something-new x=1"]
    assert reports[1].rng.current == "none" and reports[1].rng.available == []


def test_block_helpers() -> None:
    boot = parse_report(CANNED_SERIAL, "boot")
    vda = boot.block_by_serial("SER-D1")
    assert (vda.name, vda.size_bytes, vda.ro, vda.marker) == ("vda", 64 * MIB, False, "QHDISK1")
    sdb = boot.block[1]
    assert (sdb.name, sdb.ro, sdb.hctl, sdb.lbs, sdb.marker) == ("sdb", True, "0:0:3:0", 4096, "")
    assert sdb.wwid == "naa.5000c50015ea71ac"
    assert boot.find_block(serial="nope") is None
    with pytest.raises(LookupError, match="vda"):
        boot.block_by_serial("nope")


def test_share_lines() -> None:
    boot = parse_report(CANNED_SERIAL)
    share = boot.share("myfs")
    assert share.mounted and share.write_ok and share.files == ["hello.txt", "sub_dir"]
    assert share.hello == "hello_from_host"
    failed = boot.share("hostshare")
    assert failed.kind == "9p" and not failed.mounted and failed.error.startswith("mount:")


def test_parse_report_missing_tag() -> None:
    with pytest.raises(ValueError, match="hotplug-2"):
        parse_report(CANNED_SERIAL, "hotplug-2")


def test_argv_helpers() -> None:
    argv = ["-machine", "microvm,accel=kvm", "-enable-kvm", "-accel", "kvm", "-m", "256"]
    assert machine_type(argv) == "microvm"
    assert machine_type(["-M", "type=q35,nvdimm=on"]) == "q35"
    assert force_tcg(argv) == ["-machine", "microvm", "-m", "256"]
    assert force_tcg(["-machine", "accel=kvm", "-m", "1G"]) == ["-m", "1G"]
    assert (
        kernel_append(["-machine", "q35"], "qh.wait=5") == "console=ttyS0 quiet panic=-1 qh.wait=5"
    )
