"""Kata's own configuration-qemu.toml, as Kata ships it, planned by the installed vmdev CLI for the
OCI spec podman writes, booted in a real (TCG) guest (issue 10).

* virtio-fs: the file's ``shared_fs = "virtio-fs"`` plans the vhost-user-fs device and the virtiofsd
  Kata would start (the plan's ``daemons``); the test starts that daemon exactly as the plan says,
  boots the plan's argv, and the guest reads the host's file through the share; the loop device of
  the spec reaches the guest as a disk through the file's virtio-scsi.
* virtio-9p: the same file with ``--shared-fs virtio-9p``: QEMU serves the directory, the guest
  mounts the tag and reads the file.

Only vmdev's own flags adapt the file to this machine (kata_config_support.kata_flags): memory
for TCG, Debian's C virtiofsd and its spelling of Kata's extra arguments, and the sandbox's
directories in a temporary directory. Everything else is the file's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kata_config_support import (
    C_VIRTIOFSD,
    SupportError,
    kata_flags,
    loop_device,
    planned_daemon,
    podman_spec,
)
from vhostuser_support import short_dir
from vmdev_cli import plan
from vmdev_rig import OPTIONAL_MODULES, Rig, RigSetupError, check_prerequisites
from vmdev_rig.images import MakeDisk

MIB = 1024 * 1024
HELLO = "hello-from-kata-share"
#: podman's fileMode: the node's type bits and permissions (S_IFCHR | 0666 for /dev/fuse)
FUSE_FILE_MODE = 0o20666


@pytest.fixture
def work() -> Iterator[Path]:
    with short_dir("kata-") as path:  # the daemon's socket path must fit sun_path
        yield path


@pytest.fixture(scope="module")
def generic_rig() -> Rig:
    """The cloud kernel has no 9p; Debian's generic kernel has it."""
    try:
        ready = Rig(kernel=check_prerequisites(flavour="generic"), optional_modules=OPTIONAL_MODULES)
        ready.prepare()
        return ready
    except RigSetupError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


def _shared_dir(work: Path) -> Path:
    shared = work / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text(HELLO + "\n")
    return shared


def _by_kind(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for device in data["devices"]:
        out.setdefault(device["kind"], []).append(device)
    return out


def _fail(exc: SupportError) -> None:
    pytest.fail(str(exc), pytrace=False)


def test_kata_s_qemu_file_boots_with_the_spec_s_disk_and_its_virtio_fs_share(
    rig: Rig, make_disk: MakeDisk, work: Path
) -> None:
    shared, runtime = _shared_dir(work), work / "vm"
    image = make_disk(work / "loop.img", 32, "QHKATALOOP")
    try:
        with loop_device(image) as loop:
            spec = podman_spec(work, loop, "/dev/fuse")
            assert {d["path"]: d["fileMode"] for d in spec["linux"]["devices"]}["/dev/fuse"] == FUSE_FILE_MODE
            data = plan(spec, work, *kata_flags(runtime, shared))
            kinds = _by_kind(data)
            (disk,), (fuse,), (share,) = kinds["block"], kinds["generic"], kinds["vhost-user"]
            assert (disk["host_path"], disk["driver"], disk["controller"]) == (loop, "virtio-scsi", "virtio-scsi-pci")
            assert (fuse["container_path"], fuse["file_mode"]) == ("/dev/fuse", 0o666)
            (daemon,) = data["daemons"]
            socket = str(runtime / "vhost-fs.sock")
            assert [daemon["program"], *daemon["args"]] == [
                C_VIRTIOFSD, "-o", "cache=auto", "-o", f"source={shared}", f"--socket-path={socket}",
                "--thread-pool-size=1", "-o", "announce_submounts",
            ]
            assert (daemon["socket"], daemon["for"], share["socket_path"], share["tag"]) == (
                socket, share["id"], socket, "kataShared"
            )
            with planned_daemon(daemon):
                result = rig.boot(data["qemu"]["argv"], append="qh.virtiofs=kataShared", timeout=150)
    except SupportError as exc:
        _fail(exc)

    assert result.rc == 0
    seen = result.report.block_by_marker("QHKATALOOP")
    assert (seen.size_bytes, seen.ro, seen.serial) == (32 * MIB, False, disk["serial"])
    mounted = result.report.share("kataShared")
    assert (mounted.mounted, mounted.error, mounted.hello) == (True, "", HELLO)
    assert mounted.write_ok and (shared / "from-guest.txt").read_text() == "hello-from-guest\n"
    assert [d.driver for d in result.report.virtio if d.device == 0x1A] == ["virtiofs"]


def test_kata_s_qemu_file_with_virtio_9p_shares_the_directory(generic_rig: Rig, work: Path) -> None:
    shared, runtime = _shared_dir(work), work / "vm"
    try:
        spec = podman_spec(work, "/dev/fuse")
    except SupportError as exc:
        _fail(exc)
    data = plan(spec, work, *kata_flags(runtime, shared), "--shared-fs", "virtio-9p")
    assert "daemons" not in data  # QEMU serves 9p itself
    (share,) = _by_kind(data)["virtio-9p"]
    assert (share["host_path"], share["mount_tag"], share["msize"]) == (str(shared), "kataShared", 8192)
    assert share["guest_mount"]["options"][-1] == "msize=8192"  # the file's msize_9p, for the guest
    fsdev = f"local,id={share['fsdev']},path={shared},security_model=none,multidevs=remap"
    assert fsdev in data["qemu"]["argv"]
    result = generic_rig.boot(data["qemu"]["argv"], append="qh.9p=kataShared", timeout=150)

    assert result.rc == 0
    mounted = result.report.share("kataShared")
    assert (mounted.kind, mounted.mounted, mounted.error, mounted.hello) == ("9p", True, "", HELLO)
    assert "hello.txt" in mounted.files
