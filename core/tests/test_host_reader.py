"""The one host reader never hangs, never follows a loop, never replaces bytes, and turns every
OS problem into one VmdevError line naming the file (and, through the facade, the device)."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from vmdev.errors import HostReadError
from vmdev.host import MAX_READ, HostContext, SysfsReader
from vmdev.models import DeviceInfo
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.testing import FakeHost


def reader(tmp_path: Path) -> SysfsReader:
    return SysfsReader(tmp_path)


def test_a_fifo_where_a_file_was_expected_is_an_error_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "uevent")
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(reader(tmp_path).read_text, "uevent")))
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], HostReadError) and "is not a regular file" in str(outcome[0])


def test_a_directory_or_a_symlink_loop_is_one_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    for name, reason in (("dir", "is not a regular file"), ("a", "Too many levels of symbolic links")):
        with pytest.raises(HostReadError) as exc:
            reader(tmp_path).read_text(name)
        assert reason in str(exc.value) and exc.value.field == str(tmp_path / name)


def test_reads_are_capped(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (MAX_READ + 1))
    with pytest.raises(HostReadError, match="holds more than"):
        reader(tmp_path).read_text("big")
    assert reader(tmp_path).read_bytes("big", limit=MAX_READ + 1) == b"x" * (MAX_READ + 1)


def test_bytes_are_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "uevent").write_bytes(b"DEVNAME=sd\xffa\n")
    with pytest.raises(HostReadError, match=r"is not UTF-8 text \(byte 10: b'\\xff'\)"):
        reader(tmp_path).read_text("uevent")


def test_missing_files_are_still_a_plain_none(tmp_path: Path) -> None:
    r = reader(tmp_path)
    assert (r.read_text("nope"), r.read_text("nope/deeper"), r.list_dir("nope"), r.size("nope")) == (
        None, None, [], None)


def test_a_uevent_that_is_a_directory_names_the_device_through_the_facade(fake_host: FakeHost) -> None:
    (fake_host.sysfs / "dev" / "char" / "10:200" / "uevent").mkdir(parents=True)
    pm = PluginManager(LoadPolicy(only=())).load()
    info = DeviceInfo(container_path="/dev/odd", dev_type="c", major=10, minor=200)
    with pytest.raises(HostReadError) as exc:
        pm.resolve_host_path(info, fake_host.context())
    assert exc.value.device == "/dev/odd"
    assert str(exc.value).startswith("/dev/odd: ") and "is not a regular file" in str(exc.value)


def _catch(func: object, *args: object) -> object:
    try:
        return func(*args)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


def test_file_names_are_exactly_the_paths_pathlib_would_build() -> None:
    """The reader and the host context join strings where pathlib would only concatenate: the
    file opened, every message and every stat key (FakeHost's) stay those of ``Path / relative``."""
    parts = ("a", "b.c", ".", "..", "", "/")
    rnd = random.Random(13)
    for root in ("/", "//", ".", "sys", "/tmp/host/sys", "/x/"):
        reader = SysfsReader(root)
        context = HostContext(dev_root=root)
        for _ in range(400):
            relative = "".join(rnd.choice(parts) + rnd.choice(("/", "")) for _ in range(rnd.randint(0, 5)))
            assert reader.file(relative) == str(reader.path(relative)), (root, relative)
            host_path = "/dev/" + relative
            assert context.dev_file(host_path) == str(context.dev_path(host_path)), (root, host_path)
            assert context.dev_file(relative) == str(context.dev_path(relative)), (root, relative)


@pytest.mark.parametrize(("size", "reads"), [(0, 1), (33, 1), (65535, 1), (65536, 2), (65537 + 9, 2)])
def test_a_file_is_read_in_as_few_reads_as_its_size_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, reads: int
) -> None:
    """Issue 13: a short read of a regular file is its end, so a sysfs attribute costs one read,
    not a second one to see the end; a file of 64 KiB and more still comes whole."""
    (tmp_path / "attr").write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    calls: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        calls.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", counting_read)
    data = SysfsReader(tmp_path).read_bytes("attr")
    assert data is not None and len(data) == size and len(calls) == reads
