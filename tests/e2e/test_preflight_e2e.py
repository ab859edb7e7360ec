"""``vmdev check --qemu`` against the real QEMU binaries of this machine (Debian's QEMU 7.2), with no
guest booted: QEMU only answers questions (``-machine none -S``, QMP on stdio).

Two kinds of proof. The check catches what QEMU would refuse at start-up, each in one line naming the
device and the option: a misspelt property, and IOMMUFD's ``-object iommufd`` (and ``vfio-pci``'s
``iommufd`` property), which QEMU 7.2 does not have. And every plan the families render in realistic
configurations (block virtio-blk/scsi/mmio/ccw, nvdimm, virtio-pmem, iothreads, rng, vhost-user
blk/fs/net, virtio-9p, VFIO on every port kind, cold and hot) passes clean: no false positives.
The plans are built through the Python API on fake hosts with the families' test builders
(``vmdev_block.testing``, ``vmdev_vfio.testing``), as a runtime would build them on a real host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.preflight import Probe, check_plan, parse_part
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_block import testing as block_testing
from vmdev_cli import run_vmdev
from vmdev_vfio.testing import ap_matrix_device, build_l1_host, cdev_request, group_request

QEMU = "/usr/bin/qemu-system-x86_64"
QEMU_S390X = "/usr/bin/qemu-system-s390x"
MIB = 1024 * 1024
FAMILIES = ("vmdev-rng", "vmdev-block", "vmdev-vhostuser", "vmdev-vfio")
FILE_DISK = "io.katacontainers.fs-opt.block_device=file"
VHOST_USER_NET = [{"socket": "/run/vmdev-e2e/net0.sock", "mac": "52:54:00:12:34:56"}]


def qemu_version(binary: str) -> str:
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing: scripts/install-test-deps installs it", pytrace=False)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\d+\.\d+\.\d+)", out)
    assert match, out
    return match.group(1)


# --- a host with every family's kinds of devices -------------------------------------------------
class Host:
    """A fake host: a loop device and a disk, a persistent-memory image and a disk image, a
    vhost-user store entry, the L1 machine's VFIO groups (or IOMMUFD cdevs), /dev/urandom."""

    def __init__(self, root: Path, store: Path, *, iommufd: bool = False) -> None:
        self.root = root
        self.fake = FakeHost(root / "host")
        self.fake.char_device(1, 9, "urandom")
        block_testing.loop_device(self.fake, block_testing.LOOP_MAJOR, 0, block_testing.image_file(
            root / "loop.img", 32 * MIB))
        self.fake.fake_stat(str(self.fake.dev / "loop0"), mode=block_testing.BLOCK_NODE_MODE, rdev=(7, 0))
        block_testing.block_node(self.fake, 8, 16, "sdb", size=64 * MIB)
        self.image = block_testing.image_file(root / "disk.img", 16 * MIB)
        self.pmem = block_testing.image_file(root / "pmem.img", 16 * MIB, pfn=True)
        build_l1_host(self.fake, iommufd=iommufd)
        self.store = store
        for directory in ("block/devices", "block/sockets"):
            (store / directory).mkdir(parents=True, exist_ok=True)
        self._fake_file(store / "block/devices/vhu0", stat.S_IFBLK, (241, 0))
        self._fake_file(store / "block/sockets/vhu0", stat.S_IFSOCK, None)

    def _fake_file(self, path: Path, kind: int, rdev: tuple[int, int] | None) -> None:
        path.write_text("")
        self.fake.fake_stat(os.path.realpath(path), mode=kind | 0o600, rdev=rdev)

    def disks(self) -> list[dict[str, Any]]:
        return [{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 0},
                {"path": "/dev/xvdb", "type": "b", "major": 8, "minor": 16}]

    def vhost_user_blk(self) -> dict[str, Any]:
        return {"path": "/dev/vhu", "type": "b", "major": 241, "minor": 0}

    def file_disk(self, read_only: bool = False) -> dict[str, Any]:
        return {"destination": "/disk", "source": str(self.image), "type": "bind",
                "options": [FILE_DISK, *(["ro"] if read_only else [])]}

    def pmem_image(self, read_only: bool = False) -> dict[str, Any]:
        return {"destination": "/pmem", "source": str(self.pmem), "type": "bind",
                "options": [FILE_DISK, *(["ro"] if read_only else [])]}

    def plan(self, devices: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None,
             options: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
        opts = {"enable_vhost_user_store": True, "vhost_user_store_path": str(self.store), **(options or {})}
        settings.setdefault("memory_mib", 512)
        pm = PluginManager(LoadPolicy(only=FAMILIES)).load()
        spec = parse_spec({"linux": {"devices": devices}, "mounts": mounts or []})
        result = plan(spec, SandboxSettings(options=opts, **settings), host=self.fake.context(), plugins=pm)
        data: dict[str, Any] = result.to_json()
        return data


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the binary is asked once, then only for new types."""
    return tmp_path_factory.mktemp("vmdev-cache")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    store = Path(tempfile.mkdtemp(prefix="vhu-"))  # socket paths must fit sun_path's 107 bytes
    try:
        yield Host(tmp_path, store)
    finally:
        shutil.rmtree(store)


VIRTIO_FS = {"shared_fs": "virtio-fs", "virtio_fs_socket": "/run/vmdev-e2e/vfs.sock"}
CACHE = {"block_device_cache_set": True, "block_device_cache_direct": True, "block_device_aio": "native"}
#: (name, which requests, options, settings): realistic sandboxes of every family
CONFIGURATIONS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("virtio-blk, vhost-user blk/fs/net, rng", "all",
     {"block_device_driver": "virtio-blk", **VIRTIO_FS, "vhost_user_net": VHOST_USER_NET, **CACHE}, {}),
    ("the same, hot-plugged", "all",
     {"block_device_driver": "virtio-blk", **VIRTIO_FS, "vhost_user_net": VHOST_USER_NET,
      "hot_plug_vfio": "root-port"}, {"hotplug": True}),
    ("virtio-scsi with an iothread, 4K sectors", "disks",
     {"block_device_driver": "virtio-scsi", "enable_iothreads": True, "block_device_logical_sector_size": 4096,
      "block_device_physical_sector_size": 4096}, {}),
    ("virtio-scsi hot-plugged", "disks", {"block_device_driver": "virtio-scsi"}, {"hotplug": True}),
    ("virtio-blk on independent iothreads", "disks",
     {"block_device_driver": "virtio-blk", "indep_iothreads": 2}, {}),
    ("nvdimm", "pmem", {"block_device_driver": "nvdimm"}, {}),
    ("nvdimm hot-plugged, read-only", "pmem-ro", {"block_device_driver": "nvdimm"}, {"hotplug": True}),
    ("virtio-pmem", "pmem", {"block_device_driver": "virtio-pmem"}, {}),
    ("virtio-pmem hot-plugged", "pmem", {"block_device_driver": "virtio-pmem"}, {"hotplug": True}),
    ("virtio-9p share", "none", {"shared_fs": "virtio-9p"}, {}),
    ("microvm: virtio-mmio disks, rng, virtio-fs", "disks",
     {"block_device_driver": "virtio-mmio", **VIRTIO_FS}, {"machine_type": "microvm"}),
    ("pc machine, hot plug", "disks+vfio", {"block_device_driver": "virtio-blk"},
     {"machine_type": "pc", "hotplug": True}),
    ("VFIO on root ports", "vfio", {"cold_plug_vfio": "root-port"}, {}),
    ("VFIO on bridge ports", "vfio", {"cold_plug_vfio": "bridge-port"}, {}),
    ("VFIO hot-plugged on switch ports, spare ports", "vfio",
     {"hot_plug_vfio": "switch-port", "pcie_switch_port": 8, "hotplug_root_ports": 2}, {"hotplug": True}),
    ("VFIO hot-plugged on bridge ports", "vfio", {"hot_plug_vfio": "bridge-port"}, {"hotplug": True}),
    ("VFIO hot-plugged on root ports, spare root ports", "vfio",
     {"hot_plug_vfio": "root-port", "pcie_root_port": 6}, {"hotplug": True}),
]


def requests(host: Host, which: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    vfio = [group_request(group) for group in (2, 5, 7, 8)]
    return {
        "all": ([*host.disks(), host.vhost_user_blk(), *vfio], [host.file_disk(read_only=True)]),
        "disks": (host.disks(), [host.file_disk()]),
        "disks+vfio": (host.disks() + vfio, []),
        "pmem": ([], [host.pmem_image()]),
        "pmem-ro": ([], [host.pmem_image(read_only=True)]),
        "vfio": (vfio, []),
        "none": ([], []),
    }[which]


def check(data: dict[str, Any], cache: Path, binary: str = QEMU) -> Any:
    return check_plan(data, Probe(binary, cache_dir=cache))


@pytest.mark.parametrize(("name", "which", "options", "settings"), CONFIGURATIONS,
                         ids=[c[0] for c in CONFIGURATIONS])
def test_every_family_plan_passes_the_check_clean(
    host: Host, cache_dir: Path, name: str, which: str, options: dict[str, Any], settings: dict[str, Any]
) -> None:
    devices, mounts = requests(host, which)
    data = host.plan(devices, mounts, options, **settings)
    outcome = check(data, cache_dir)
    report = outcome.report
    assert [m.line() for m in report.mismatches] == []
    assert report.notes == ()  # every type's properties were listed (microvm's through -machine help)
    assert report.unchecked == ()  # every option of the plan is one the check reads
    assert report.options + report.commands == len(parse_part(data["qemu"]).items) > 2


def test_the_configurations_cover_every_option_kind_and_family(tmp_path: Path) -> None:
    """The clean runs above mean something only if the plans use every kind of option."""
    store = Path(tempfile.mkdtemp(prefix="vhu-"))
    try:
        seen: set[str] = set()
        for _, which, options, settings in CONFIGURATIONS:
            host = Host(tmp_path / f"h{len(seen)}-{which}", store)
            for item in parse_part(host.plan(*requests(host, which), options, **settings)["qemu"]).items:
                seen.add(item.subject)
    finally:
        shutil.rmtree(store)
    assert {"-machine q35", "-machine microvm", "-machine pc", "-m 512M", "-blockdev raw", "-chardev socket",
            "-netdev vhost-user", "-fsdev local", "-object iothread", "-object memory-backend-file",
            "-object memory-backend-memfd", "-object rng-random", "-device scsi-hd", "-device virtio-blk-pci",
            "-device virtio-blk-device", "-device nvdimm", "-device virtio-pmem-pci", "-device vfio-pci",
            "-device vhost-user-blk-pci", "-device vhost-user-fs-pci", "-device vhost-user-fs-device",
            "-device virtio-net-pci", "-device virtio-9p-pci", "-device pcie-root-port", "-device pci-bridge",
            "-device xio3130-downstream", "-device virtio-rng-device",
            "hotplug blockdev-add raw", "hotplug chardev-add", "hotplug netdev_add vhost-user",
            "hotplug object-add memory-backend-file", "hotplug object-add rng-random",
            "hotplug device_add vfio-pci", "hotplug device_add scsi-hd", "hotplug device_add nvdimm",
            "unplug device_del", "unplug blockdev-del", "unplug object-del", "unplug chardev-remove",
            "unplug netdev_del"} <= seen


def test_s390x_plans_pass_the_check_against_qemu_system_s390x(tmp_path: Path, cache_dir: Path) -> None:
    """Another binary, another cache entry: virtio-blk-ccw, virtio-rng-ccw and vfio-ap."""
    qemu_version(QEMU_S390X)
    store = Path(tempfile.mkdtemp(prefix="vhu-"))
    try:
        host = Host(tmp_path, store)
        ap_matrix_device(host.fake, "4b1c9b37-3a0c-4c7b-8d86-6e3c3a8d2b9e", ["05.001f"], iommu_group=20,
                         vfio_node=(511, 20))
        ap = {"path": "/dev/vfio/20", "type": "c", "major": 511, "minor": 20}
        for hotplug in (False, True):
            data = host.plan([*host.disks(), ap], [], {"block_device_driver": "virtio-blk-ccw"},
                             machine_type="s390-ccw-virtio", hotplug=hotplug)
            heads = {item.subject for item in parse_part(data["qemu"]).items}
            assert {"-device virtio-blk-ccw", "-device vfio-ap"} <= heads or hotplug
            outcome = check(data, cache_dir, QEMU_S390X)
            assert [m.line() for m in outcome.report.mismatches] == []
            assert outcome.report.notes == ()
    finally:
        shutil.rmtree(store)
    assert len(list(cache_dir.glob("qemu-*.json"))) >= 2  # x86_64's answers and s390x's, apart


# --- the catches, through the command line --------------------------------------------------------
def test_check_catches_a_misspelt_property_and_the_iommufd_object_qemu_7_2_lacks(tmp_path: Path) -> None:
    version = qemu_version(QEMU)
    if int(version.split(".")[0]) >= 9:
        pytest.fail(f"QEMU {version} has IOMMUFD; this test proves the catch on a QEMU without it (7.2)",
                    pytrace=False)
    store = Path(tempfile.mkdtemp(prefix="vhu-"))
    try:
        host = Host(tmp_path, store, iommufd=True)
        data = host.plan([host.disks()[0], cdev_request(0)], [], {"block_device_driver": "virtio-blk"})
    finally:
        shutil.rmtree(store)
    argv = data["qemu"]["argv"]
    (disk,) = [n for n, a in enumerate(argv) if a.startswith("virtio-blk-pci,")]
    assert ",serial=" in argv[disk]
    argv[disk] = argv[disk].replace(",serial=", ",serail=")  # the typo
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(data))
    done = run_vmdev("check", "--qemu", QEMU, "--cache-dir", str(tmp_path / "cache"), str(plan_file))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"vmdev: check: /dev/vfio/devices/vfio0: -object iommufd: QEMU {version} has no object type 'iommufd'",
        f"vmdev: check: /dev/xvda: -device virtio-blk-pci,serail: QEMU {version}'s virtio-blk-pci has no "
        "property 'serail' (did you mean 'serial'?)",
        f"vmdev: check: /dev/vfio/devices/vfio0: -device vfio-pci,iommufd: QEMU {version}'s vfio-pci has no "
        "property 'iommufd'",
    ]
    assert done.stderr.splitlines() == [
        f"vmdev: check: 3 mismatch(es): {len(argv) // 2} options and 0 QMP commands against QEMU {version} "
        f"({QEMU}, asked in " + done.stderr.split("asked in ")[1].split(" s)")[0] + " s)"]


def test_the_hot_plug_form_is_caught_in_the_qmp_commands(tmp_path: Path, cache_dir: Path) -> None:
    version = qemu_version(QEMU)
    store = Path(tempfile.mkdtemp(prefix="vhu-"))
    try:
        host = Host(tmp_path, store, iommufd=True)
        data = host.plan([cdev_request(0), cdev_request(1)], [], {"hot_plug_vfio": "root-port"}, hotplug=True)
    finally:
        shutil.rmtree(store)
    lines = [m.line() for m in check(data, cache_dir).report.mismatches]
    assert lines == [
        f"vmdev: check: sandbox: hotplug object-add iommufd: QEMU {version} has no object type 'iommufd'",
        f"vmdev: check: /dev/vfio/devices/vfio0: hotplug device_add vfio-pci,iommufd: QEMU {version}'s "
        "vfio-pci has no property 'iommufd'",
        f"vmdev: check: /dev/vfio/devices/vfio1: hotplug device_add vfio-pci,iommufd: QEMU {version}'s "
        "vfio-pci has no property 'iommufd'",
    ]


def test_an_oci_config_is_planned_with_the_plan_flags_then_checked(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {"devices": [
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}))
    for flags in ((), ("--hotplug", "--memory", "256"), ("--machine-type", "microvm")):
        done = run_vmdev("check", "--qemu", QEMU, "--cache-dir", str(tmp_path / "cache"), "--json", *flags,
                         str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert (report["clean"], report["mismatches"]) == (True, [])
        assert report["checked"]["options"] + report["checked"]["qmp"] >= 3  # machine, memory, the rng


def test_a_plan_given_with_planning_flags_is_a_usage_error(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"hypervisor": "qemu", "devices": [],
                                     "qemu": {"argv": [], "hotplug": [], "unplug": []}}))
    done = run_vmdev("check", "--qemu", QEMU, "--memory", "256", str(plan_file))
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"Error: {plan_file} is a plan already: planning options apply to " \
        "an OCI config only"


def test_a_plan_for_another_hypervisor_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1,
                                                          "minor": 3}]}}))
    planned = run_vmdev("plan", "--hypervisor", "cloud-hypervisor", str(config))
    assert planned.returncode == 0, planned.stderr
    plan_file = tmp_path / "clh.json"
    plan_file.write_text(planned.stdout)
    for source, extra in ((plan_file, ()), (config, ("--hypervisor", "firecracker"))):
        done = run_vmdev("check", "--qemu", QEMU, *extra, str(source))
        assert (done.returncode, done.stdout) == (1, "")
        (line,) = done.stderr.splitlines()
        assert line.startswith("vmdev: error: hypervisor: check --qemu asks a QEMU binary, but ")


# --- the cache ------------------------------------------------------------------------------------
def check_json(binary: str | Path, plan_file: Path, cache: Path, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
    done = run_vmdev("check", "--qemu", str(binary), "--cache-dir", str(cache), "--json", str(plan_file),
                     env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_answers_are_cached_per_binary_and_a_different_binary_never_reuses_them(
    host: Host, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(host.plan([*host.disks(), host.vhost_user_blk()], [],
                                              {"block_device_driver": "virtio-scsi", **VIRTIO_FS})))
    first = check_json(QEMU, plan_file, cache)["qemu"]
    second = check_json(QEMU, plan_file, cache)["qemu"]
    assert (first["probed"], second["probed"]) == (True, False)
    assert first["cache_file"] == second["cache_file"]
    assert Path(first["cache_file"]).name.startswith(f"qemu-{qemu_version(QEMU)}-")
    # a symlink is the same binary: its answers are reused
    link = tmp_path / "qemu-link"
    link.symlink_to(QEMU)
    assert not check_json(link, plan_file, cache)["qemu"]["probed"]
    # the same bytes at another path, then the same path rewritten: each asked afresh, cached apart (QEMU
    # finds its modules relative to its own path, so the copy is told where they are)
    copy = tmp_path / "qemu-copy"
    shutil.copy2(QEMU, copy)
    (modules,) = {str(p.parent) for p in Path("/usr/lib").glob("*/qemu/accel-tcg-*.so")}
    env = {"QEMU_MODULE_DIR": modules}
    copied = check_json(copy, plan_file, cache, env)["qemu"]
    assert copied["probed"] and copied["cache_file"] != first["cache_file"]
    assert not check_json(copy, plan_file, cache, env)["qemu"]["probed"]
    os.utime(copy, ns=(time.time_ns(), time.time_ns()))
    touched = check_json(copy, plan_file, cache, env)["qemu"]
    assert touched["probed"] and touched["cache_file"] not in (first["cache_file"], copied["cache_file"])
    # another module directory is another set of types: not the same answers either
    other = tmp_path / "modules"
    shutil.copytree(modules, other, symlinks=True)
    moved = check_json(copy, plan_file, cache, {"QEMU_MODULE_DIR": str(other)})["qemu"]
    assert moved["probed"]
    assert len(list(cache.glob("qemu-*.json"))) == 4
    print(f"first probe {first['probe_seconds']} s; copies {copied['probe_seconds']} s, "
          f"{touched['probe_seconds']} s; cached: no QEMU started")
