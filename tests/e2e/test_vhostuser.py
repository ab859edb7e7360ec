"""vmdev-vhostuser in real guests: plans from the real CLI, real vhost-user backends, TCG guests.

* vhost-user-blk: qemu-storage-daemon exports an image; the store maps b 241:N to its socket; the
  guest sees the disk (size, marker), cold-plugged and hot-plugged (then unplugged).
* vhost-user-fs: virtiofsd serves a host directory; the guest mounts the tag, reads and writes.
* vhost-user-net: DPDK testpmd's net_vhost port; the guest binds virtio_net and the backend sees
  the rings come up.
* vhost-user-scsi: Debian ships no backend, so QEMU's own property list and a ``-S`` dry run
  (against a handshake-only backend) prove the options, cold and hot plug.
* Every kind on every transport (PCI, MMIO, CCW), cold and hot plug: each ``-device`` and
  ``device_add`` property a plan renders is one QEMU's ``device-list-properties`` reports.
"""

from __future__ import annotations

import itertools
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vhostuser_support import (
    BackendMissing,
    HandshakeBackend,
    dpdk_testpmd,
    make_store_node,
    short_dir,
    storage_daemon,
    virtiofsd,
    vmdev_plan,
)
from vmdev.qemu import split_opts
from vmdev.targets import MMIO, PCI
from vmdev_rig import Rig
from vmdev_rig.images import MakeDisk
from vmdev_vhostuser.device import VHOST_USER_FS
from vmdev_vhostuser.render_qemu import DRIVERS, NINEP_DRIVERS

MIB = 1024 * 1024


@pytest.fixture
def work() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def _blk(minor: int, major: int = 241, path: str = "/dev/vhu0") -> dict[str, Any]:
    return {"path": path, "type": "b", "major": major, "minor": minor}


def _backend_or_fail(exc: BackendMissing) -> None:
    pytest.fail(str(exc), pytrace=False)


def test_vhost_user_blk_cold_plug(rig: Rig, make_disk: MakeDisk, work: Path) -> None:
    image = make_disk(work / "vhu.img", 40, "QHVHUBLK")
    socket = make_store_node(work / "store", "vhostblk0", 241, 3)
    try:
        with storage_daemon(image, socket):
            reconnect = "[hypervisor.qemu]\nvhost_user_reconnect_timeout_sec = 2\n"
            plan = vmdev_plan(work, [_blk(3)], "--vhost-user-store", str(work / "store"), config=reconnect)
            (device,) = plan["devices"]
            assert (device["type"], device["socket_path"], device["host_path"], device["reconnect_time"]) == (
                "vhost-user-blk-pci",
                str(socket),
                str(socket),
                2,
            )
            assert any(arg.endswith(f"path={socket},reconnect=2") for arg in plan["qemu"]["argv"])
            result = rig.boot(plan["qemu"]["argv"])
    except BackendMissing as exc:
        _backend_or_fail(exc)

    assert result.rc == 0
    disk = result.report.block_by_marker("QHVHUBLK")
    assert (disk.size_bytes, disk.ro) == (40 * MIB, False)
    (virtio,) = result.report.virtio_by_driver("virtio_blk")
    assert virtio.parent.startswith("0000:")  # a PCI function: vhost-user-blk-pci


def _has_marker(marker: str) -> Any:
    return lambda report: report.find_block(marker=marker) is not None


def test_vhost_user_blk_hot_plug_and_unplug(rig: Rig, make_disk: MakeDisk, work: Path) -> None:
    image = make_disk(work / "hot.img", 24, "QHVHUHOT")
    socket = make_store_node(work / "store", "hot0", 241, 9)
    try:
        with storage_daemon(image, socket):
            plan = vmdev_plan(work, [_blk(9)], "--vhost-user-store", str(work / "store"), "--hotplug")
            dev_id = plan["devices"][0]["id"]
            chardev = f"chr-{dev_id}"
            assert [c["execute"] for c in plan["qemu"]["hotplug"]] == ["chardev-add", "device_add"]
            with rig.start(plan["qemu"]["argv"], wait_seconds=90) as guest:
                assert guest.latest_report().find_block(marker="QHVHUHOT") is None
                guest.run(plan["qemu"]["hotplug"])
                added = guest.wait_report(_has_marker("QHVHUHOT"), timeout=40)
                disk = added.block_by_marker("QHVHUHOT")
                assert (disk.size_bytes, disk.ro) == (24 * MIB, False)
                assert chardev in _chardevs(guest)

                device_del, *backends = plan["qemu"]["unplug"]
                assert [c["execute"] for c in backends] == ["chardev-remove"]
                guest.run([device_del])
                guest.wait_event("DEVICE_DELETED", timeout=40, match={"device": dev_id})
                guest.run(backends)  # the chardev is free once the device is gone
                removed = guest.wait_report(lambda r: not _has_marker("QHVHUHOT")(r), timeout=40)
                assert removed.virtio_by_driver("virtio_blk") == []
                assert chardev not in _chardevs(guest)
    except BackendMissing as exc:
        _backend_or_fail(exc)


def _chardevs(guest: Any) -> set[str]:
    return {entry["label"] for entry in guest.execute("query-chardev")}


def test_vhost_user_fs_with_virtiofsd(rig: Rig, work: Path) -> None:
    share = work / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hello-from-vmdev-host\n")
    socket = work / "vfs,0.sock"  # a comma in the path: the -chardev value must be escaped
    config = (
        "[hypervisor.qemu]\n"
        'shared_fs = "virtio-fs"\n'
        f'virtio_fs_socket = "{socket}"\n'
        'virtio_fs_tag = "vmdevfs"\n'
    )
    try:
        with virtiofsd(share, socket):
            plan = vmdev_plan(work, [], config=config)
            (device,) = plan["devices"]
            assert (device["type"], device["tag"], device["queue_size"]) == (
                "vhost-user-fs-pci",
                "vmdevfs",
                1024,
            )
            result = rig.boot(plan["qemu"]["argv"], append="qh.virtiofs=vmdevfs")
    except BackendMissing as exc:
        _backend_or_fail(exc)

    mounted = result.report.share("vmdevfs")
    assert (mounted.mounted, mounted.error) == (True, "")
    assert mounted.hello == "hello-from-vmdev-host"
    assert "hello.txt" in mounted.files and mounted.write_ok
    assert (share / "from-guest.txt").read_text() == "hello-from-guest\n"
    assert [d.driver for d in result.report.virtio if d.device == 0x1A] == ["virtiofs"]


def test_vhost_user_net_with_dpdk_testpmd(rig: Rig, work: Path) -> None:
    socket = work / "net0.sock"
    config = (
        "[hypervisor.qemu]\nvhost_user_reconnect_timeout_sec = 1\n"
        f'[[hypervisor.qemu.vhost_user_net]]\nsocket = "{socket}"\nmac = "52:54:00:c0:ff:ee"\n'
    )
    try:
        with dpdk_testpmd(socket) as backend:
            plan = vmdev_plan(work, [], config=config)
            (device,) = plan["devices"]
            assert (device["type"], device["mac_address"], device["reconnect_time"]) == (
                "virtio-net-pci",
                "52:54:00:c0:ff:ee",
                1,
            )
            result = rig.boot(plan["qemu"]["argv"])
            assert backend.wait_output("virtio is now ready for processing", 10), backend.output()[-3000:]
            log = backend.output()
    except BackendMissing as exc:
        _backend_or_fail(exc)

    assert result.rc == 0
    (net,) = result.report.virtio_by_driver("virtio_net")
    assert net.device == 1 and net.parent.startswith("0000:")
    assert "new vhost user connection" in log and "VHOST_USER_SET_MEM_TABLE" in log


def test_vhost_user_scsi_options_are_accepted_by_qemu(rig: Rig, work: Path) -> None:
    props = {p["name"]: p["type"] for p in rig.device_properties("vhost-user-scsi-pci")}
    assert props["chardev"] == "str" and "num_queues" in props
    store = work / "store"
    socket = make_store_node(store, "scsi0", 242, 1)
    with HandshakeBackend(socket) as backend:
        cold = vmdev_plan(work, [_blk(1, 242, "/dev/vhs")], "--vhost-user-store", str(store))
        assert cold["devices"][0]["type"] == "vhost-user-scsi-pci"
        assert rig.dry_run(cold["qemu"]["argv"]) == (0, "")
        assert 1 in backend.requests  # VHOST_USER_GET_FEATURES: QEMU realized the device on the socket

        hot = vmdev_plan(work, [_blk(1, 242, "/dev/vhs")], "--vhost-user-store", str(store), "--hotplug")
        commands = [(c["execute"], c["arguments"]) for c in hot["qemu"]["hotplug"]]
        assert [name for name, _ in commands] == ["chardev-add", "device_add"]
        assert rig.qmp_oneshot(commands, argv=hot["qemu"]["argv"]) == [{}, {}]
        # why the plugin never gives vhost-user-scsi a reconnect timeout: QEMU 7.2 cannot realize it
        argv = [f"{arg},reconnect=1" if arg.startswith("socket,") else arg for arg in cold["qemu"]["argv"]]
        rc, stderr = rig.dry_run(argv)
        assert rc == 1 and "vhost_backend_init failed" in stderr
    rc, stderr = rig.dry_run(cold["qemu"]["argv"])  # no backend listening any more
    assert rc == 1 and str(socket) in stderr


# --- QEMU's own property lists: every property a plan renders ------------------------------------
#: qdev options every device takes that device-list-properties does not list
GENERIC = {"id", "bus", "driver"}
NET = '[[hypervisor.qemu.vhost_user_net]]\nsocket = "{socket}"\nmac = "{mac}"\nmsix = {msix}\n'
#: a -device or device_add property: (plan case, "-device" or "device_add", driver, property)
Option = tuple[str, str, str, str]


def _socket_node(path: Path) -> None:
    """A UNIX socket file (what the store's check wants); nothing listens: no QEMU starts here."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def _store_requests(work: Path) -> list[dict[str, Any]]:
    """A vhost-user-blk (241) and a vhost-user-scsi (242) request, resolved by the store in work."""
    _socket_node(make_store_node(work / "store", "blk0", 241, 3))
    _socket_node(make_store_node(work / "store", "scsi0", 242, 1))
    return [_blk(3), _blk(1, 242, "/dev/vhs")]


def _settings(work: Path, shared_fs: str, *, iommu: bool = False) -> str:
    """A virtio-fs share on a socket (or a 9p share) and two vhost-user NICs, MSI-X off and on."""
    text = "[hypervisor.qemu]\nvhost_user_reconnect_timeout_sec = 2\n"
    text += f"enable_iommu_platform = {str(iommu).lower()}\n"
    if shared_fs == "virtio-9p":
        return text + f'shared_fs = "virtio-9p"\nshared_dir = "{work / "share"}"\n'
    text += f'shared_fs = "virtio-fs"\nvirtio_fs_socket = "{work / "fs.sock"}"\n'
    return text + "".join(
        NET.format(socket=work / f"net{n}.sock", mac=f"52:54:00:c0:ff:e{n}", msix=msix)
        for n, msix in enumerate(("false", "true"))
    )


def _plans(work: Path, machines: tuple[str, ...], *, store: bool, iommu: bool) -> Iterator[tuple[str, Any]]:
    """(case, plan) from the real CLI: every vhost-user kind cold- and hot-plugged, then the 9p
    share (always cold-plugged), on each machine type."""
    requests = _store_requests(work) if store else []
    args = ("--vhost-user-store", str(work / "store")) if store else ()
    for machine in machines:
        for plug in ("--coldplug", "--hotplug"):
            config = _settings(work, "virtio-fs", iommu=iommu)
            plan = vmdev_plan(work, requests, *args, "--machine-type", machine, plug, config=config)
            yield f"{machine} {plug}", plan
        config = _settings(work, "virtio-9p", iommu=iommu)
        yield f"{machine} 9p", vmdev_plan(work, [], "--machine-type", machine, config=config)


def _options(work: Path, machines: tuple[str, ...], *, store: bool, iommu: bool) -> set[Option]:
    plans = _plans(work, machines, store=store, iommu=iommu)
    return {option for case, plan in plans for option in _rendered_options(case, plan)}


def _rendered_options(case: str, plan: dict[str, Any]) -> Iterator[Option]:
    argv = plan["qemu"]["argv"]
    for flag, value in itertools.pairwise(argv):
        if flag == "-device":
            driver, *props = split_opts(value)
            keys = {prop.partition("=")[0] for prop in props}
            yield from ((case, "-device", driver, key) for key in keys - GENERIC)
    for command in plan["qemu"]["hotplug"]:
        if command["execute"] == "device_add":
            args = command["arguments"]
            yield from ((case, "device_add", args["driver"], key) for key in set(args) - GENERIC)


def _not_in_qemu(qemu: Rig, options: set[Option]) -> list[Option]:
    known = {driver: {p["name"] for p in qemu.device_properties(driver)} for _, _, driver, _ in options}
    return sorted(option for option in options if option[3] not in known[option[2]])


def test_every_property_a_vhost_user_plan_renders_is_one_qemu_has(rig: Rig, work: Path) -> None:
    """x86 (q35, pc: PCI; microvm: MMIO) and s390x (CCW), cold and hot plug: each -device and
    device_add property is in QEMU's device-list-properties for that driver."""
    s390 = Rig(qemu="qemu-system-s390x")
    if shutil.which(s390.qemu) is None:
        pytest.fail("qemu-system-s390x is missing: apt-get install qemu-system-misc", pytrace=False)
    (work / "share").mkdir()
    x86 = _options(work, ("q35", "pc", "microvm"), store=True, iommu=False)
    ccw = _options(work, ("s390-ccw-virtio",), store=False, iommu=True)
    missing = _not_in_qemu(rig, x86) + _not_in_qemu(s390, ccw)
    assert missing == [], "QEMU has no such property: " + "; ".join(" ".join(option) for option in missing)

    # what was checked: every driver the plugin has, each hot-pluggable one also by device_add
    rendered = {(where, driver, key) for _, where, driver, key in x86 | ccw}
    drivers = {driver for _, driver, _ in rendered}
    plugin = {driver for table in (*DRIVERS.values(), NINEP_DRIVERS) for driver in table.values()}
    assert drivers - plugin == {"pcie-root-port"}  # the core's ports for q35 hot plug
    assert plugin <= drivers
    hot = {driver for table in DRIVERS.values() for transport, driver in table.items() if transport != MMIO}
    assert hot <= {driver for where, driver, _ in rendered if where == "device_add"}
    assert {
        ("-device", "vhost-user-blk-pci", "chardev"),
        ("device_add", "vhost-user-scsi-pci", "chardev"),
        ("device_add", "virtio-net-pci", "vectors"),  # MSI-X off: QEMU 7.2 crashes masking vectors
        ("-device", "vhost-user-fs-device", "queue-size"),
        ("device_add", "vhost-user-fs-ccw", "iommu_platform"),
        ("-device", "virtio-net-ccw", "iommu_platform"),
        ("-device", "virtio-9p-ccw", "mount_tag"),
    } <= rendered


def test_a_virtio_fs_dax_window_is_refused_because_qemus_vhost_user_fs_has_no_cache_size(
    rig: Rig, work: Path
) -> None:
    for driver in (DRIVERS[VHOST_USER_FS][PCI], DRIVERS[VHOST_USER_FS][MMIO]):
        assert "cache-size" not in {p["name"] for p in rig.device_properties(driver)}
    config = f'[hypervisor.qemu]\nshared_fs = "virtio-fs"\nvirtio_fs_socket = "{work / "fs.sock"}"\n'
    with pytest.raises(AssertionError, match="no DAX window"):
        vmdev_plan(work, [], config=config + "virtio_fs_cache_size = 1024\n")
    assert vmdev_plan(work, [], config=config)["devices"][0]["type"] == DRIVERS[VHOST_USER_FS][PCI]
