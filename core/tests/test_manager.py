"""The sandbox device manager: dedup and counts, allocations, ports, hot plug with roll-back, state,
devices rebuilt from their saved form, host drift, shared hot-plug objects, no lock across VM I/O.

A vendor "disk" family (below) stands for any plugin: it draws its index from ``alloc`` (as
vmdev-block draws drive indexes), notes what it renders with ``target.record``, takes a hot-plug
port from ``target.hotplug_bus``, rebuilds its devices from their saved form and reports a host
fact. The VM is :class:`vmdev.fakeqmp.FakeQemu` behind the real :class:`vmdev.qmp.QmpHotPlugger`.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from vmdev import hookimpl
from vmdev.backends.clh import ClhAttach
from vmdev.errors import ConfigError, InvalidIdError, PluginError, UnsupportedError
from vmdev.fakeqmp import FakeQemu
from vmdev.host import HostContext
from vmdev.live import HotplugError
from vmdev.manager import (
    CountOverflowError,
    DeviceAttachedError,
    DeviceIdConflictError,
    DeviceManager,
    DeviceNotAttachedError,
    DeviceNotFoundError,
    HostChangedError,
    NotAUserError,
    describe_status,
    device_key,
)
from vmdev.models import Device, DeviceInfo
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.qemu import QemuAttach, QmpCommand, make_id
from vmdev.qmp import QmpHotPlugger
from vmdev.resources import Allocator, ResourceExhaustedError
from vmdev.serialize import from_json
from vmdev.settings import SandboxSettings
from vmdev.state import MAX_COUNT, AttachPhase, PortRecord, SandboxState, StateFile
from vmdev.targets import ApiRequest, RenderTarget
from vmdev.testing import FakeHost


@attrs.frozen
class Disk:
    kind: ClassVar[str] = "disk"
    id: str
    container_path: str
    host_path: str
    index: int


@attrs.frozen
class Beacon:
    """A sandbox device (like the RNG): an object and a device on a hot-plug port."""

    kind: ClassVar[str] = "beacon"
    id: str = "beacon0"


@attrs.define
class DiskPlugin:
    cold_only: bool = False
    unpluggable: bool = True
    index_limit: int = 8
    fixed_id: str | None = None
    device_add_extra: dict[str, Any] = attrs.Factory(dict)
    #: how often build_device and device_from_state made a disk
    built: int = 0
    rebuilt: int = 0
    #: whether it implements device_from_state (a family that does not cannot re-render saved devices)
    rebuilds: bool = True

    @hookimpl
    def build_device(self, info: DeviceInfo, alloc: Allocator) -> Device | None:
        if info.dev_type != "b":
            return None
        index = alloc.take("disk.index", owner=info.container_path, limit=self.index_limit,
                           device=info.container_path)
        device_id = self.fixed_id or make_id("disk", f"{info.container_path}|{info.host_path}")
        self.built += 1
        return Disk(id=device_id, container_path=info.container_path, host_path=info.host_path, index=index)

    @hookimpl
    def device_from_state(self, kind: str, data: Mapping[str, Any]) -> Device | None:
        saved = {"disk": Disk, "beacon": Beacon}.get(kind)
        if saved is None or not self.rebuilds:
            return None
        self.rebuilt += 1
        device: Any = from_json(saved, data)
        return attrs.evolve(device, id=self.fixed_id) if self.fixed_id else device  # type: ignore[no-any-return]

    @hookimpl
    def host_facts(self, device: Device, host: HostContext) -> Mapping[str, str] | None:
        """What decided the disk beyond its node: the disk's serial, as sysfs tells it."""
        if not isinstance(device, Disk):
            return None
        return {"disk.serial": host.sysfs.read_line(f"class/disk/{Path(device.host_path).name}/serial") or ""}

    @hookimpl
    def sandbox_devices(self) -> list[Device]:
        return [Beacon()]

    @hookimpl
    def attach_options(
        self, device: Device, target: RenderTarget, hotplug: bool
    ) -> QemuAttach | ClhAttach | None:
        if isinstance(device, Beacon):
            bus = target.hotplug_bus(device.id)  # type: ignore[attr-defined]
            return QemuAttach(
                hotplug=[QmpCommand("object-add", {"qom-type": "rng-builtin", "id": device.id}),
                         QmpCommand("device_add", {"driver": "virtio-rng-pci", "id": "dev-" + device.id,
                                                   "rng": device.id, "bus": bus})],
                unplug=[QmpCommand("device_del", {"id": "dev-" + device.id}),
                        QmpCommand("object-del", {"id": device.id})],
                hotplugged=True,
            )
        if not isinstance(device, Disk):
            return None
        if target.hypervisor == "cloud-hypervisor":  # a backend without a live driver: books only
            return ClhAttach(hotplug=[ApiRequest("PUT", "/api/v1/vm.add-disk", {"id": device.id})],
                             unplug=[ApiRequest("PUT", "/api/v1/vm.remove-device", {"id": device.id})],
                             hotplugged=True)
        node = device.id + "-node"
        notes = target.record("disk.paths", device.container_path, device.host_path)
        details = {"index": device.index, "peers": len(notes)}
        if self.cold_only or not hotplug:
            return QemuAttach(args=["-blockdev", f"raw,node-name={node}"], details=details)
        bus = target.hotplug_bus(device.container_path)  # type: ignore[attr-defined]
        add = {"driver": "virtio-blk-pci", "id": device.id, "drive": node, "bus": bus, **self.device_add_extra}
        return QemuAttach(
            hotplug=[QmpCommand("blockdev-add", {"driver": "raw", "node-name": node}), QmpCommand("device_add", add)],
            unplug=[QmpCommand("device_del", {"id": device.id}), QmpCommand("blockdev-del", {"node-name": node})]
            if self.unpluggable else [],
            hotplugged=True,
            details={**details, "bus": bus},
        )


def disk(path: str, major: int, minor: int, **kw: Any) -> DeviceInfo:
    return DeviceInfo(container_path=path, dev_type="b", major=major, minor=minor, **kw)


@pytest.fixture
def host(fake_host: FakeHost) -> HostContext:
    for minor, name in enumerate(("sda", "sdb", "sdc", "sdd", "sde", "sdf", "sdg", "sdh", "sdi", "sdj")):
        fake_host.block_device(8, minor * 16, name)  # its node stats as the block device 8:N
    fake_host.block_device(1, 3, "ram3")
    fake_host.char_device(1, 3, "null")
    return fake_host.context()


Make = Callable[..., tuple[DeviceManager, FakeQemu]]


@pytest.fixture
def make(host: HostContext, vmdev_plugins: Any) -> Make:
    def build(
        plugin: DiskPlugin | None = None,
        *,
        ports: tuple[str, ...] = ("rp0", "rp1", "rp2"),
        live: bool = True,
        state: SandboxState | None = None,
        **kwargs: Any,
    ) -> tuple[DeviceManager, FakeQemu]:
        qemu = FakeQemu()
        for port in ports:
            qemu.add_port(port)
        plugins = vmdev_plugins(extra=[("disks", plugin or DiskPlugin())])
        hot = QmpHotPlugger(qemu, unplug_timeout=0.01) if live else None
        settings = None if state is not None else kwargs.pop("settings", SandboxSettings())
        manager = DeviceManager(settings, state=state, host=host, plugins=plugins, hotplugger=hot, **kwargs)
        return manager, qemu

    return build


# --- devices and counts --------------------------------------------------------------------------------
def test_the_same_device_number_is_one_device_with_a_reference_per_request(make: Make) -> None:
    manager, _ = make()
    first = manager.new_device(disk("/dev/xvdb", 8, 16), user="c1")
    again = manager.new_device(disk("/dev/data", 8, 16), user="c2")
    assert again.id == first.id and again.ref_count == 2 and again.users == ("c1", "c2")
    assert again.container_path == "/dev/xvdb"  # the first request describes the device (as in Kata)
    assert first.host_path == "/dev/sdb" and first.key == "block 8:16"
    other = manager.new_device(disk("/dev/xvdc", 8, 32))
    assert other.id != first.id and [r.id for r in manager.devices()] == [first.id, other.id]


def test_block_and_character_devices_with_equal_numbers_are_different_devices(make: Make) -> None:
    manager, _ = make()
    block = manager.new_device(disk("/dev/ram3", 1, 3))
    char = manager.new_device(DeviceInfo(container_path="/dev/null", dev_type="c", major=1, minor=3))
    assert (block.kind, char.kind) == ("disk", "generic") and block.id != char.id


def test_files_used_as_disks_are_the_same_device_when_the_host_path_is(make: Make) -> None:
    manager, _ = make()
    a = manager.new_device(disk("/dev/a", -1, 0, host_path="/img/a.raw"))
    b = manager.new_device(disk("/dev/b", -1, 0, host_path="/img/a.raw"))
    c = manager.new_device(disk("/dev/c", -1, 0, host_path="/img/c.raw"))
    assert a.id == b.id != c.id and b.ref_count == 2 and a.key == "file /img/a.raw"
    assert manager.find(disk("/dev/x", -1, 0, host_path="/img/c.raw")) == c
    assert manager.find(disk("/dev/x", 8, 99)) is None
    assert device_key(DeviceInfo(container_path="/run/p", dev_type="p", major=0, minor=0, host_path="/run/p")) \
        == "fifo /run/p"


def test_attach_counts_and_only_the_first_attach_and_last_detach_touch_the_vm(make: Make) -> None:
    manager, qemu = make()
    record = manager.new_device(disk("/dev/xvdb", 8, 16))
    assert manager.attach(record.id).attach_count == 1
    plugged = len(qemu.log)
    assert manager.attach(record.id).attach_count == 2 and len(qemu.log) == plugged
    assert manager.is_attached(record.id)
    assert manager.detach(record.id).attach_count == 1 and qemu.leftovers()["devices"] == [record.id]
    gone = manager.detach(record.id)
    assert gone.attach_count == 0 and gone.attachment is None and not manager.is_attached(record.id)
    assert qemu.leftovers() == {"devices": [], "objects": [], "nodes": [], "chardevs": [], "netdevs": []}
    with pytest.raises(DeviceNotAttachedError, match="device isn't attached") as exc:
        manager.detach(record.id)
    assert (exc.value.device, exc.value.field) == ("/dev/xvdb", "attach_count")
    assert manager.get(record.id).attach_count == 0


def test_counts_never_overflow(make: Make) -> None:
    manager, _ = make(live=False)
    record = manager.new_device(disk("/dev/xvdb", 8, 16))
    state = manager.snapshot()
    full = attrs.evolve(state, devices=[attrs.evolve(record, attach_count=MAX_COUNT, ref_count=MAX_COUNT,
                                                     attachment=None)])
    manager, _ = make(live=False, state=full)
    with pytest.raises(CountOverflowError, match="attached too many times"):
        manager.attach(record.id)
    with pytest.raises(CountOverflowError, match="referenced too many times"):
        manager.new_device(disk("/dev/again", 8, 16))
    assert (manager.get(record.id).attach_count, manager.get(record.id).ref_count) == (MAX_COUNT, MAX_COUNT)


def test_remove_is_refused_while_attached_and_the_last_reference_forgets_the_device(make: Make) -> None:
    manager, _ = make()
    record = manager.new_device(disk("/dev/xvdb", 8, 16))
    manager.new_device(disk("/dev/xvdb", 8, 16))
    manager.attach(record.id)
    assert manager.remove(record.id) is not None  # another reference remains
    with pytest.raises(DeviceAttachedError, match="can't remove attached device") as exc:
        manager.remove(record.id)
    assert exc.value.device == "/dev/xvdb" and manager.get(record.id).ref_count == 1  # unchanged
    manager.detach(record.id)
    assert manager.remove(record.id) is None
    with pytest.raises(DeviceNotFoundError, match="device with specified ID hasn't been created"):
        manager.get(record.id)
    assert manager.allocator.snapshot() == {}  # its index is free again


def test_users_must_hold_the_device_they_release(make: Make) -> None:
    manager, _ = make()
    record = manager.add_device(disk("/dev/xvdb", 8, 16), user="c1")
    with pytest.raises(NotAUserError, match="c2 does not use this device"):
        manager.release_device(record.id, user="c2")
    assert manager.get(record.id).attach_count == 1
    assert manager.release_device(record.id, user="c1") is None


# --- allocations -----------------------------------------------------------------------------------------
def test_indexes_are_smallest_free_and_reused_after_detach_and_remove(make: Make) -> None:
    manager, _ = make(ports=("rp0", "rp1", "rp2", "rp3"))
    ids = [manager.add_device(disk(f"/dev/d{n}", 8, 16 * n)).id for n in range(3)]
    index = {i: manager.get(i).attachment.details["index"] for i in ids}  # type: ignore[union-attr]
    assert list(index.values()) == [0, 1, 2]
    manager.release_device(ids[1])
    fourth = manager.add_device(disk("/dev/d3", 8, 48))
    assert fourth.attachment is not None and fourth.attachment.details["index"] == 1


def test_numbers_stay_until_remove_and_exhaustion_is_clear(make: Make) -> None:
    manager, _ = make(DiskPlugin(index_limit=2))
    a = manager.new_device(disk("/dev/a", 8, 0))
    b = manager.new_device(disk("/dev/b", 8, 16))
    assert (manager.get(a.id).device["index"], manager.get(b.id).device["index"]) == (0, 1)
    manager.attach(a.id)
    manager.detach(a.id)  # detached, still referenced: keeps its number
    before = manager.snapshot()
    with pytest.raises(ResourceExhaustedError, match=r"no free disk.index left") as exc:
        manager.new_device(disk("/dev/c", 8, 32))
    assert (exc.value.device, exc.value.field) == ("/dev/c", "disk.index")
    assert manager.snapshot() == before  # nothing registered, nothing taken
    manager.remove(a.id)
    assert manager.new_device(disk("/dev/c", 8, 32)).device["index"] == 0


def test_two_containers_with_the_same_container_path_get_different_numbers(make: Make) -> None:
    manager, _ = make(live=False)
    one = manager.new_device(disk("/dev/xvdb", 8, 16))
    two = manager.new_device(disk("/dev/xvdb", 8, 32))  # another container, another host disk
    assert one.device["index"] != two.device["index"]


def test_hot_plug_ports_are_the_free_ports_of_the_vm_one_device_each(make: Make) -> None:
    manager, qemu = make(ports=("rp0", "rp1"))
    qemu.add_device("cold0", "vfio-pci", bus="rp0")  # occupied since boot
    first = manager.add_device(disk("/dev/a", 8, 0))
    assert first.attachment is not None and first.attachment.buses == ("rp1",)
    with pytest.raises(UnsupportedError, match=r"no free PCIe root-port left .*hotplug_root_ports = N") as exc:
        manager.add_device(disk("/dev/b", 8, 16))
    assert (exc.value.device, exc.value.field) == ("/dev/b", "hotplug")
    assert len(manager.devices()) == 1  # the failed request left no device and no numbers behind
    manager.release_device(first.id)
    assert manager.add_device(disk("/dev/b", 8, 16)).attachment.buses == ("rp1",)  # type: ignore[union-attr]


def test_without_a_vm_the_spare_ports_of_the_boot_plan_are_used(make: Make) -> None:
    state = SandboxState(settings=SandboxSettings(), ports=[PortRecord(id="rp4", kind="root-port")])
    manager, _ = make(live=False, state=state)
    record = manager.add_device(disk("/dev/a", 8, 0))
    assert record.attachment is not None and record.attachment.buses == ("rp4",)
    assert record.attachment.phase is AttachPhase.ATTACHED and record.attachment.hotplug  # books only


def test_ids_are_checked_and_never_shared(make: Make) -> None:
    manager, _ = make(DiskPlugin(fixed_id="disk-same"), live=False)
    manager.new_device(disk("/dev/a", 8, 0))
    with pytest.raises(DeviceIdConflictError, match="'disk-same' is already used by /dev/a") as exc:
        manager.new_device(disk("/dev/b", 8, 16))
    assert isinstance(exc.value, InvalidIdError) and len(manager.devices()) == 1
    bad, _ = make(DiskPlugin(fixed_id="9-not-an-id"), live=False)
    with pytest.raises(InvalidIdError, match="not a valid QEMU id"):
        bad.new_device(disk("/dev/a", 8, 0))
    assert bad.allocator.snapshot() == {}


# --- hot plug and roll-back --------------------------------------------------------------------------
def test_a_rejected_hot_plug_is_rolled_back_and_add_device_drops_the_reference(make: Make) -> None:
    manager, qemu = make(DiskPlugin(device_add_extra={"bus": "nope"}))
    with pytest.raises(HotplugError, match=r"Bus 'nope' not found.*rolled back: blockdev-del"):
        manager.add_device(disk("/dev/a", 8, 0))
    assert manager.devices() == [] and manager.allocator.snapshot() == {}
    assert qemu.leftovers()["nodes"] == []


def test_an_attach_that_leaves_debris_is_recorded_and_cleaned_up_by_the_next_attach(make: Make) -> None:
    manager, qemu = make()
    record = manager.new_device(disk("/dev/a", 8, 0))
    qemu.fail("device_add", "Bus 'rp0' not found")
    qemu.fail("blockdev-del", "Node is busy")
    with pytest.raises(HotplugError, match="roll-back incomplete"):
        manager.attach(record.id)
    failed = manager.get(record.id)
    assert failed.attach_count == 0 and failed.attachment is not None
    assert failed.attachment.phase is AttachPhase.FAILED and failed.attachment.leftovers
    assert "may be left in the VM: blockdev-del" in describe_status(failed)
    assert qemu.leftovers()["nodes"] == [record.id + "-node"]
    attached = manager.attach(record.id)  # cleans up the old node, then plugs
    assert attached.attachment is not None and attached.attachment.phase is AttachPhase.ATTACHED
    assert qemu.leftovers()["nodes"] == [record.id + "-node"] and qemu.leftovers()["devices"] == [record.id]


def test_a_lost_connection_mid_attach_is_recorded_as_uncertain(make: Make, tmp_path: Path) -> None:
    saved = StateFile(tmp_path / "state.json")
    manager, qemu = make(journal=saved.save)
    record = manager.new_device(disk("/dev/a", 8, 0))
    qemu.disconnect_on("device_add")  # blockdev-add went through; QEMU dies before the device_add
    with pytest.raises(HotplugError, match="QEMU's state is unknown"):
        manager.attach(record.id)
    on_disk = saved.load().device(record.id)
    assert on_disk is not None and on_disk.attachment is not None
    assert on_disk.attachment.phase is AttachPhase.FAILED and on_disk.attachment.steps_done == 1
    assert "attach failed" in describe_status(on_disk)
    with pytest.raises(DeviceAttachedError, match="connect to the VM to clean them up"):
        make(live=False, state=saved.load())[0].remove(record.id)


def test_the_attaching_phase_is_saved_before_the_vm_is_touched(make: Make, tmp_path: Path) -> None:
    saved = StateFile(tmp_path / "state.json")
    seen: list[tuple[str, int]] = []

    class Watching(QmpHotPlugger):
        def plug(self, commands: Any, *, device: str, progress: Any) -> None:
            def spy(n: int) -> None:
                progress(n)
                record = saved.load().devices[0]
                assert record.attachment is not None
                seen.append((record.attachment.phase.value, record.attachment.steps_done))

            record = saved.load().devices[0]
            assert record.attachment is not None
            seen.append((record.attachment.phase.value, record.attachment.steps_done))
            super().plug(commands, device=device, progress=spy)

    manager, qemu = make(journal=saved.save)
    manager.hotplugger = Watching(qemu)
    manager.add_device(disk("/dev/a", 8, 0))
    assert seen == [("attaching", 0), ("attaching", 1), ("attaching", 2)]
    assert saved.load().devices[0].attachment.phase is AttachPhase.ATTACHED  # type: ignore[union-attr]


def test_an_attach_interrupted_by_a_dead_process_is_cleaned_up_first(make: Make, tmp_path: Path, dead_pid: int) -> None:
    manager, qemu = make()
    record = manager.add_device(disk("/dev/a", 8, 0))
    assert record.attachment is not None
    dead = dead_pid
    interrupted = attrs.evolve(record, attach_count=0, attachment=attrs.evolve(
        record.attachment, phase=AttachPhase.ATTACHING, steps_done=1, pid=dead))
    state = attrs.evolve(manager.snapshot(), devices=[interrupted])
    assert f"process {dead} is gone" in describe_status(interrupted)
    again = DeviceManager(state=state, host=manager.host, plugins=manager.plugins,
                          hotplugger=QmpHotPlugger(qemu, unplug_timeout=0.01))
    assert again.attach(record.id).attach_count == 1
    deletes = [a for c, a in qemu.log if c == "device_del"]
    assert deletes == [{"id": record.id}]  # the half-plugged device was removed, then plugged again
    assert qemu.leftovers()["devices"] == [record.id]


def test_a_detach_the_guest_does_not_complete_keeps_the_device_attached(make: Make) -> None:
    manager, qemu = make()
    record = manager.add_device(disk("/dev/a", 8, 0))
    qemu.guest_acks = False
    with pytest.raises(HotplugError, match="no DEVICE_DELETED"):
        manager.detach(record.id)
    stuck = manager.get(record.id)
    assert stuck.attach_count == 1 and stuck.attachment is not None
    assert stuck.attachment.phase is AttachPhase.DETACHING and "detach stopped" in describe_status(stuck)
    qemu.ack_pending()
    assert manager.detach(record.id).attachment is None
    assert qemu.leftovers()["nodes"] == []


def test_a_device_rendered_for_cold_plug_only_cannot_be_attached_live(make: Make) -> None:
    manager, qemu = make(DiskPlugin(cold_only=True))
    with pytest.raises(UnsupportedError, match="renders it for cold plug only"):
        manager.add_device(disk("/dev/a", 8, 0))
    assert manager.devices() == [] and qemu.log == []


def test_a_device_that_cannot_be_unplugged_stays_resident(make: Make) -> None:
    manager, qemu = make(DiskPlugin(unpluggable=False))
    record = manager.add_device(disk("/dev/a", 8, 0))
    assert record.attachment is not None and record.attachment.resident
    after = manager.release_device(record.id)
    assert after is not None and after.ref_count == 0 and after.attach_count == 0
    assert "cannot be unplugged" in describe_status(after) and qemu.leftovers()["devices"] == [record.id]
    log = len(qemu.log)
    assert manager.add_device(disk("/dev/a", 8, 0)).attach_count == 1 and len(qemu.log) == log


def test_generic_devices_attach_without_touching_the_vm(make: Make) -> None:
    manager, qemu = make()
    record = manager.add_device(DeviceInfo(container_path="/dev/null", dev_type="c", major=1, minor=3))
    assert record.kind == "generic" and record.attach_count == 1 and qemu.log == []


def test_sandbox_devices_are_attached_by_id_or_kind(make: Make) -> None:
    manager, qemu = make()
    record = manager.add_sandbox_device("beacon", user="c1")
    assert record.id == "beacon0" and record.info is None and record.container_path is None
    assert manager.add_sandbox_device("beacon0", user="c2").ref_count == 2
    assert manager.find_sandbox_device("beacon") == manager.get("beacon0")
    assert qemu.leftovers()["objects"] == ["beacon0"]
    with pytest.raises(DeviceNotFoundError, match=r"not a sandbox device .*offer: beacon0 \(beacon\)"):
        manager.new_sandbox_device("rng")


def test_notes_of_attached_devices_are_seen_by_the_next_rendering(make: Make) -> None:
    manager, _ = make()
    manager.add_device(disk("/dev/a", 8, 0))
    second = manager.add_device(disk("/dev/b", 8, 16))
    assert second.attachment is not None and second.attachment.details["peers"] == 2
    assert second.attachment.notes == {"disk.paths": {"/dev/b": "/dev/sdb"}}


# --- spare ports in plans ---------------------------------------------------------------------------
def test_a_plan_has_at_least_the_root_ports_asked_for_hot_plug(host: HostContext, vmdev_plugins: Any) -> None:
    plugins = vmdev_plugins(extra=[("disks", DiskPlugin())])

    def ports(**options: Any) -> list[str]:
        result = plan(parse_spec(BOOT), SandboxSettings(hotplug=True, options=options), host=host, plugins=plugins)
        assert result.qemu is not None
        return [a.split(",")[1] for a in result.qemu.argv if a.startswith("pcie-root-port")]

    assert ports() == ["id=rp0", "id=rp1"]  # the disk's and the beacon's
    assert ports(hotplug_root_ports=4) == ["id=rp0", "id=rp1", "id=rp2", "id=rp3"]
    assert ports(hotplug_root_ports=1) == ["id=rp0", "id=rp1"]  # at least: never fewer than needed
    for bad, message in (("2", "must be an integer, got '2'"), (-1, "from 0 to 16, got -1"),
                         (17, "from 0 to 16, got 17"), (True, "must be an integer, got True")):
        with pytest.raises(ConfigError, match=message) as exc:
            ports(hotplug_root_ports=bad)
        assert exc.value.field == "hotplug_root_ports"
    with pytest.raises(UnsupportedError, match="machine pc has no PCIe root complex"):
        plan(parse_spec({}), SandboxSettings(machine_type="pc", options={"hotplug_root_ports": 1}), host=host,
             plugins=plugins)


# --- plan_boot ---------------------------------------------------------------------------------------
BOOT = {"linux": {"devices": [{"path": "/dev/xvda", "type": "b", "major": 8, "minor": 0},
                              {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}


@pytest.mark.parametrize("hotplug", [False, True])
def test_plan_boot_plans_what_plan_plans_and_keeps_the_books(
    make: Make, host: HostContext, vmdev_plugins: Any, hotplug: bool
) -> None:
    settings = SandboxSettings(hotplug=hotplug, options={"hotplug_root_ports": 3})
    manager, _ = make(live=False, settings=settings)
    booted = manager.plan_boot(parse_spec(BOOT), user="c1")
    expected = plan(parse_spec(BOOT), settings, host=host, plugins=vmdev_plugins(extra=[("disks", DiskPlugin())]))
    assert booted.to_json() == expected.to_json()
    by_kind = {r.kind: r for r in manager.devices()}
    assert set(by_kind) == {"disk", "generic", "beacon"} and by_kind["generic"].users == ("c1",)
    state = manager.snapshot()
    if hotplug:  # hot-pluggable devices wait for a container to attach them; their ports stay free
        disk_record = by_kind["disk"]
        assert (disk_record.ref_count, disk_record.attach_count, disk_record.attachment) == (0, 0, None)
        assert disk_record.device["index"] == 0  # reserved as planned
        assert [p.id for p in state.ports] == ["rp0", "rp1", "rp2"]
        attached = manager.add_device(disk("/dev/xvda", 8, 0), user="c2")
        assert attached.id == disk_record.id and attached.ref_count == 1 and attached.users == ("c2",)
        assert attached.attachment is not None and attached.attachment.buses == ("rp0",)
        assert manager.release_device(attached.id, user="c2") is None  # the container was its only user
    else:
        assert by_kind["disk"].attachment is not None and by_kind["disk"].attachment.resident
        assert by_kind["disk"].attach_count == 1 and by_kind["disk"].users == ("c1",)
        assert "cold-plugged at boot" in describe_status(by_kind["disk"])
        assert [p.id for p in state.ports] == ["rp0", "rp1", "rp2"]  # the beacon plugs cold: all spare
        late = manager.add_device(disk("/dev/xvdb", 8, 16))
        assert late.attachment is not None and late.attachment.details["index"] == 1  # 0 is the boot disk's
    assert describe_status(manager.get(by_kind["generic"].id)) == "stays in the container (nothing in the VM)"
    with pytest.raises(Exception, match="has devices already"):
        manager.plan_boot(parse_spec(BOOT))


def test_plan_boot_refuses_one_disk_at_two_paths_as_plan_does_before_taking_a_reference(
    make: Make, host: HostContext, vmdev_plugins: Any
) -> None:
    twice = parse_spec({"linux": {"devices": [*BOOT["linux"]["devices"],
                                              {"path": "/dev/xvdz", "type": "b", "major": 8, "minor": 0},
                                              {"path": "/dev/null2", "type": "c", "major": 1, "minor": 3}]}})
    manager, _ = make(live=False)
    with pytest.raises(ConfigError) as booted:
        manager.plan_boot(twice, user="c1")
    with pytest.raises(ConfigError) as planned:
        plan(twice, SandboxSettings(), host=host, plugins=vmdev_plugins(extra=[("disks", DiskPlugin())]))
    assert str(booted.value) == str(planned.value) == (
        '/dev/xvdz: path: is the same device (block 8:0) as "/dev/xvda": a plan attaches a device to the VM '
        "once; name it once")
    assert [(r.key, r.ref_count) for r in manager.devices()] == [("block 8:0", 1), ("char 1:3", 1)]  # no 2nd ref


# --- persistence -------------------------------------------------------------------------------------
def test_a_saved_sandbox_continues_where_it_stopped(make: Make, tmp_path: Path) -> None:
    manager, qemu = make()
    a = manager.add_device(disk("/dev/a", 8, 0), user="c1")
    b = manager.add_device(disk("/dev/b", 8, 16), user="c1")
    manager.release_device(a.id, user="c1")
    manager.save(tmp_path / "state.json")
    loaded = DeviceManager.load(tmp_path / "state.json", host=manager.host, plugins=manager.plugins,
                               hotplugger=QmpHotPlugger(qemu, unplug_timeout=0.01))
    assert loaded.snapshot() == manager.snapshot()
    c = loaded.add_device(disk("/dev/c", 8, 32))  # rebuilt from the recorded request
    assert c.attachment is not None and c.attachment.details["index"] == 0  # a's index, freed before the save
    assert loaded.release_device(b.id, user="c1") is None
    assert qemu.leftovers()["devices"] == [c.id]


def test_a_saved_sandbox_keeps_its_settings(make: Make) -> None:
    state = SandboxState(settings=SandboxSettings(machine_type="q35"))
    with pytest.raises(ConfigError, match="keeps the settings it was created with"):
        DeviceManager(SandboxSettings(machine_type="pc"), state=state)


def test_a_saved_device_is_rebuilt_from_its_saved_form_without_probing_the_host(
    make: Make, fake_host: FakeHost, tmp_path: Path
) -> None:
    plugin = DiskPlugin()
    manager, qemu = make(plugin)
    record = manager.new_device(disk("/dev/xvdb", 8, 16), user="c1")
    manager.save(tmp_path / "state.json")
    fake_host.block_device(8, 16, "sdx")  # resolving 8:16 again would now give another host path
    loaded, _ = make(plugin, state=StateFile(tmp_path / "state.json").load())
    loaded.hotplugger = QmpHotPlugger(qemu, unplug_timeout=0.01)
    attached = loaded.attach(record.id)
    assert (plugin.built, plugin.rebuilt) == (1, 1)  # built once, then rebuilt from the saved form
    assert attached.host_path == "/dev/sdb" and qemu.leftovers()["devices"] == [record.id]


def test_a_device_rebuilt_under_another_id_after_a_load_is_an_error(make: Make) -> None:
    manager, _ = make(live=False)
    record = manager.new_device(disk("/dev/a", 8, 0))
    changed, _ = make(DiskPlugin(fixed_id="disk-other"), live=False, state=manager.snapshot())
    with pytest.raises(Exception, match="rebuilds the saved device as 'disk-other', not as the recorded"):
        changed.attach(record.id)


def test_a_family_without_device_from_state_cannot_attach_a_saved_device(make: Make) -> None:
    manager, _ = make(live=False)
    record = manager.new_device(disk("/dev/a", 8, 0))
    again, _ = make(DiskPlugin(rebuilds=False), live=False, state=manager.snapshot())
    with pytest.raises(PluginError, match=r"no plugin rebuilds saved disk devices .*'disks'") as exc:
        again.attach(record.id)
    assert exc.value.device == "/dev/a"


# --- host drift ----------------------------------------------------------------------------------------
def test_the_host_facts_of_a_device_are_recorded_when_it_is_built(make: Make) -> None:
    manager, _ = make(live=False)
    record = manager.new_device(disk("/dev/xvdb", 8, 16))
    assert record.facts == {"node.type": "block", "node.rdev": "8:16", "disk.serial": ""}
    assert manager.host_changes(record.id) == []


def test_attaching_a_device_whose_host_node_changed_fails_naming_the_fact(
    make: Make, fake_host: FakeHost
) -> None:
    manager, qemu = make()
    record = manager.add_device(disk("/dev/xvdb", 8, 16), user="c1")
    saved = manager.snapshot()
    fake_host.fake_stat(str(fake_host.dev / "sdb"), mode=stat.S_IFBLK | 0o660, rdev=(8, 99))  # another disk
    loaded, _ = make(state=saved)
    loaded.hotplugger = QmpHotPlugger(qemu, unplug_timeout=0.01)
    assert [c.to_json() for c in loaded.host_changes(record.id)] == [
        {"fact": "node.rdev", "recorded": "8:16", "now": "8:99"}]
    with pytest.raises(HostChangedError) as exc:  # (a new request for it would find the node's numbers changed)
        loaded.attach(record.id)
    assert str(exc.value).startswith(
        "/dev/xvdb: node.rdev: the host changed since this device was created: node.rdev was '8:16', now '8:99'")
    assert "\n" not in str(exc.value)
    assert (loaded.get(record.id).attach_count, loaded.get(record.id).users) == (1, ("c1",))  # unchanged
    assert loaded.release_device(record.id, user="c1") is None  # leaving is always possible
    assert qemu.leftovers()["devices"] == []


def test_a_family_fact_that_changed_is_reported_and_refuses_the_attach(make: Make, fake_host: FakeHost) -> None:
    manager, _ = make(live=False)
    record = manager.new_device(disk("/dev/xvdb", 8, 16))
    fake_host.write("class/disk/sdb/serial", "SWAPPED\n")
    changed = manager.host_changes(record.id)
    assert [c.describe() for c in changed] == ["disk.serial was '', now 'SWAPPED'"]
    with pytest.raises(HostChangedError) as exc:
        manager.attach(record.id)
    assert (exc.value.device, exc.value.field) == ("/dev/xvdb", "disk.serial")


# --- books only: a backend without a live driver -------------------------------------------------------
def test_a_backend_without_a_live_driver_keeps_the_books_and_its_steps_as_json(make: Make) -> None:
    manager, _ = make(live=False, settings=SandboxSettings(hypervisor="cloud-hypervisor"))
    record = manager.add_device(disk("/dev/xvdb", 8, 16))
    assert record.attach_count == 1 and record.attachment is not None
    assert record.attachment.hotplug == ({"method": "PUT", "path": "/api/v1/vm.add-disk", "body": {"id": record.id}},)
    assert record.attachment.unplug == (
        {"method": "PUT", "path": "/api/v1/vm.remove-device", "body": {"id": record.id}},)
    assert manager.release_device(record.id) is None


# --- shared hot-plug objects ---------------------------------------------------------------------------
@attrs.frozen
class Accel:
    """A passed-through function behind the IOMMUFD backend, as vmdev-vfio hot-plugs it."""

    kind: ClassVar[str] = "accel"
    id: str
    container_path: str


@attrs.define
class IommufdPlugin:
    """Renders like vmdev-vfio: every device refers to ``iommufd0``; only the first device of the
    notes creates it (and removes it last) unless ``every_device`` renders both for each."""

    every_device: bool = False

    @hookimpl
    def build_device(self, info: DeviceInfo) -> Device | None:
        if info.dev_type != "c" or info.major != 250:
            return None
        return Accel(id=make_id("vfio", info.container_path), container_path=info.container_path)

    @hookimpl
    def device_from_state(self, kind: str, data: Mapping[str, Any]) -> Device | None:
        return from_json(Accel, data) if kind == "accel" else None

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget, hotplug: bool) -> QemuAttach | None:
        if not isinstance(device, Accel):
            return None
        bus = target.hotplug_bus(device.container_path)  # type: ignore[attr-defined]
        adds = [QmpCommand("device_add", {"driver": "vfio-pci", "id": device.id, "iommufd": "iommufd0",
                                          "bus": bus})]
        dels = [QmpCommand("device_del", {"id": device.id})]
        first = len(target.record("iommufd", device.container_path, "")) == 1
        if first or self.every_device:
            adds.insert(0, QmpCommand("object-add", {"qom-type": "iommufd", "id": "iommufd0"}))
            dels.append(QmpCommand("object-del", {"id": "iommufd0"}))
        return QemuAttach(hotplug=adds, unplug=dels, hotplugged=True)


def accel(number: int) -> DeviceInfo:
    return DeviceInfo(container_path=f"/dev/vfio/devices/vfio{number}", dev_type="c", major=250, minor=number)


@pytest.fixture
def iommufd_sandbox(
    fake_host: FakeHost, vmdev_plugins: Any, tmp_path: Path
) -> Callable[[IommufdPlugin], tuple[Callable[[], DeviceManager], FakeQemu]]:
    """Each call of the returned factory is a new manager on the saved state (as each CLI command is)."""

    def make_sandbox(plugin: IommufdPlugin) -> tuple[Callable[[], DeviceManager], FakeQemu]:
        for number in (0, 1):
            fake_host.char_device(250, number, f"vfio/devices/vfio{number}")
        qemu = FakeQemu().add_port("rp0").add_port("rp1")
        state = StateFile(tmp_path / "state.json")
        plugins = vmdev_plugins(extra=[("accel", plugin)])
        host = fake_host.context()

        def open_sandbox() -> DeviceManager:
            saved = state.load_or(SandboxState(settings=SandboxSettings()))
            return DeviceManager(state=saved, host=host, plugins=plugins, journal=state.save,
                                 hotplugger=QmpHotPlugger(qemu, unplug_timeout=0.01))

        return open_sandbox, qemu

    return make_sandbox


def iommufd_ops(qemu: FakeQemu) -> list[str]:
    return [f"{c} {a.get('id')}" for c, a in qemu.log if c in ("object-add", "object-del")]


@pytest.mark.parametrize("every_device", [False, True], ids=["first-device-creates", "every-device-creates"])
@pytest.mark.parametrize("first_out", ["a", "b"])
def test_a_shared_iommufd_object_stays_until_its_last_user_is_detached(
    iommufd_sandbox: Any, every_device: bool, first_out: str
) -> None:
    open_sandbox, qemu = iommufd_sandbox(IommufdPlugin(every_device=every_device))
    a = open_sandbox().add_device(accel(0), user="c1")
    b = open_sandbox().add_device(accel(1), user="c2")
    assert iommufd_ops(qemu) == ["object-add iommufd0"]  # created once, with its first user
    assert b.attachment is not None and b.attachment.shared == ("iommufd0",)
    first, last = (a, b) if first_out == "a" else (b, a)
    assert open_sandbox().release_device(first.id, user=first.users[0]) is None
    assert "iommufd0" in qemu.objects and qemu.leftovers()["devices"] == [last.id]  # its user is still there
    assert open_sandbox().release_device(last.id, user=last.users[0]) is None
    assert iommufd_ops(qemu) == ["object-add iommufd0", "object-del iommufd0"]  # removed with its last user
    assert qemu.leftovers() == {"devices": [], "objects": [], "nodes": [], "chardevs": [], "netdevs": []}
    assert open_sandbox().devices() == []


def test_the_removal_of_a_shared_object_is_handed_to_a_remaining_user(iommufd_sandbox: Any) -> None:
    open_sandbox, _ = iommufd_sandbox(IommufdPlugin())
    a = open_sandbox().add_device(accel(0))
    b = open_sandbox().add_device(accel(1))
    assert b.attachment is not None and b.attachment.unplug == ({"execute": "device_del", "arguments": {"id": b.id}},)
    open_sandbox().release_device(a.id)
    heir = open_sandbox().get(b.id)
    assert heir.attachment is not None and heir.attachment.unplug == (
        {"execute": "device_del", "arguments": {"id": b.id}},
        {"execute": "object-del", "arguments": {"id": "iommufd0"}},
    )


# --- no lock across VM I/O -----------------------------------------------------------------------------
class SlowGuest(FakeQemu):
    """A guest that releases unplugged devices only when ``gate`` opens."""

    gate: threading.Event

    def wait_event(self, name: str, match: Mapping[str, Any], *, after: int, timeout: float) -> Mapping[str, Any]:
        assert self.gate.wait(10), "the test never opened the gate"
        return super().wait_event(name, match, after=after, timeout=timeout)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_detach_waiting_for_the_guest_holds_up_only_that_device(host: HostContext, vmdev_plugins: Any) -> None:
    qemu = SlowGuest().add_port("rp0").add_port("rp1").add_port("rp2")
    assert isinstance(qemu, SlowGuest)
    qemu.gate = threading.Event()
    manager = DeviceManager(SandboxSettings(), host=host, plugins=vmdev_plugins(extra=[("disks", DiskPlugin())]),
                            hotplugger=QmpHotPlugger(qemu, unplug_timeout=30))
    slow = manager.add_device(disk("/dev/a", 8, 0))
    detaching, detached = in_thread(lambda: manager.detach(slow.id))
    while ("device_del", {"id": slow.id}) not in qemu.log:  # the unplug waits for the guest now
        assert detaching.is_alive()
        threading.Event().wait(0.005)

    def meanwhile() -> list[int]:
        other = manager.add_device(disk("/dev/b", 8, 16))  # a whole hot plug of another device
        counts = [manager.attach(other.id).attach_count, manager.detach(other.id).attach_count]
        manager.new_device(disk("/dev/c", 8, 32))
        assert manager.get(slow.id).attachment.phase is AttachPhase.DETACHING  # type: ignore[union-attr]
        return [*counts, len(manager.snapshot().devices)]

    worker, result = in_thread(meanwhile)
    worker.join(5)
    assert not worker.is_alive(), "the sandbox was blocked while the guest held a device"
    assert result == [[2, 1, 3]]
    again, reattached = in_thread(lambda: manager.attach(slow.id))  # the same device waits for the detach
    again.join(0.2)
    assert again.is_alive() and detaching.is_alive()
    qemu.gate.set()
    detaching.join(5)
    again.join(5)
    assert detached[0].attach_count == 0 and detached[0].attachment is None
    assert reattached[0].attach_count == 1 and reattached[0].attachment.phase is AttachPhase.ATTACHED
    assert [a["id"] for c, a in qemu.log if c == "device_add"].count(slow.id) == 2  # plugged again after


def test_every_change_is_journaled(make: Make) -> None:
    states: list[SandboxState] = []
    manager, _ = make(journal=states.append)
    record = manager.add_device(disk("/dev/a", 8, 0))
    manager.release_device(record.id)
    phases = [s.devices[0].attachment.phase.value if s.devices and s.devices[0].attachment else None for s in states]
    assert phases[0] is None and "attaching" in phases and "attached" in phases and "detaching" in phases
    assert states[-1].devices == ()
