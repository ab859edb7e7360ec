"""The bugs the fuzz suite found in code other people own, one narrow property each, marked
strict xfail with the bug's key (:mod:`vmdev_fuzz.known`).

Each property asserts what must hold (no violation at all); while the bug is there it fails, and
the run is green. When the owner's fix lands it passes, the strict xfail turns the run red: then
delete the mark here and the bug's entry in ``vmdev_fuzz/known.py`` (the broad properties stop
tolerating it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vmdev_fuzz import hosts as h
from vmdev_fuzz import strategies
from vmdev_fuzz.cases import PlanCase
from vmdev_fuzz.known import KNOWN_BUGS, by_key, known
from vmdev_fuzz.oracles import dumps
from vmdev_fuzz.runner import Session

ROOT = h.ROOT


class UnrelatedViolation(Exception):
    """A violation the bug under test does not explain: fails the test outright (not an xfail)."""


def known_bug(key: str) -> pytest.MarkDecorator:
    bug = by_key(key)
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"{bug.key} [{bug.owner}]: {bug.title}")


def no_violation(session: Session, surface: str, case: Any, key: str = "") -> None:
    """No violation at all; one the bug ``key`` explains is an AssertionError (the xfail), any other
    an :class:`UnrelatedViolation`. Without ``key`` (a fixed bug's regression test) every violation
    is an AssertionError."""
    outcome = session.run(surface, case)
    shown = "; ".join(f"{v.oracle}: {v.detail}" for v in outcome.violations) + " " + dumps(repr(case), 600)
    if key and any(known(v) is not by_key(key) for v in outcome.violations):
        raise UnrelatedViolation(shown)
    assert not outcome.violations, shown


@contextmanager
def time_limit(session: Session, seconds: float) -> Iterator[None]:
    before, session.timeout = session.timeout, seconds
    try:
        yield
    finally:
        session.timeout = before


def loop_case(*, size: str = "8\n", backing: str | None = None) -> PlanCase:
    path = f"{ROOT}/files/disk.img"
    loop = h.DevEntry(kind="block", major=7, minor=0, devname="loop0", node="loop0", backing_path=path,
                      backing=h.FileSpec.text(backing if backing is not None else path + "\n"),
                      backing_target=h.FileSpec.text("x" * 4096), size=h.FileSpec.text(size))
    return PlanCase(hypervisor="qemu", options={"block_device_driver": "virtio-blk"}, host=h.HostSpec(devices=(loop,)),
                    document=strategies.oci([{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 0}]))


def test_every_known_bug_has_its_property() -> None:
    here = Path(__file__).read_text(encoding="utf-8")
    assert [bug.key for bug in KNOWN_BUGS if f'known_bug("{bug.key}")' not in here] == []


# --- fixed: the bugs below were known here until their owners' fixes landed (aca377b vmdev-block;
# 2238c57 core); they stay as regression properties ----------------------------------------------


@settings(max_examples=5)
@given(size=st.sampled_from(["²\n", "9" * 5000 + "\n", "¹\n"]))
def test_a_disk_size_int_cannot_read_is_refused_in_one_line(session: Session, size: str) -> None:
    no_violation(session, "block-sysfs", loop_case(size=size))


@settings(max_examples=1)
@given(name=st.just("image"))
def test_a_pmem_probe_of_a_fifo_backing_file_does_not_hang(session: Session, name: str) -> None:
    backing = f"{ROOT}/files/{name}"
    source = f"{ROOT}/mnt/share"
    loop = h.DevEntry(kind="block", major=7, minor=3, devname="loop3", node="loop3", backing_path=backing,
                      backing=h.FileSpec.text(backing + "\n"), backing_target=h.FileSpec(h.FIFO))
    case = PlanCase(hypervisor="qemu", host=h.HostSpec(
        devices=(loop,), files=((source, h.FileSpec(h.DIRECTORY)),), stats=(h.StatSpec(source, h.NODE_DIR, dev=(7, 3)),)),
        document=strategies.oci([], mounts=[{"destination": "/data", "source": source, "type": "bind"}]))
    with time_limit(session, 1.0):
        no_violation(session, "mounts", case)


@settings(max_examples=5)
@given(name=st.sampled_from([" disk.img ", "disk.img\nsecond", "disk.img\t"]))
def test_a_loop_backing_file_reaches_the_plan_byte_for_byte(session: Session, name: str) -> None:
    path = f"{ROOT}/files/{name}"
    no_violation(session, "block-sysfs", loop_case(backing=path + "\n"))


@settings(max_examples=5)
@given(path=st.sampled_from(["/dev/disk\x85x", "/dev/disk\u2028x", "/dev/disk\x9bx"]))
def test_what_the_block_plugin_logs_about_a_request_is_one_line(session: Session, path: str) -> None:
    case = loop_case()
    case = PlanCase(hypervisor=case.hypervisor, options=case.options, host=case.host,
                    document=strategies.oci([{"path": path, "type": "b", "major": 7, "minor": 0}]))
    no_violation(session, "block-sysfs", case)


@settings(max_examples=3)
@given(suffix=st.sampled_from(["\ud800", "x\udfff"]))
def test_a_store_path_no_file_system_can_name_is_refused_in_one_line(session: Session, suffix: str) -> None:
    case = PlanCase(hypervisor="qemu", options={"enable_vhost_user_store": True,
                                                "vhost_user_store_path": f"{ROOT}/store{suffix}"},
                    document=strategies.oci([{"path": "/dev/vhost-blk", "type": "b", "major": 241, "minor": 0}]))
    no_violation(session, "vhost-user-store", case)


@settings(max_examples=3)
@given(name=st.sampled_from(["\x1b[31m", "a\udc80", "vm\x01"]))
def test_a_libvirt_domain_name_xml_cannot_carry_is_refused_in_one_line(session: Session, name: str) -> None:
    case = PlanCase(hypervisor="libvirt", options={"libvirt_domain_name": name}, document=strategies.oci([]))
    no_violation(session, "settings", case)


@settings(max_examples=5)
@given(key=st.sampled_from(["file_mem_backend", "virtio_fs_socket", "shared_dir"]))
def test_a_settings_path_json_cannot_carry_is_refused_in_one_line(session: Session, key: str) -> None:
    options = {"shared_fs": "virtio-9p" if key == "shared_dir" else "virtio-fs", key: "/run/x\udc80"}
    case = PlanCase(hypervisor="qemu", options=options, document=strategies.oci([]))
    no_violation(session, "settings", case)


@settings(max_examples=3)
@given(path=st.sampled_from(["/dev/shm\nx", "/dev/shm/\x1b[2J", "/dev/hugepages\r"]))
def test_a_memory_backend_path_with_a_control_character_is_refused_in_one_line(session: Session, path: str) -> None:
    case = PlanCase(hypervisor="qemu", options={"file_mem_backend": path}, document=strategies.oci([]))
    no_violation(session, "settings", case)
