"""The numbers of the node you attach are the numbers requested (issue 11's wrong devices)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import DeviceError, ResolveError
from vmdev.fakehost import FakeHost
from vmdev.models import DeviceInfo
from vmdev.planner import Pipeline
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings


def pipeline(host: FakeHost) -> Pipeline:
    return Pipeline.start(SandboxSettings(), host.context(), PluginManager(LoadPolicy(only=())))


def request(path: str, dev_type: str, major: int, minor: int) -> DeviceInfo:
    return DeviceInfo(container_path=path, dev_type=dev_type, major=major, minor=minor)


def test_a_block_request_without_a_sysfs_entry_never_takes_the_container_path(fake_host: FakeHost) -> None:
    fake_host.dev_file("../etc/shadow", "secret")  # whatever sits at the container path
    with pytest.raises(ResolveError) as exc:
        pipeline(fake_host).resolve(request("/etc/shadow", "b", 259, 99))
    assert (exc.value.device, exc.value.field) == ("/etc/shadow", "major:minor")
    assert "this host has no block device 259:99" in exc.value.message


def test_a_node_with_other_numbers_than_requested_is_refused(fake_host: FakeHost) -> None:
    # sysfs says 250:7 is vda, but the node /dev/vda is the host's root disk 254:0
    fake_host.uevent("block", 250, 7, "MAJOR=250\nMINOR=7\nDEVNAME=vda\n")
    node = fake_host.dev_file("vda")
    fake_host.fake_stat(str(node), mode=stat.S_IFBLK | 0o660, rdev=(254, 0))
    with pytest.raises(DeviceError) as exc:
        pipeline(fake_host).resolve(request("/dev/vda", "b", 250, 7))
    assert exc.value.field == "major:minor"
    assert exc.value.message == 'the host node "/dev/vda" is block device 254:0, not the requested b 250:7'


def test_a_character_node_must_not_stand_for_a_block_request(fake_host: FakeHost) -> None:
    fake_host.uevent("block", 8, 0, "MAJOR=8\nMINOR=0\nDEVNAME=sda\n")
    node = fake_host.dev_file("sda")
    fake_host.fake_stat(str(node), mode=stat.S_IFCHR | 0o660, rdev=(8, 0))
    with pytest.raises(DeviceError, match="is character device 8:0, not the requested b 8:0"):
        pipeline(fake_host).resolve(request("/dev/sda", "b", 8, 0))


def test_sysfs_naming_a_node_that_is_missing_is_refused_for_block_devices(fake_host: FakeHost) -> None:
    fake_host.uevent("block", 8, 16, "MAJOR=8\nMINOR=16\nDEVNAME=sdb\n")
    with pytest.raises(DeviceError, match='sysfs names "/dev/sdb" for block device 8:16, but it does not exist'):
        pipeline(fake_host).resolve(request("/dev/xvdb", "b", 8, 16))


def test_the_right_node_resolves(fake_host: FakeHost) -> None:
    fake_host.block_device(8, 16, "sdb")
    fake_host.char_device(10, 229, "fuse")
    p = pipeline(fake_host)
    assert p.resolve(request("/dev/xvdb", "b", 8, 16)).host_path == "/dev/sdb"
    assert p.resolve(request("/dev/fuse", "c", 10, 229)).host_path == "/dev/fuse"


def test_a_character_device_without_sysfs_or_node_stays_in_the_container_as_kata_does(fake_host: FakeHost) -> None:
    assert pipeline(fake_host).resolve(request("/dev/custom", "c", 240, 1)).host_path == "/dev/custom"


def test_a_character_fallback_onto_a_node_with_other_numbers_is_refused(fake_host: FakeHost) -> None:
    node = fake_host.dev_file("null")
    fake_host.fake_stat(str(node), mode=stat.S_IFCHR | 0o666, rdev=(1, 3))
    with pytest.raises(DeviceError, match="is character device 1:3, not the requested c 1:99"):
        pipeline(fake_host).resolve(request("/dev/null", "c", 1, 99))


# --- the real command line on the real host -----------------------------------------------------------
def plan_cli(tmp_path: Path, device: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"linux": {"devices": [device]}}))
    env = {"VMDEV_PLUGINS": "", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "vmdev", "plan", str(spec)], capture_output=True, text=True,
                          env=env, check=False)


def test_the_cli_refuses_etc_shadow_as_a_made_up_block_device_in_one_line(tmp_path: Path) -> None:
    if Path("/sys/dev/block/259:99").exists():
        pytest.fail("this host has a block device 259:99; the test needs numbers nobody uses")
    done = plan_cli(tmp_path, {"path": "/etc/shadow", "type": "b", "major": 259, "minor": 99})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("vmdev: error: /etc/shadow: major:minor: this host has no block device 259:99")
    assert done.stderr.count("\n") == 1


def test_the_cli_refuses_a_host_node_with_other_numbers_in_one_line(tmp_path: Path) -> None:
    done = plan_cli(tmp_path, {"path": "/dev/null", "type": "c", "major": 1, "minor": 99})
    assert (done.returncode, done.stderr) == (
        1, 'vmdev: error: /dev/null: major:minor: the host node "/dev/null" is character device 1:3, not the '
           "requested c 1:99\n")


def test_vmdev_resolve_refuses_a_host_node_with_other_numbers_as_plan_does(tmp_path: Path) -> None:
    env = {"VMDEV_PLUGINS": "", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "vmdev", "resolve", "--sysfs-root", str(tmp_path), "--type", "c", "--major", "1"]
    wrong = subprocess.run([*argv, "--minor", "99", "/dev/null"], capture_output=True, text=True, env=env, check=False)
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (
        1, "", 'vmdev: error: /dev/null: major:minor: the host node "/dev/null" is character device 1:3, not the '
               "requested c 1:99\n")
    right = subprocess.run([*argv, "--minor", "3", "/dev/null"], capture_output=True, text=True, env=env, check=False)
    assert (right.returncode, right.stdout) == (0, "/dev/null\n")
