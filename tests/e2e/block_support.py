"""Helpers for the block plugin's real-guest tests: OCI configs, the real ``vmdev plan`` CLI, loop
devices (``losetup``), loop-mounted persistent-memory images and QMP unplug with its event wait.

Missing prerequisites (root, losetup, mkfs.ext2, qemu-system-s390x) FAIL the test with the command
that fixes them; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from vmdev_rig import Rig, RunningGuest

MIB = 1024 * 1024
FILE_OPTION = "io.katacontainers.fs-opt.block_device=file"
_TOOLS = {
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "mkfs.ext2": "e2fsprogs",
    "qemu-system-s390x": "qemu-system-misc",
}


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        package = _TOOLS.get(tool, tool)
        pytest.fail(
            f"{tool} is not installed; the block plugin's e2e tests need it. Fix: "
            f"`apt-get install --no-install-recommends {package}` (or scripts/install-test-deps)",
            pytrace=False,
        )
    return path


def _run(cmd: Sequence[str], what: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (rc {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}"
                    " (the block e2e tests run as root with loop devices available)", pytrace=False)
    return proc.stdout


# --- OCI configs and the CLI -----------------------------------------------------------------


def block_file_mount(destination: str, image: Path, *options: str) -> dict[str, Any]:
    """A mount that attaches ``image`` as a disk (Kata's block-file option)."""
    return {"destination": destination, "source": str(image), "type": "bind",
            "options": [FILE_OPTION, *options]}


def device_entry(path: str, node: str) -> dict[str, Any]:
    """A ``linux.devices`` entry of type b for the host node ``node``."""
    rdev = os.stat(node).st_rdev
    return {"path": path, "type": "b", "major": os.major(rdev), "minor": os.minor(rdev)}


def allow_rule(node: str, access: str) -> dict[str, Any]:
    rdev = os.stat(node).st_rdev
    return {"allow": True, "type": "b", "major": os.major(rdev), "minor": os.minor(rdev), "access": access}


def write_config(
    directory: Path,
    *,
    devices: Sequence[Mapping[str, Any]] = (),
    mounts: Sequence[Mapping[str, Any]] = (),
    rules: Sequence[Mapping[str, Any]] = (),
) -> Path:
    config = directory / "config.json"
    document = {
        "ociVersion": "1.1.0",
        "linux": {"devices": list(devices), "resources": {"devices": list(rules)}},
        "mounts": list(mounts),
    }
    config.write_text(json.dumps(document, indent=2))
    return config


def vmdev_command() -> list[str]:
    script = Path(sys.executable).with_name("vmdev")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vmdev.cli"]


def plan(config: Path, *args: str) -> dict[str, Any]:
    """``vmdev plan --format json ARGS CONFIG`` (the real CLI), parsed."""
    cmd = [*vmdev_command(), "plan", "--format", "json", *args, str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"vmdev plan failed (rc {proc.returncode}): {proc.stderr.strip()}", pytrace=False)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def block_devices(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The plan's block devices by container path."""
    return {d["container_path"]: d for d in result["devices"] if d["kind"] == "block"}


# --- loop devices and pmem images --------------------------------------------------------------


@contextlib.contextmanager
def loop_device(image: Path, *, read_only: bool = False, offset: int = 0) -> Iterator[str]:
    """``losetup --find --show`` on ``image``; detached again on exit."""
    cmd = [require_tool("losetup"), "--find", "--show"]
    cmd += ["--read-only"] if read_only else []
    cmd += ["--offset", str(offset)] if offset else []
    node = _run([*cmd, str(image)], "losetup").strip()
    try:
        yield node
    finally:
        subprocess.run([require_tool("losetup"), "--detach", node], check=False)


def write_at(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as out:
        out.seek(offset)
        out.write(data)


@contextlib.contextmanager
def pmem_mount(
    image: Path, mount_point: Path, *, dataoff: int, marker: str, pfn: bool = True
) -> Iterator[str]:
    """A persistent-memory image as Kata's image builder lays it out, loop-mounted on the host.

    The PFN info block (``vmdev_block.pmem.pfn_info_block``) at byte 4096 of ``image`` says the
    data starts at ``dataoff``; an ext2 file system is made there through a loop device with that
    offset and mounted at ``mount_point``, and ``marker`` is written at ``dataoff`` (ext2 leaves
    its first 1024 bytes alone), so the guest's ``/dev/pmemN`` starts with it. Yields the loop node.
    """
    from vmdev_block.pmem import PFN_INFO_OFFSET, pfn_info_block

    if pfn:
        write_at(image, PFN_INFO_OFFSET, pfn_info_block(image.stat().st_size, dataoff=dataoff))
    with loop_device(image, offset=dataoff) as node:
        _run([require_tool("mkfs.ext2"), "-q", "-F", node], "mkfs.ext2")
        write_at(image, dataoff, marker.encode("ascii"))
        mount_point.mkdir(parents=True, exist_ok=True)
        _run([require_tool("mount"), node, str(mount_point)], "mount")
        try:
            yield node
        finally:
            subprocess.run([require_tool("umount"), str(mount_point)], check=False)


# --- QMP ------------------------------------------------------------------------------------------


def run_unplug(guest: RunningGuest, commands: Sequence[Mapping[str, Any]]) -> None:
    """The plan's unplug commands; after each ``device_del`` wait for its ``DEVICE_DELETED``
    (the backend cannot be deleted while the guest still holds the device)."""
    for command in commands:
        arguments = command.get("arguments") or {}
        guest.execute(str(command["execute"]), arguments)
        if command["execute"] == "device_del":
            guest.wait_event("DEVICE_DELETED", timeout=30, match={"device": arguments["id"]})


def leftover_nodes(guest: RunningGuest, node_name: str, filename: str) -> list[dict[str, Any]]:
    """Block nodes still named ``node_name`` or opening ``filename`` (``query-named-block-nodes``)."""
    nodes: list[dict[str, Any]] = guest.execute("query-named-block-nodes")
    return [n for n in nodes if n.get("node-name") == node_name or n.get("file") == filename]


# --- the guest's physical block size ---------------------------------------------------------------
#: what the rig's init prints per disk, and what the patched copy prints instead
_BLOCK_READ = 'rd "$b/queue/logical_block_size"; lbs=$R'
_BLOCK_LINE = "lbs=$lbs marker=$marker"


def _init_with_physical_block_size(cache_dir: Path) -> Path:
    """The rig's ``init.sh`` whose ``block`` lines also say ``pbs=`` (``queue/physical_block_size``).

    The rig's report has the logical block size only; until it reports the physical one too (a
    change the block plugin asked for), the sector-size test boots this copy. The copy is kept
    in the rig's cache under its content's digest, so the initramfs built from it is cached too.
    """
    from vmdev_rig.initramfs import INIT_SCRIPT

    text = INIT_SCRIPT.read_text()
    if _BLOCK_READ not in text or _BLOCK_LINE not in text:
        pytest.fail("the rig's init.sh no longer reads the logical block size as block_support expects: "
                    "update _init_with_physical_block_size (or use the rig's own pbs= if it has one)",
                    pytrace=False)
    text = text.replace(_BLOCK_READ, _BLOCK_READ + '; rd "$b/queue/physical_block_size"; pbs=$R')
    text = text.replace(_BLOCK_LINE, "lbs=$lbs pbs=$pbs marker=$marker")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir / "block-e2e" / f"init-pbs-{digest}.sh"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def sector_rig(rig: Rig) -> Rig:
    """A rig like ``rig`` whose guest reports each disk's physical block size (``pbs=``)."""
    from vmdev_rig import build_initramfs

    kernel = rig.kernel
    twin = Rig(rig.cache_dir, kernel=kernel, modules=rig.modules, optional_modules=rig.optional_modules,
               qemu=rig.qemu)
    # the rig takes no other init script: set the initramfs it would otherwise build
    twin._initramfs = build_initramfs(
        kernel, rig.cache_dir, modules=rig.modules, optional_modules=rig.optional_modules,
        init_script=_init_with_physical_block_size(rig.cache_dir))
    return twin


def block_sizes(serial_text: str, tag: str) -> dict[str, tuple[int, int]]:
    """``{serial: (logical, physical)}`` of the disks in the last report ``tag`` of ``serial_text``
    (printed by :func:`sector_rig`'s guest)."""
    begin, end = f"QH-REPORT-BEGIN {tag}", f"QH-REPORT-END {tag}"
    start = serial_text.rfind(begin)
    stop = serial_text.find(end, start)
    if start < 0 or stop < 0:
        pytest.fail(f"no complete report {tag!r} in the guest's serial output", pytrace=False)
    sizes: dict[str, tuple[int, int]] = {}
    for line in serial_text[start:stop].splitlines():
        fields = dict(f.split("=", 1) for f in line.strip().split()[2:] if "=" in f)
        if line.strip().startswith("block ") and fields.get("serial") and "pbs" in fields:
            sizes[fields["serial"]] = (int(fields["lbs"]), int(fields["pbs"]))
    return sizes


# --- the host's own mounts ------------------------------------------------------------------------------


def mounted_root_device() -> tuple[str, int, int]:
    """The block device the host's ``/`` is mounted from, read-write: (node, major, minor)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        tail = fields[fields.index("-", 6) + 1:]
        if fields[4] == "/" and "rw" in tail[2].split(","):
            major, minor = (int(n) for n in fields[2].split(":"))
            node = Path(f"/sys/dev/block/{major}:{minor}")
            if node.exists():
                return f"/dev/{os.path.basename(os.path.realpath(node))}", major, minor
    pytest.fail("the host's / is not mounted read-write from a block device (a container root?)", pytrace=False)


@contextlib.contextmanager
def mounted_loop(image: Path, mount_point: Path, *options: str) -> Iterator[str]:
    """``image`` (an ext2 file system is made on it) on a loop device mounted at ``mount_point``."""
    with loop_device(image) as node:
        _run([require_tool("mkfs.ext2"), "-q", "-F", node], "mkfs.ext2")
        mount_point.mkdir(parents=True, exist_ok=True)
        _run([require_tool("mount"), *(["-o", ",".join(options)] if options else []), node, str(mount_point)],
             "mount")
        try:
            yield node
        finally:
            subprocess.run([require_tool("umount"), str(mount_point)], check=False)


def plan_error(config: Path, *args: str) -> str:
    """``vmdev plan ARGS CONFIG`` that must fail: its stderr."""
    cmd = [*vmdev_command(), "plan", "--format", "json", *args, str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        pytest.fail(f"vmdev plan succeeded, but should have refused: {proc.stdout[:300]}", pytrace=False)
    return proc.stderr
