"""The fuzz kit's own rules: the parser reads QEMU options as QEMU does, and each oracle fires when
the rule it guards is broken on purpose (escaping, one-line errors, the node check, paths, time)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from vmdev_fuzz import hosts as h
from vmdev_fuzz import strategies
from vmdev_fuzz.cases import PlanCase
from vmdev_fuzz.oracles import (
    CRASH,
    HANG,
    INJECTION,
    MULTI_LINE,
    PATH_CHANGE,
    WRONG_DEVICE,
    CleanKeys,
    Hang,
    judge_error,
    line_problem,
    option_violations,
)
from vmdev_fuzz.qemuopts import parse_argv, parse_option
from vmdev_fuzz.runner import Session, time_limit
from vmdev_fuzz.surfaces import SURFACES, Outcome, Surface, clean_twin, strings_in

import vmdev.planner
import vmdev.qemu
from vmdev.errors import DeviceError, PluginError, VmdevError


def oracles_of(outcome: Outcome) -> set[str]:
    return {v.oracle for v in outcome.violations}


def disk_mount(name: str) -> PlanCase:
    """A block-file mount of an image called ``name``, planned for QEMU (virtio-blk)."""
    source = f"{h.ROOT}/mnt/{name}"
    return PlanCase(
        hypervisor="qemu", options={"block_device_driver": "virtio-blk"},
        host=h.HostSpec(files=((source, h.FileSpec.text("x" * 8192)),)),
        document=strategies.oci([], mounts=[{"destination": "/data", "source": source, "type": "bind",
                                             "options": [strategies.BLOCK_FILE_OPTION + "=file"]}]))


def test_double_commas_are_one_comma_in_a_value() -> None:
    option = parse_option("-device", "virtio-blk-pci,id=a,,b,drive=x,,y")
    assert option.params == (("driver", "virtio-blk-pci"), ("id", "a,b"), ("drive", "x,y"))
    assert (option.head, option.bare, option.duplicates()) == ("virtio-blk-pci", (), [])


def test_a_single_comma_in_a_value_starts_a_new_parameter() -> None:
    option = parse_option("-blockdev", "driver=raw,file.filename=/a,read-only=on,b")
    assert option.params == (("driver", "raw"), ("file.filename", "/a"), ("read-only", "on"), ("b", "on"))
    assert option.bare == ("b",)


def test_the_implied_key_applies_only_to_a_first_parameter_without_equals() -> None:
    assert parse_option("-object", "rng-random,id=r").head == "rng-random"
    assert parse_option("-object", "qom-type=rng-random,id=r").params[0] == ("qom-type", "rng-random")
    assert parse_option("-blockdev", "raw,x=1").bare == ("raw",)  # keyval has no implied key


def test_json_option_values_are_flattened() -> None:
    option = parse_option("-blockdev", '{"driver": "raw", "file": {"driver": "file", "filename": "/a,b"}}')
    assert option.json_form and option.get("file.filename") == "/a,b"


def test_argv_flags_without_values_are_skipped() -> None:
    options = parse_argv(["-S", "-nodefaults", "-m", "512M", "-device", "x,id=y"])
    assert [(o.flag, o.head) for o in options] == [("-m", "512M"), ("-device", "x")]


def test_keys_no_clean_input_gives_are_injection() -> None:
    clean = CleanKeys()
    clean.learn(["-device", "virtio-blk-pci,id=a,drive=b"])
    found = option_violations(["-device", "virtio-blk-pci,id=a,drive=b,x-injected=1"], clean, [])
    assert [v.oracle for v in found] == [INJECTION]
    assert option_violations(["-device", "virtio-blk-pci,id=a,drive=b"], clean, []) == []


def test_an_unescaped_hostile_path_is_injection() -> None:
    found = option_violations(["-blockdev", "driver=raw,file.filename=/a,b=c"], CleanKeys(), ["/a,b=c"])
    assert INJECTION in {v.oracle for v in found}


def test_a_clean_twin_keeps_the_shape_without_commas() -> None:
    case = disk_mount("a,read-only=on.img")
    twin = clean_twin(case)
    assert not any("," in text for text in strings_in(twin))
    assert twin.document["mounts"][0]["source"].startswith(h.ROOT + "/mnt/a_read-only=on.img-")


def test_line_problems() -> None:
    assert line_problem("/dev/sda: path: ok") is None
    for bad in ("a\nb", "a\rb", "a\x1bb", "a\u2028b", "a\x85b", "a\ud800b"):
        assert line_problem(bad) is not None, bad


def test_a_plugin_error_wrapping_a_value_error_is_a_crash() -> None:
    def failing_plugin() -> None:
        try:
            int("²")
        except ValueError as exc:
            raise PluginError("plugin 'x' failed in build_device: ValueError") from exc

    with pytest.raises(PluginError) as caught:
        failing_plugin()
    assert [v.oracle for v in judge_error(caught.value)] == [CRASH]
    assert judge_error(DeviceError("fine", device="/dev/a", field="path")) == []
    assert [v.oracle for v in judge_error(KeyError("x"))] == [CRASH]


# --- breaking each rule once -------------------------------------------------------------------
def test_the_injection_oracle_sees_unescaped_commas(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    case = disk_mount("disk,read-only=on.img")
    assert oracles_of(session.run("mounts", case)) == set()
    monkeypatch.setattr(vmdev.qemu, "escape", lambda value: value)
    assert INJECTION in oracles_of(session.run("mounts", case))


def test_the_one_line_oracle_sees_raw_messages(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    case = PlanCase(hypervisor="qemu", document=strategies.oci([{"path": "/dev/x\u2028y", "type": "b", "major": 259,
                                                                "minor": 99}]))
    assert oracles_of(session.run("oci-devices", case)) == set()
    monkeypatch.setattr(VmdevError, "__str__", lambda self: f"{self.device}: {self.message}")
    assert MULTI_LINE in oracles_of(session.run("oci-devices", case))


def test_the_wrong_device_oracle_sees_a_skipped_node_check(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    # sysfs says 8:0 is "sda", but /dev/sda is 8:16: the planner must refuse
    entry = h.DevEntry(kind="block", major=8, minor=0, devname="sda", node="sda", node_rdev=(8, 16))
    case = PlanCase(hypervisor="qemu", host=h.HostSpec(devices=(entry,)),
                    document=strategies.oci([{"path": "/dev/xvda", "type": "b", "major": 8, "minor": 0}]))
    assert session.run("oci-devices", case).status == "refused"
    monkeypatch.setattr(vmdev.planner, "check_node", lambda *args, **kwargs: None)
    assert WRONG_DEVICE in oracles_of(session.run("oci-devices", case))


def test_the_path_oracle_sees_a_changed_backing_file(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    import vmdev_block.device

    backing = f"{h.ROOT}/files/img"
    loop = h.DevEntry(kind="block", major=7, minor=0, devname="loop0", node="loop0", backing_path=backing,
                      backing=h.FileSpec.text(backing + "\n"), backing_target=h.FileSpec.text("x" * 4096),
                      size=h.FileSpec.text("8\n"))
    case = PlanCase(hypervisor="qemu", options={"block_device_driver": "virtio-blk"}, host=h.HostSpec(devices=(loop,)),
                    document=strategies.oci([{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 0}]))
    assert oracles_of(session.run("block-sysfs", case)) == set()
    monkeypatch.setattr(vmdev_block.device, "loop_backing_file", lambda *args: "/elsewhere.img")
    assert PATH_CHANGE in oracles_of(session.run("block-sysfs", case))


def test_the_time_limit_interrupts_a_blocking_open(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(Hang), time_limit(0.3):
        fifo.open("rb")


def test_a_case_past_its_time_is_counted_as_a_hang(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    def sleepy(case: Any, session: Session) -> Outcome:
        time.sleep(30)
        return Outcome("accepted")

    monkeypatch.setitem(SURFACES, "sleepy", Surface("sleepy", strategies.oci_devices, sleepy, "sleeps"))
    monkeypatch.setattr(session, "timeout", 0.3)
    outcome = session.run("sleepy", None)
    assert outcome.status == "hang" and oracles_of(outcome) == {HANG}
