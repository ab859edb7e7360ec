"""Default host-path resolution: every branch of Kata's GetHostPath (reference §3)."""

from __future__ import annotations

import posixpath
import random

import pytest

from vmdev.defaults.host_path import devname_path, parse_uevent
from vmdev.errors import ResolveError
from vmdev.models import DeviceInfo
from vmdev.testing import FakeHost


def info(path: str, dev_type: str, major: int, minor: int, host_path: str = "") -> DeviceInfo:
    return DeviceInfo(container_path=path, dev_type=dev_type, major=major, minor=minor, host_path=host_path)


@pytest.fixture
def resolve(fake_host: FakeHost, vmdev_plugins):
    pm = vmdev_plugins()
    return lambda i: pm.resolve_host_path(i, fake_host.context())


def test_empty_container_path_is_an_error_first(resolve) -> None:
    with pytest.raises(ResolveError, match="empty path") as exc:
        resolve(info("", "b", -1, 0, "/img"))
    assert exc.value.field == "path"


def test_major_minus_one_returns_given_host_path(resolve) -> None:
    assert resolve(info("/dev/xvdb", "b", -1, 0, "/var/lib/img.raw")) == "/var/lib/img.raw"
    assert resolve(info("/dev/xvdb", "b", -1, 0, "")) == ""


def test_missing_uevent_returns_container_path(resolve) -> None:
    assert resolve(info("/dev/fuse", "c", 10, 229)) == "/dev/fuse"
    assert resolve(info("/dev/vfio/2", "c", 252, 3)) == "/dev/vfio/2"


def test_fifo_returns_container_path(resolve) -> None:
    assert resolve(info("/dev/fifo", "p", 0, 0)) == "/dev/fifo"


@pytest.mark.parametrize(
    ("dev_type", "kind", "major", "minor", "text", "expected"),
    [
        ("c", "char", 252, 3, "MAJOR=252\nMINOR=3\nDEVNAME=vfio/2", "/dev/vfio/2"),
        ("u", "char", 1, 3, "MAJOR=1\nMINOR=3\nDEVNAME=null\n", "/dev/null"),
        ("b", "block", 8, 16, "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk", "/dev/sdb"),
        ("c", "char", 237, 0, "DEVNAME=vfio/devices/vfio0", "/dev/vfio/devices/vfio0"),
        ("b", "block", 7, 0, "# comment\n; other\n  DEVNAME = loop0 # trailing\n", "/dev/loop0"),
        ("b", "block", 7, 1, 'DEVNAME="loop1"\nDEVNAME=loop9', "/dev/loop9"),
        ("c", "char", 5, 1, "DEVNAME: console", "/dev/console"),
    ],
)
def test_uevent_devname(
    resolve, fake_host: FakeHost, dev_type: str, kind: str, major: int, minor: int, text: str, expected: str
) -> None:
    fake_host.uevent(kind, major, minor, text)
    assert resolve(info("/dev/xvda", dev_type, major, minor)) == expected


def test_char_and_block_trees_are_distinct(resolve, fake_host: FakeHost) -> None:
    fake_host.uevent("block", 8, 0, "DEVNAME=sda")
    assert resolve(info("/dev/x", "c", 8, 0)) == "/dev/x"
    assert resolve(info("/dev/x", "b", 8, 0)) == "/dev/sda"


def test_uevent_without_devname_names_the_file(resolve, fake_host: FakeHost) -> None:
    path = fake_host.uevent("block", 8, 16, "MAJOR=8\nMINOR=16")
    with pytest.raises(ResolveError) as exc:
        resolve(info("/dev/xvda", "b", 8, 16))
    assert str(path) in str(exc.value)
    assert "no DEVNAME" in str(exc.value)
    assert exc.value.device == "/dev/xvda"


def test_malformed_uevent_names_the_file(resolve, fake_host: FakeHost) -> None:
    path = fake_host.uevent("char", 252, 3, "nonkeyvaluedata")
    with pytest.raises(ResolveError, match="malformed uevent") as exc:
        resolve(info("/dev/vfio/2", "c", 252, 3))
    assert str(path) in str(exc.value)
    assert str(exc.value).startswith("/dev/vfio/2: major:minor: ")


@pytest.mark.parametrize("devname", ["../etc/passwd", "/etc/passwd", "a/../../x", ""])
def test_devname_cannot_leave_dev(resolve, fake_host: FakeHost, devname: str) -> None:
    fake_host.uevent("char", 9, 9, f"DEVNAME={devname}")
    with pytest.raises(ResolveError, match="unusable DEVNAME"):
        resolve(info("/dev/x", "c", 9, 9))


def test_real_sysfs_resolves_dev_null(vmdev_plugins) -> None:
    """The default context reads the real /sys: /dev/null is 1:3 on every Linux host."""
    from vmdev.host import HostContext

    pm = vmdev_plugins()
    assert pm.resolve_host_path(info("/dev/mynull", "c", 1, 3), HostContext()) == "/dev/null"


def _uevent_as_go_ini_reads_it(text: str) -> dict[str, str] | None:
    """Kata's go-ini reading of a uevent file (lines end at newlines, ASCII blanks trimmed), written
    the slow obvious way (None: malformed)."""
    blanks = " \t\r\v\f"
    values: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.strip(blanks)
        if not line or line[0] in "#;":
            continue
        cuts = [i for i in (line.find("="), line.find(":")) if i >= 0]
        if not cuts or min(cuts) == 0:
            return None
        key, value = line[: min(cuts)].strip(blanks), line[min(cuts) + 1 :].strip(blanks)
        for stop in "#;":
            value = value.split(stop)[0].strip(blanks) if stop in value else value
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
            value = value[1:-1]
        values[key] = value
    return values


def test_uevent_parsing_and_devname_paths_agree_with_the_slow_reading_on_random_text() -> None:
    pieces = ("DEVNAME", "=", ":", "a", "b/c", " ", "#", ";", '"', "'", "\n", "..", ".", "/", "x y", "\r",
              "\u2028", "\t")
    rnd = random.Random(13)
    for _ in range(3000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12)))
        expected = _uevent_as_go_ini_reads_it(text)
        try:
            assert parse_uevent(text, source="uevent", device="/dev/x") == expected
        except ResolveError:
            assert expected is None
        name = text.replace("\n", "").replace("\r", "")
        path = posixpath.normpath(posixpath.join("/dev", name))
        if not name or name.startswith("/") or not path.startswith("/dev/"):
            with pytest.raises(ResolveError, match="unusable DEVNAME"):
                devname_path(name, source="uevent", device="/dev/x")
        else:
            assert devname_path(name, source="uevent", device="/dev/x") == path
