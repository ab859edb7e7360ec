"""What the plugin reads from the host: loop devices, BLKROGET, /proc/mounts, PFN info blocks."""

from __future__ import annotations

import logging
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import DeviceError
from vmdev.models import DeviceInfo
from vmdev.resources import Allocator
from vmdev.testing import FakeHost
from vmdev_block import host as block_host
from vmdev_block import pmem
from vmdev_block.device import build_block_device
from vmdev_block.host import (
    NotPersistentMemoryError,
    block_size,
    loop_backing_file,
    mount_fstype,
    parse_mounts,
    pmem_device_info,
    probe_read_only,
)
from vmdev_block.pmem import PFN_INFO_OFFSET, fletcher64, pfn_info_block, read_pfn_info
from vmdev_block.testing import loop_device

MIB = 1024 * 1024


def test_loop_backing_file_and_size(fake_host: FakeHost, tmp_path: Path) -> None:
    backing = tmp_path / "img"
    backing.write_bytes(b"\0" * 8192)
    loop_device(fake_host, 7, 3, backing)
    host = fake_host.context()
    assert loop_backing_file(host, 7, 3) == str(backing)
    assert block_size(host, 7, 3) == 8192
    assert loop_backing_file(host, 7, 4) is None  # not a loop device
    assert block_size(host, 8, 0) is None


def test_blkroget_on_a_regular_file_counts_as_writable(
    fake_host: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    fake_host.dev_file("loop0")  # a fake node: the ioctl fails with ENOTTY
    with caplog.at_level(logging.INFO, logger="vmdev.block"):
        assert probe_read_only(fake_host.context(), "/dev/loop0", device="/dev/xvda") is False
    assert "cannot read the read-only flag" in caplog.text and str(fake_host.dev / "loop0") in caplog.text


@pytest.mark.parametrize(("flag", "read_only"), [(1, True), (0, False), (-1, True)])
def test_blkroget_reads_the_flag_of_the_node_under_the_dev_root(
    fake_host: FakeHost, monkeypatch: pytest.MonkeyPatch, flag: int, read_only: bool
) -> None:
    fake_host.dev_file("sdb")
    calls: list[tuple[str, int]] = []

    def ioctl(fd: int, request: int, arg: bytes) -> bytes:
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), request))
        return struct.pack("i", flag)

    monkeypatch.setattr("vmdev_block.host.fcntl.ioctl", ioctl)
    assert probe_read_only(fake_host.context(), "/dev/sdb", device="/dev/xvda") is read_only
    assert calls == [(str(fake_host.dev / "sdb"), 0x125E)]  # BLKROGET, linux/fs.h


def test_parse_mounts_decodes_escapes_and_skips_bad_lines() -> None:
    text = "/dev/loop1 /mnt/with\\040space ext2 rw 0 0\nbroken line\n/dev/sda1 / ext4 rw,relatime 0 0\n"
    assert parse_mounts(text) == [("/dev/loop1", "/mnt/with space", "ext2"), ("/dev/sda1", "/", "ext4")]


def test_mount_fstype_takes_the_topmost_mount(fake_host: FakeHost) -> None:
    fake_host.proc_file("mounts", "/dev/loop1 /data ext2 rw 0 0\n/dev/loop2 /data xfs rw 0 0\n")
    host = fake_host.context()
    assert mount_fstype(host, "/data") == "xfs"
    assert mount_fstype(host, "/other") is None


def test_mount_fstype_without_a_mount_table(fake_host: FakeHost) -> None:
    assert mount_fstype(fake_host.context(), "/data") is None


def test_a_mount_table_that_is_a_fifo_is_not_read_and_does_not_block(fake_host: FakeHost) -> None:
    """Found by the long fuzz run: a plain open() of a FIFO waits for a writer forever (read from a
    thread, so that a reader that blocks fails the test instead of hanging the run)."""
    table = fake_host.context().proc_path("mounts")
    table.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(table)
    found: list[str | None] = []
    worker = threading.Thread(target=lambda: found.append(mount_fstype(fake_host.context(), "/data")),
                              daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "reading the mount table blocked"
    assert found == [None]


def test_fletcher64_matches_the_kernel_definition() -> None:
    # lo = sum of words mod 2^32, hi = sum of the running lo values: words 1, 2, 3 -> lo 6, hi 1+3+6
    assert fletcher64(struct.pack("<III", 1, 2, 3)) == (10 << 32) | 6
    # lo wraps at 2^32 (0xffffffff + 2 -> 1); hi = 0x1_0000_0000 loses its top bit in the u64 shift
    assert fletcher64(struct.pack("<II", 0xFFFFFFFF, 2)) == 1
    assert fletcher64(struct.pack("<II", 0xFFFFFFFF, 0)) == (0x1FFFFFFFE << 32 | 0xFFFFFFFF) & (2**64 - 1)


def test_pfn_info_block_round_trip(tmp_path: Path) -> None:
    image = tmp_path / "pmem.img"
    with open(image, "wb") as out:
        out.truncate(16 * MIB)
        out.seek(PFN_INFO_OFFSET)
        out.write(pfn_info_block(16 * MIB))
    info = read_pfn_info(image)
    assert info is not None
    assert (info.version_major, info.version_minor, info.mode, info.checksum_ok) == (1, 4, 1, True)
    assert (info.dataoff, info.align, info.npfns) == (2 * MIB, 2 * MIB, (14 * MIB) // 4096)
    raw = image.read_bytes()
    assert raw[4096:4112] == b"NVDIMM_PFN_INFO\0"
    assert raw[4096 + 32 : 4096 + 48] == b"\0" * 16  # parent uuid: QEMU's label-less namespace


def test_pfn_info_block_refuses_impossible_layouts() -> None:
    with pytest.raises(ValueError, match=r"bad PFN layout"):
        pfn_info_block(MIB)  # the data offset lies beyond the image
    with pytest.raises(ValueError, match=r"bad PFN layout"):
        pfn_info_block(16 * MIB, dataoff=3 * MIB)  # not aligned


def test_signature_only_and_corrupt_blocks(tmp_path: Path) -> None:
    short = tmp_path / "short.img"
    short.write_bytes(b"\0" * 4096 + b"NVDIMM_PFN_INFO\0")
    info = read_pfn_info(short)
    assert info is not None and not info.checksum_ok
    block = bytearray(pfn_info_block(16 * MIB))
    block[100] ^= 1
    corrupt = tmp_path / "corrupt.img"
    corrupt.write_bytes(b"\0" * 4096 + bytes(block))
    info = read_pfn_info(corrupt)
    assert info is not None and not info.checksum_ok


@pytest.mark.parametrize(
    "content",
    [b"", b"\0" * 5000, b"\0" * 4096 + b"NVDIMM_PFN_INF", b"\0" * 4096 + b"NVDIMM_PFN_INFOX", b"\0" * 4096 + b"NVDIMM_DAX_INFO\0"],
)
def test_no_signature(tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "plain.img"
    image.write_bytes(content)
    assert read_pfn_info(image) is None


def test_unreadable_file_has_no_signature(tmp_path: Path) -> None:
    assert read_pfn_info(tmp_path / "missing.img") is None


def test_a_backing_file_path_with_a_nul_byte_has_no_signature_and_is_no_crash(
    fake_host: FakeHost, tmp_path: Path
) -> None:
    """Found by the long fuzz run: os.open raised ValueError, which the facade reported as the
    plugin breaking its contract."""
    assert read_pfn_info(f"{tmp_path}/pmem\0.img") is None
    loop_device(fake_host, 7, 8, f"{tmp_path}/pmem\0.img")
    source = tmp_path / "mnt"
    source.mkdir()
    fake_host.fake_stat(str(source), mode=stat.S_IFDIR | 0o755, dev=(7, 8))
    with pytest.raises(NotPersistentMemoryError, match="has not PFN signature"):
        pmem_device_info(str(source), "/pmem", fake_host.context())


def _pmem_source(fake_host: FakeHost, tmp_path: Path, content: bytes, minor: int = 5) -> tuple[Path, Path]:
    backing = tmp_path / "pmem.img"
    backing.write_bytes(content)
    loop_device(fake_host, 7, minor, backing)
    source = tmp_path / "mnt"
    source.mkdir()
    fake_host.fake_stat(str(source), mode=stat.S_IFDIR | 0o755, dev=(7, minor))
    return source, backing


def test_pmem_device_info(fake_host: FakeHost, tmp_path: Path) -> None:
    source, backing = _pmem_source(fake_host, tmp_path, b"\0" * 4096 + pfn_info_block(16 * MIB))
    fake_host.proc_file("mounts", f"/dev/loop5 {source} ext2 rw 0 0\n")
    info = pmem_device_info(str(source), "/pmem", fake_host.context(), read_only=True)
    assert (info.container_path, info.dev_type, info.major, info.minor) == ("/pmem", "b", 7, 5)
    assert (info.host_path, info.pmem, info.read_only) == (str(backing), True, True)
    assert dict(info.driver_options) == {"fstype": "ext2"}


def test_pmem_fstype_defaults_to_ext4(
    fake_host: FakeHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, _ = _pmem_source(fake_host, tmp_path, b"\0" * 4096 + pfn_info_block(16 * MIB))
    with caplog.at_level(logging.WARNING, logger="vmdev.block"):
        info = pmem_device_info(str(source), "/pmem", fake_host.context())
    assert dict(info.driver_options) == {"fstype": "ext4"}
    assert f"mount {str(source)!r} not found" in caplog.text


def test_pmem_without_signature_is_katas_error(fake_host: FakeHost, tmp_path: Path) -> None:
    source, backing = _pmem_source(fake_host, tmp_path, b"\0" * 8192)
    with pytest.raises(NotPersistentMemoryError) as exc:
        pmem_device_info(str(source), "/pmem", fake_host.context())
    assert str(exc.value) == (
        f"/pmem: source: backing file {backing} has not PFN signature (no NVDIMM_PFN_INFO at byte 4096)"
    )


def test_pmem_with_a_bad_checksum_is_accepted_with_a_warning(
    fake_host: FakeHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, _ = _pmem_source(fake_host, tmp_path, b"\0" * 4096 + b"NVDIMM_PFN_INFO\0" + b"\0" * 4080)
    with caplog.at_level(logging.WARNING, logger="vmdev.block"):
        info = pmem_device_info(str(source), "/pmem", fake_host.context())
    assert info.pmem
    assert "bad checksum" in caplog.text


def test_pmem_source_not_on_a_loop_device(fake_host: FakeHost, tmp_path: Path) -> None:
    source = tmp_path / "dir"
    source.mkdir()
    fake_host.fake_stat(str(source), mode=stat.S_IFDIR | 0o755, dev=(8, 1))
    with pytest.raises(NotPersistentMemoryError, match=r"is not on a loop device \(8:1 has no loop/backing_file\)"):
        pmem_device_info(str(source), "/pmem", fake_host.context())


def test_pmem_source_missing(fake_host: FakeHost, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"stat .* failed: No such file or directory") as exc:
        pmem_device_info(str(tmp_path / "nope"), "/pmem", fake_host.context())
    assert not isinstance(exc.value, NotPersistentMemoryError) and exc.value.field == "source"


def test_pmem_module_reads_only_what_it_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    opened: list[Any] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        return real_open(path, *args, **kwargs)

    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * 10)
    monkeypatch.setattr(os, "open", spy)
    assert pmem.read_pfn_info(image) is None
    assert opened == [image]


# --- host facts (recorded at build, compared when a saved sandbox is used again) -----------------


def _built(host: Any, prepared: Any, info: DeviceInfo, **settings: Any) -> Any:
    device = build_block_device(info, host.fake.context(), prepared(**settings), Allocator())
    assert device is not None
    return device


def _facts(host: Any, vmdev_plugins: Any, device: Any) -> dict[str, str]:
    facts: dict[str, str] = vmdev_plugins("vmdev-block").host_facts(device, host.fake.context(), name="d")
    return facts


def test_a_loop_device_is_known_by_its_backing_file_and_read_only_flag(
    host: Any, prepared: Any, vmdev_plugins: Any
) -> None:
    first, second = host.image("first.img"), host.image("second.img")
    node = host.loop(0, first)
    device = _built(host, prepared, DeviceInfo(container_path="/dev/xvda", dev_type="b", major=7, minor=0,
                                               host_path=node))
    assert _facts(host, vmdev_plugins, device) == {"backing_file": str(first), "read_only": "false"}
    loop_device(host.fake, 7, 0, second)  # the loop node now shows another file
    assert _facts(host, vmdev_plugins, device)["backing_file"] == str(second)


def test_the_read_only_flag_is_a_fact_only_when_it_was_probed(
    host: Any, prepared: Any, vmdev_plugins: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = host.disk(8, 16, "sdb")
    requested = DeviceInfo(container_path="/a", dev_type="b", major=8, minor=16, host_path=node, read_only=True)
    assert _facts(host, vmdev_plugins, _built(host, prepared, requested)) == {}  # a plain disk asked read-only
    flag = [True]
    monkeypatch.setattr(block_host, "blkroget", lambda path: flag[0])
    detected = _built(host, prepared, DeviceInfo(container_path="/b", dev_type="b", major=8, minor=16, host_path=node))
    assert detected.read_only_detected
    assert _facts(host, vmdev_plugins, detected) == {"read_only": "true"}
    flag[0] = False  # blockdev --setrw on the host
    assert _facts(host, vmdev_plugins, detected) == {"read_only": "false"}


def test_persistent_memory_is_known_by_its_size_and_pfn_block(host: Any, prepared: Any, vmdev_plugins: Any) -> None:
    source, backing = host.pmem_mount(5)
    info = pmem_device_info(str(source), "/pmem", host.fake.context())
    device = _built(host, prepared, info)
    assert _facts(host, vmdev_plugins, device) == {"size": str(16 * MIB), "pfn_info": "valid"}
    with open(backing, "r+b") as image:
        image.seek(PFN_INFO_OFFSET + 100)
        image.write(b"x")
    assert _facts(host, vmdev_plugins, device)["pfn_info"] == "bad checksum"
    backing.write_bytes(b"\0" * 4096)
    assert _facts(host, vmdev_plugins, device) == {"size": "4096", "pfn_info": "missing"}
    backing.unlink()
    assert _facts(host, vmdev_plugins, device) == {"size": "", "pfn_info": "missing"}


def test_an_nvdimm_disk_is_known_by_its_size(host: Any, prepared: Any, vmdev_plugins: Any) -> None:
    node = host.disk(8, 16, "sdb", size=32 * MIB)
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, host_path=node, read_only=True)
    device = _built(host, prepared, info, options={"block_device_driver": "nvdimm"})
    assert _facts(host, vmdev_plugins, device) == {"size": str(32 * MIB)}
    host.fake.write("dev/block/8:16/size", f"{64 * MIB // 512}\n")
    assert _facts(host, vmdev_plugins, device) == {"size": str(64 * MIB)}


def test_a_block_file_has_no_facts_and_other_devices_are_not_answered(
    host: Any, prepared: Any, vmdev_plugins: Any
) -> None:
    from vmdev.models import GenericDevice
    from vmdev_block.plugin import host_facts

    image = host.image("disk.img")
    device = _built(host, prepared, DeviceInfo(container_path="/d", dev_type="b", major=-1, minor=0,
                                               host_path=str(image)))
    assert _facts(host, vmdev_plugins, device) == {}
    null = GenericDevice(id="null", container_path="/dev/null", host_path="/dev/null", dev_type="c", major=1, minor=3)
    assert host_facts(null, host.fake.context()) is None


def test_a_virtio_pmem_file_is_known_by_its_size(host: Any, prepared: Any, vmdev_plugins: Any) -> None:
    """Its size decides QEMU's size and maxmem, as an nvdimm's does."""
    image = host.image("pmem.img", size=8 * MIB)
    info = DeviceInfo(container_path="/p", dev_type="b", major=-1, minor=0, host_path=str(image))
    device = _built(host, prepared, info, options={"block_device_driver": "virtio-pmem"})
    assert device.driver == "virtio-pmem"
    assert _facts(host, vmdev_plugins, device) == {"size": str(8 * MIB)}
