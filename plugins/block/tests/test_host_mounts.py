"""A disk the host has mounted read-write is refused (two kernels writing one file system corrupt
it), unless the request is read-only or the runtime says it knows better."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from vmdev.errors import DeviceError, HostReadError
from vmdev_block.host import HostMount, parse_mountinfo, stacked_devices, writable_host_mount

ROOT_LINE = "29 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
SETTING = "allow_host_mounted_block_devices"


def mountinfo(host: Any, *lines: str) -> None:
    host.fake.proc_file("self/mountinfo", "".join(lines))


def partition(host: Any, disk: str, major: int, minor: int, name: str, part_minor: int) -> None:
    """``name`` (MAJ:part_minor), a partition of the disk MAJ:MIN, as sysfs shows it."""
    host.fake.write(f"dev/block/{major}:{minor}/{name}/partition", "1\n")
    host.fake.write(f"dev/block/{major}:{minor}/{name}/dev", f"{major}:{part_minor}\n")
    host.fake.write(f"dev/block/{major}:{part_minor}/dev", f"{major}:{part_minor}\n")


def test_mountinfo_lines_with_optional_fields_and_escapes() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n"
        "37 35 8:2 / /ro ro,relatime - xfs /dev/sda2 ro\n"
        "38 35 8:3 / /bind ro,relatime - ext4 /dev/sda3 rw\n"
        "garbage line\n"
        "39 35 x:y / /bad rw - ext4 /dev/z rw\n"
    )
    assert parse_mountinfo(text) == [
        HostMount(major=98, minor=0, mount_point="/mnt two", source="/dev/root", writable=True),
        HostMount(major=8, minor=2, mount_point="/ro", source="/dev/sda2", writable=False),
        HostMount(major=8, minor=3, mount_point="/bind", source="/dev/sda3", writable=True),  # rw super block
    ]


def test_the_host_s_root_disk_in_a_privileged_spec_is_refused(host: Any, run: Any) -> None:
    """containerd's privileged spec lists every host device, the root disk included."""
    host.disk(8, 0, "sda")
    partition(host, "sda", 8, 0, "sda1", 1)
    host.fake.fake_stat(str(host.fake.dev / "sda1"), mode=0o60660, rdev=(8, 1))
    mountinfo(host, ROOT_LINE)
    with pytest.raises(DeviceError) as exc:
        run(host.spec([host.device("/dev/sda", 8, 0)]))
    assert str(exc.value) == (
        '/dev/sda: path: "/dev/sda" is mounted read-write on the host at "/" (as 8:1, "/dev/sda1"): a guest '
        "writing it too would corrupt the file system; ask for it read-only, or set "
        "allow_host_mounted_block_devices = true")
    assert (exc.value.device, exc.value.field) == ("/dev/sda", "path")


def test_a_mounted_partition_itself_is_refused(host: Any, run: Any) -> None:
    host.disk(8, 1, "sda1")
    mountinfo(host, ROOT_LINE)
    with pytest.raises(DeviceError, match=r'mounted read-write on the host at "/" \(as 8:1'):
        run(host.spec([host.device("/dev/sda1", 8, 1)]), options={"block_device_driver": "virtio-blk"})


def test_a_disk_under_lvm_is_refused_by_its_holder(host: Any, run: Any) -> None:
    host.disk(8, 16, "sdb")
    partition(host, "sdb", 8, 16, "sdb2", 18)
    host.fake.write("dev/block/8:18/holders/dm-0/dev", "253:0\n")
    mountinfo(host, "40 29 253:0 / /var/lib/data rw,relatime - xfs /dev/mapper/vg-data rw,attr2\n")
    assert stacked_devices(host.fake.context(), 8, 16) == [(8, 16), (8, 18), (253, 0)]
    with pytest.raises(DeviceError, match=r'at "/var/lib/data" \(as 253:0, "/dev/mapper/vg-data"\)'):
        run(host.spec([host.device("/dev/xvdb", 8, 16)]))


@pytest.mark.parametrize("how", ["rule", "blkroget"])
def test_a_read_only_request_may_share_the_host_s_mount(
    host: Any, run: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.disk(8, 1, "sda1")
    mountinfo(host, ROOT_LINE)
    rules = [{"allow": True, "type": "b", "major": 8, "minor": 1, "access": "r"}] if how == "rule" else []
    if how == "blkroget":
        from vmdev_block import host as block_host

        monkeypatch.setattr(block_host, "blkroget", lambda path: True)
    (device,) = run(host.spec([host.device("/dev/sda1", 8, 1)], rules=rules)).to_json()["devices"]
    assert device["read_only"] is True


def test_a_read_only_host_mount_is_no_danger(host: Any, run: Any) -> None:
    host.disk(8, 1, "sda1")
    mountinfo(host, "29 1 8:1 / /mnt ro,relatime - ext4 /dev/sda1 ro\n")
    (device,) = run(host.spec([host.device("/dev/sda1", 8, 1)])).to_json()["devices"]
    assert device["read_only"] is False


def test_the_setting_lets_a_runtime_that_knows_better_pass_it(
    host: Any, run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    host.disk(8, 1, "sda1")
    mountinfo(host, ROOT_LINE)
    with caplog.at_level(logging.WARNING, logger="vmdev.block"):
        (device,) = run(host.spec([host.device("/dev/xvda1", 8, 1)]), options={SETTING: True}).devices
    assert not device.device.read_only
    assert 'is mounted read-write on the host at "/"' in caplog.text and SETTING in caplog.text


def test_persistent_memory_keeps_kata_s_shared_loop_mount(host: Any, run: Any) -> None:
    """The host keeps its loop mount of a pmem image (Kata's behaviour): not refused."""
    source, backing = host.pmem_mount(5)
    mountinfo(host, f"50 29 7:5 / {source} rw,relatime - ext2 /dev/loop5 rw\n")
    oci = host.spec(mounts=[{"destination": "/pmem", "source": str(source), "type": "bind"}])
    (device,) = run(oci).to_json()["devices"]
    assert (device["driver"], device["host_path"], device["read_only"]) == ("nvdimm", str(backing), False)


def test_a_loop_device_mounted_read_write_is_refused(host: Any, run: Any) -> None:
    node = host.loop(3, host.image("data.img"))
    mountinfo(host, "51 29 7:3 / /srv rw - ext4 /dev/loop3 rw\n")
    with pytest.raises(DeviceError, match=r'"/dev/loop3" is mounted read-write on the host at "/srv"'):
        run(host.spec([host.device("/dev/xvdc", 7, 3)]))
    assert node == "/dev/loop3"


def test_other_devices_and_hosts_without_a_table_pass(host: Any, run: Any) -> None:
    host.disk(8, 16, "sdb")
    assert run(host.spec([host.device("/dev/xvdb", 8, 16)])).devices  # no mountinfo at all
    mountinfo(host, ROOT_LINE)
    assert run(host.spec([host.device("/dev/xvdb", 8, 16)])).devices  # sda1 is not sdb
    assert writable_host_mount(host.fake.context(), 8, 16) is None


def test_an_unreadable_mount_table_is_one_line(host: Any, run: Any) -> None:
    host.disk(8, 16, "sdb")
    (host.fake.proc / "self" / "mountinfo").mkdir(parents=True)
    with pytest.raises(HostReadError, match=r"mountinfo.* is not a regular file"):
        run(host.spec([host.device("/dev/xvdb", 8, 16)]))
