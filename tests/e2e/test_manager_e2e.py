"""The device manager in real guests: ``vmdev attach``/``detach``/``status`` hot-plug into a VM booted
from a plan, the guest sees each device come and go, and QEMU keeps nothing behind. An object two
devices' hot plugs share stays in real QEMU until its last user is gone. Fault injection against
real QEMU: a ``device_add`` QEMU rejects leaves no backend, a failing later step unplugs what was
added (the guest releases it), and QEMU killed during an attach leaves a state file that ``vmdev
status`` reports honestly."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from block_support import loop_device
from manager_support import Sandbox, added_since, holdings, paused_qemu, qmp_args, short_dir
from vmdev import hookimpl
from vmdev.errors import VmdevError
from vmdev.live import HotplugError
from vmdev.manager import DeviceManager
from vmdev.models import DeviceInfo
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.qemu import QemuAttach, QmpCommand
from vmdev.qmp import QmpHotPlugger, QmpSession
from vmdev.settings import SandboxSettings
from vmdev.state import PortRecord, StateFile
from vmdev_cli import oci_spec, plan, run_vmdev
from vmdev_rig import GuestReport, Rig, RunningGuest
from vmdev_rig.images import MakeDisk

MIB = 1024 * 1024
NULL = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}
MEMORY = ("--memory", "256")


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def has_virtio_rng(report: GuestReport) -> bool:
    return report.rng.current.startswith("virtio_rng")


def guest_holdings(guest: RunningGuest) -> dict[str, set[str]]:
    return holdings(lambda command, args: guest.execute(command, args))


def settings_file(directory: Path, *, block_driver: str, hotplug_root_ports: int) -> Path:
    path = directory / "sandbox.toml"
    path.write_text(f'[hypervisor.qemu]\nblock_device_driver = "{block_driver}"\n\n'
                    f"[vmdev]\nhotplug_root_ports = {hotplug_root_ports}\n")
    return path


# --- hot plug with the CLI ---------------------------------------------------------------------------
def test_rng_attached_and_detached_with_the_cli(rig: Rig, workdir: Path) -> None:
    boot = plan(oci_spec(NULL), workdir, *MEMORY, "--hotplug")  # the RNG is left for hot plug: rp0 is free
    assert not any("virtio-rng" in arg for arg in boot["qemu"]["argv"])
    sandbox = Sandbox(workdir / "state.json", workdir / "vmdev.sock")
    with rig.start([*boot["qemu"]["argv"], *qmp_args(sandbox.qmp)], wait_seconds=150) as guest:
        assert not has_virtio_rng(guest.latest_report())
        before = guest_holdings(guest)
        attached = sandbox.ok("attach", "--sandbox-device", "rng", "--container", "c1")
        assert attached["plugged"] and attached["device"]["attachment"]["buses"] == ["rp0"]
        seen = guest.wait_report(has_virtio_rng, 60)
        assert any(p.vendor == 0x1AF4 and p.device == 0x1044 for p in seen.pci)
        assert added_since(before, guest_holdings(guest)) == {
            "nodes": set(), "chardevs": set(), "objects": {"rng0"}, "devices": {"virtio-rng0"}}
        status = sandbox.ok("status")
        assert status["vm"]["reachable"] is True and status["vm"]["connection"] == {"qmp": str(sandbox.qmp)}
        assert status["devices"][0]["present"] == [{"object": "object-add rng0", "present": True},
                                                   {"object": "device_add virtio-rng0", "present": True}]
        detached = sandbox.ok("detach", "--sandbox-device", "rng0", "--container", "c1")
        assert detached == {"id": "rng0", "unplugged": True, "device": None}
        guest.wait_report(lambda r: not has_virtio_rng(r), 60)
        assert added_since(before, guest_holdings(guest)) == {
            "nodes": set(), "chardevs": set(), "objects": set(), "devices": set()}


def test_virtio_blk_disk_shared_by_two_containers(rig: Rig, make_disk: MakeDisk, workdir: Path) -> None:
    image = make_disk(workdir / "shared.img", 24, "QHMGRBLK")
    config = settings_file(workdir, block_driver="virtio-blk", hotplug_root_ports=2)
    sandbox = Sandbox(workdir / "state.json", workdir / "vmdev.sock")
    boot = plan(oci_spec(NULL), workdir, *MEMORY, "--config", str(config), "--state", str(sandbox.state))
    assert "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2" in boot["qemu"]["argv"]
    disk = ("--type", "b", "--major", "-1", "--minor", "0", "--host-path", str(image))
    with rig.start([*boot["qemu"]["argv"], *qmp_args(sandbox.qmp)], wait_seconds=150) as guest:
        before = guest_holdings(guest)
        first = sandbox.ok("attach", *disk, "--container", "c1", "/dev/xvdb")
        drive = first["id"]
        assert first["plugged"] and first["device"]["device"]["driver"] == "virtio-blk"
        seen = guest.wait_report(lambda r: r.find_block(serial=drive) is not None, 60).block_by_serial(drive)
        assert (seen.size_bytes, seen.marker, seen.ro) == (24 * MIB, "QHMGRBLK", False)
        second = sandbox.ok("attach", *disk, "--container", "c2", "/dev/data")
        assert second["id"] == drive and not second["plugged"]
        assert (second["device"]["ref_count"], second["device"]["attach_count"]) == (2, 2)
        assert added_since(before, guest_holdings(guest))["devices"] == {"virtio-" + drive}  # one device

        one = sandbox.ok("detach", *disk, "--container", "c1", "/dev/xvdb")
        assert not one["unplugged"] and one["device"]["attach_count"] == 1
        assert "virtio-" + drive in guest_holdings(guest)["devices"]
        assert guest.latest_report().find_block(serial=drive) is not None  # c2 still has it
        last = sandbox.ok("detach", *disk, "--container", "c2", "/dev/data")
        assert last["unplugged"] and last["device"] is None
        guest.wait_report(lambda r: r.find_block(serial=drive) is None, 60)
        assert added_since(before, guest_holdings(guest)) == {
            "nodes": set(), "chardevs": set(), "objects": set(), "devices": set()}


def test_virtio_scsi_disk_after_a_boot_disk_of_the_plan(rig: Rig, make_disk: MakeDisk, workdir: Path) -> None:
    boot_image = make_disk(workdir / "boot.img", 10, "QHMGRBOOT")
    hot_image = make_disk(workdir / "hot.img", 12, "QHMGRSCSI")
    sandbox = Sandbox(workdir / "state.json", workdir / "vmdev.sock")
    spec = oci_spec(NULL, mounts=[{"destination": "/data", "source": str(boot_image), "type": "bind",
                                   "options": ["io.katacontainers.fs-opt.block_device=file"]}])
    config = settings_file(workdir, block_driver="virtio-scsi", hotplug_root_ports=1)
    boot = plan(spec, workdir, *MEMORY, "--config", str(config), "--state", str(sandbox.state))
    assert "virtio-scsi-pci,id=scsi0" in boot["qemu"]["argv"]  # the controller comes with the boot disk
    with loop_device(hot_image) as node, rig.start(
        [*boot["qemu"]["argv"], *qmp_args(sandbox.qmp)], wait_seconds=150
    ) as guest:
        rdev = os.stat(node).st_rdev
        loop = ("--type", "b", "--major", str(os.major(rdev)), "--minor", str(os.minor(rdev)), "/dev/sdb")
        before = guest_holdings(guest)
        attached = sandbox.ok("attach", *loop)
        drive = attached["id"]
        assert attached["device"]["host_path"] == node
        assert attached["device"]["device"]["drive"]["scsi_addr"] == "0:1"  # index 0 is the boot disk's
        report = guest.wait_report(lambda r: r.find_block(serial=drive) is not None, 60)
        seen = report.block_by_serial(drive)
        assert (seen.size_bytes, seen.marker) == (12 * MIB, "QHMGRSCSI")
        assert seen.hctl.split(":")[1:] == ["0", "0", "1"]  # channel 0, target (scsi-id) 0, lun 1
        assert report.find_block(marker="QHMGRBOOT") is not None
        sandbox.ok("detach", *loop)
        gone = guest.wait_report(lambda r: r.find_block(serial=drive) is None, 60)
        assert gone.find_block(marker="QHMGRBOOT") is not None  # the boot disk stays
        assert added_since(before, guest_holdings(guest)) == {
            "nodes": set(), "chardevs": set(), "objects": set(), "devices": set()}
        status = sandbox.ok("status")
        assert [d["status"] for d in status["devices"] if d["kind"] == "block"] == [
            "in the VM (cold-plugged at boot)"]


# --- fault injection ---------------------------------------------------------------------------------
def test_a_device_add_qemu_rejects_leaves_no_backend(make_disk: MakeDisk, workdir: Path) -> None:
    class NoSuchBus(QmpHotPlugger):
        def free_ports(self) -> list[PortRecord]:
            return [PortRecord(id="rp-missing", kind="root-port")]  # a bus QEMU does not have

    image = make_disk(workdir / "fault.img", 4, "QHFAULT")
    argv = ["-machine", "q35", "-m", "256M", "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1"]
    with paused_qemu(argv, workdir) as qemu, QmpSession.connect(str(qemu.socket)) as session:
        before = holdings(lambda command, args: session.execute(command, args))
        manager = DeviceManager(SandboxSettings(options={"block_device_driver": "virtio-blk"}),
                                hotplugger=NoSuchBus(session))
        failures: list[VmdevError] = []
        attempts: list[Callable[[], object]] = [
            lambda: manager.add_sandbox_device("rng"),
            lambda: manager.add_device(DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=-1, minor=0,
                                                  host_path=str(image))),
        ]
        for attach in attempts:
            with pytest.raises(HotplugError) as exc:
                attach()
            failures.append(exc.value)
        rng, disk = (str(e) for e in failures)
        assert "step 2 of 2, device_add (driver=virtio-rng-pci id=virtio-rng0 bus=rp-missing)" in rng
        assert "QEMU: Bus 'rp-missing' not found (GenericError); rolled back: object-del (id=rng0)" in rng
        assert "QEMU: Bus 'rp-missing' not found (GenericError); rolled back: blockdev-del" in disk
        assert added_since(before, holdings(lambda command, args: session.execute(command, args))) == {
            "nodes": set(), "chardevs": set(), "objects": set(), "devices": set()}
        assert manager.devices() == []


@attrs.frozen
class Beacon:
    kind: ClassVar[str] = "beacon"
    id: str = "beacon0"


class ThreeSteps:
    """A vendor device whose third hot-plug step QEMU refuses, after the device is in the guest."""

    @hookimpl
    def sandbox_devices(self) -> list[Beacon]:
        return [Beacon()]

    @hookimpl
    def attach_options(self, device: Any, target: Any) -> Any:
        if not isinstance(device, Beacon):
            return None
        bus = target.hotplug_bus(device.id)
        return QemuAttach(
            hotplug=[
                QmpCommand("object-add", {"qom-type": "rng-random", "id": "beacon0", "filename": "/dev/urandom"}),
                QmpCommand("device_add", {"driver": "virtio-rng-pci", "id": "dev-beacon0", "rng": "beacon0",
                                          "bus": bus}),
                QmpCommand("netdev_add", {"type": "no-such-backend", "id": "net-beacon0"}),
            ],
            unplug=[QmpCommand("device_del", {"id": "dev-beacon0"}), QmpCommand("object-del", {"id": "beacon0"})],
            hotplugged=True,
        )


def test_a_failing_later_step_unplugs_the_added_device_with_the_guest(rig: Rig, workdir: Path) -> None:
    plugins = PluginManager(LoadPolicy(only=()), plugins=[("three-steps", ThreeSteps())]).load()
    boot = plan(oci_spec(NULL), workdir, *MEMORY, "--hotplug")  # rp0 free for the beacon
    socket = workdir / "vmdev.sock"
    with rig.start([*boot["qemu"]["argv"], *qmp_args(socket)], wait_seconds=150) as guest:
        before = guest_holdings(guest)
        with QmpSession.connect(str(socket)) as session:
            manager = DeviceManager(SandboxSettings(), plugins=plugins, hotplugger=QmpHotPlugger(session))
            with pytest.raises(HotplugError) as exc:
                manager.add_sandbox_device("beacon")
        message = str(exc.value)
        assert "step 3 of 3, netdev_add (id=net-beacon0), failed: QEMU:" in message
        assert "rolled back: device_del (id=dev-beacon0), object-del (id=beacon0)" in message
        guest.wait_event("DEVICE_DELETED", 30, match={"device": "dev-beacon0"})  # the guest released it
        assert added_since(before, guest_holdings(guest)) == {
            "nodes": set(), "chardevs": set(), "objects": set(), "devices": set()}
        assert manager.devices() == []


@attrs.frozen
class Twin:
    """One of two sandbox devices whose hot plugs share one entropy backend object."""

    kind: ClassVar[str] = "twin"
    id: str


class Twins:
    """Two RNG devices sharing ``twin-rng``. Like vmdev-vfio's IOMMUFD object, only the first device
    of the notes renders its creation and removal; with ``every_device`` each one does. Either way
    the device manager creates it with the first user and removes it with the last."""

    def __init__(self, *, every_device: bool) -> None:
        self.every_device = every_device

    @hookimpl
    def sandbox_devices(self) -> list[Twin]:
        return [Twin(id="twin0"), Twin(id="twin1")]

    @hookimpl
    def attach_options(self, device: Any, target: Any) -> Any:
        if not isinstance(device, Twin):
            return None
        bus = target.hotplug_bus(device.id)
        hotplug = [QmpCommand("device_add", {"driver": "virtio-rng-pci", "id": "dev-" + device.id,
                                             "rng": "twin-rng", "bus": bus})]
        unplug = [QmpCommand("device_del", {"id": "dev-" + device.id})]
        if self.every_device or len(target.record("twins", device.id, "")) == 1:
            hotplug.insert(0, QmpCommand("object-add", {"qom-type": "rng-random", "id": "twin-rng",
                                                        "filename": "/dev/urandom"}))
            unplug.append(QmpCommand("object-del", {"id": "twin-rng"}))
        return QemuAttach(hotplug=hotplug, unplug=unplug, hotplugged=True)


@pytest.mark.parametrize("every_device", [False, True], ids=["first-device-creates", "every-device-creates"])
def test_an_object_two_devices_share_stays_in_qemu_until_the_last_one_leaves(
    rig: Rig, workdir: Path, every_device: bool
) -> None:
    plugins = PluginManager(LoadPolicy(only=()), plugins=[("twins", Twins(every_device=every_device))]).load()
    ports = workdir / "ports.toml"
    ports.write_text("[vmdev]\nhotplug_root_ports = 2\n")
    boot = plan(oci_spec(NULL), workdir, *MEMORY, "--config", str(ports))
    socket = workdir / "vmdev.sock"
    with rig.start([*boot["qemu"]["argv"], *qmp_args(socket)], wait_seconds=150) as guest:
        before = guest_holdings(guest)
        with QmpSession.connect(str(socket)) as session:
            manager = DeviceManager(SandboxSettings(), plugins=plugins, hotplugger=QmpHotPlugger(session))
            manager.add_sandbox_device("twin0")
            manager.add_sandbox_device("twin1")
            assert added_since(before, guest_holdings(guest)) == {"nodes": set(), "chardevs": set(),
                                                                  "objects": {"twin-rng"},
                                                                  "devices": {"dev-twin0", "dev-twin1"}}
            # QEMU would delete this backend under twin1 (only IOMMUFD and mapped memory backends are
            # refused while in use): the manager must leave it to twin1
            assert manager.release_device("twin0") is None
            assert added_since(before, guest_holdings(guest)) == {
                "nodes": set(), "chardevs": set(), "objects": {"twin-rng"}, "devices": {"dev-twin1"}}
            assert manager.release_device("twin1") is None
        assert added_since(before, guest_holdings(guest)) == {
            "nodes": set(), "chardevs": set(), "objects": set(), "devices": set()}


class KillsQemuBefore:
    """A QMP transport that kills QEMU (SIGKILL) when a given command is about to be sent."""

    def __init__(self, session: Any, kill: Any, command: str) -> None:
        self.session, self.kill, self.command = session, kill, command

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
        if command == self.command:
            self.kill()
        return self.session.execute(command, arguments, timeout=timeout)

    def event_mark(self) -> int:
        return int(self.session.event_mark())

    def wait_event(self, name: str, match: Mapping[str, Any], *, after: int, timeout: float) -> Any:
        return self.session.wait_event(name, match, after=after, timeout=timeout)

    def close(self) -> None:
        self.session.close()


def test_qemu_killed_during_attach_leaves_an_honest_state(make_disk: MakeDisk, workdir: Path) -> None:
    image = make_disk(workdir / "killed.img", 4, "QHKILLED")
    state = StateFile(workdir / "state.json")
    argv = ["-machine", "q35", "-m", "256M", "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1"]
    with paused_qemu(argv, workdir) as qemu, QmpSession.connect(str(qemu.socket)) as session:
        transport = KillsQemuBefore(session, qemu.kill, "device_add")  # after blockdev-add succeeded
        manager = DeviceManager(SandboxSettings(options={"block_device_driver": "virtio-blk"}),
                                hotplugger=QmpHotPlugger(transport), journal=state.save)
        with pytest.raises(HotplugError, match="QEMU's state is unknown and nothing was rolled back"):
            manager.add_device(DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=-1, minor=0,
                                          host_path=str(image)))
        assert qemu.proc.poll() is not None
    done = run_vmdev("status", "--state", str(state.path), "--qmp", str(qemu.socket), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["vm"]["reachable"] is False and "cannot connect to QEMU's QMP socket" in report["vm"]["error"]
    (device,) = report["devices"]
    assert device["attachment"]["phase"] == "failed" and device["attachment"]["steps_done"] == 1
    assert device["status"].startswith("attach failed: hot plug step 2 of 2, device_add")
    assert "may be left in the VM: device_del virtio-" in device["status"] and "blockdev-del" in device["status"]
    text = run_vmdev("status", "--state", str(state.path))
    assert text.returncode == 0 and "attach failed" in text.stdout
