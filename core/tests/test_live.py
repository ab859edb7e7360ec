"""Live hot plug: the backend-neutral protocol's helpers, and QEMU's driver over QMP (order, roll-back
derived from the commands, unplug waits, port discovery, what each step creates and refers to),
against the fake QEMU, which tracks every reference."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vmdev import live
from vmdev.backends.clh import ClhAttach
from vmdev.errors import UnsupportedError
from vmdev.fakeqmp import FakeQemu, FakeQmpServer
from vmdev.live import DetachTimeoutError, HotplugError, LiveSteps, StepObjects, describe_step, rendered_steps
from vmdev.qemu import MemoryNeeds, QemuAttach, QmpCommand
from vmdev.qmp import (
    MAX_EVENTS,
    DeferredSession,
    QmpCommandError,
    QmpConnectionError,
    QmpHotPlugger,
    QmpSession,
    QmpTimeoutError,
    describe,
    step_objects,
    undo_command,
    undo_steps,
)
from vmdev.state import PortRecord
from vmdev.targets import ApiRequest

BLOCKDEV = QmpCommand("blockdev-add", {"driver": "raw", "node-name": "drive-a", "file": {"driver": "file"}})
DISK = QmpCommand("device_add", {"driver": "virtio-blk-pci", "id": "virtio-drive-a", "drive": "drive-a", "bus": "rp0"})
DISK_UNPLUG = (QmpCommand("device_del", {"id": "virtio-drive-a"}), QmpCommand("blockdev-del", {"node-name": "drive-a"}))
RNG_OBJECT = QmpCommand("object-add", {"qom-type": "rng-random", "id": "rng0", "filename": "/dev/urandom"})
RNG_DEVICE = QmpCommand("device_add", {"driver": "virtio-rng-pci", "id": "virtio-rng0", "rng": "rng0", "bus": "rp1"})


def vm() -> FakeQemu:
    return FakeQemu().add_port("rp0").add_port("rp1")


def plug(hot: QmpHotPlugger, *commands: QmpCommand) -> list[int]:
    steps: list[int] = []
    hot.plug(commands, device="/dev/vdb", progress=steps.append)
    return steps


# --- undo derivation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "undo"),
    [
        (RNG_OBJECT, QmpCommand("object-del", {"id": "rng0"})),
        (BLOCKDEV, QmpCommand("blockdev-del", {"node-name": "drive-a"})),
        (QmpCommand("chardev-add", {"id": "chr0", "backend": {}}), QmpCommand("chardev-remove", {"id": "chr0"})),
        (QmpCommand("netdev_add", {"type": "vhost-user", "id": "n0"}), QmpCommand("netdev_del", {"id": "n0"})),
        (DISK, QmpCommand("device_del", {"id": "virtio-drive-a"})),
        (QmpCommand("getfd", {"fdname": "fd0"}), QmpCommand("closefd", {"fdname": "fd0"})),
    ],
)
def test_each_creating_command_has_its_undo(command: QmpCommand, undo: QmpCommand) -> None:
    assert undo_command(command) == undo


def test_commands_that_name_nothing_have_no_undo() -> None:
    assert undo_command(QmpCommand("device_add", {"driver": "virtio-rng-pci"})) is None  # no id
    assert undo_command(QmpCommand("qom-set", {"path": "/x", "property": "p", "value": 1})) is None
    assert undo_steps([RNG_OBJECT, QmpCommand("qom-set", {}), RNG_DEVICE]) == (
        QmpCommand("device_del", {"id": "virtio-rng0"}),
        QmpCommand("object-del", {"id": "rng0"}),
    )


def test_describe_names_what_the_command_is_about() -> None:
    assert describe(DISK) == "device_add (driver=virtio-blk-pci id=virtio-drive-a bus=rp0)"
    assert describe(QmpCommand("query-status")) == "query-status"


# --- plug ----------------------------------------------------------------------------------------------
def test_plug_runs_the_steps_in_order_and_reports_progress() -> None:
    qemu = vm()
    assert plug(QmpHotPlugger(qemu), BLOCKDEV, DISK) == [1, 2]
    assert [c for c, _ in qemu.log] == ["blockdev-add", "device_add"]
    assert qemu.devices["virtio-drive-a"] == ("virtio-blk-pci", "rp0") and "drive-a" in qemu.nodes


def test_a_device_add_qemu_rejects_leaves_no_backend_behind() -> None:
    qemu = vm()
    bad = QmpCommand("device_add", {**DISK.arguments, "bus": "nope"})
    with pytest.raises(HotplugError) as exc:
        plug(QmpHotPlugger(qemu), BLOCKDEV, bad)
    message = str(exc.value)
    assert "step 2 of 2, device_add (driver=virtio-blk-pci id=virtio-drive-a bus=nope), failed" in message
    assert "QEMU: Bus 'nope' not found (GenericError)" in message
    assert "rolled back: blockdev-del (node-name=drive-a)" in message
    assert (exc.value.device, exc.value.field, exc.value.steps_done) == ("/dev/vdb", "hotplug", 1)
    assert exc.value.leftovers == () and not exc.value.uncertain
    assert qemu.leftovers() == {"devices": [], "objects": [], "nodes": [], "chardevs": [], "netdevs": []}
    assert [c for c, _ in qemu.log if not c.startswith(("query", "qom"))] == [
        "blockdev-add", "device_add", "blockdev-del"]


def test_a_failed_later_step_unplugs_a_device_already_added_and_waits_for_the_guest() -> None:
    qemu = vm()
    qemu.fail("netdev_add", "Invalid parameter 'x'")
    steps = [RNG_OBJECT, RNG_DEVICE, QmpCommand("netdev_add", {"type": "tap", "id": "n0"})]
    with pytest.raises(HotplugError, match=r"step 3 of 3.*rolled back: device_del .*virtio-rng0.*object-del"):
        plug(QmpHotPlugger(qemu), *steps)
    assert qemu.leftovers()["devices"] == [] and qemu.leftovers()["objects"] == []
    deleted = [e for e in qemu.events if e["data"].get("device") == "virtio-rng0"]
    assert len(deleted) == 1  # the roll-back waited for the guest's DEVICE_DELETED before object-del


def test_a_sequence_that_could_not_be_undone_is_refused_before_anything_runs() -> None:
    qemu = vm()
    steps = [QmpCommand("qom-set", {"path": "/machine", "property": "x", "value": 1}), RNG_DEVICE]
    with pytest.raises(UnsupportedError, match=r"qom-set cannot be undone") as exc:
        plug(QmpHotPlugger(qemu), *steps)
    assert exc.value.field == "hotplug" and qemu.log == []


def test_a_connection_lost_mid_attach_is_uncertain_and_lists_what_may_be_left() -> None:
    qemu = vm()
    qemu.disconnect_after(1)  # blockdev-add goes through, then QEMU is gone
    with pytest.raises(HotplugError, match="QEMU's state is unknown and nothing was rolled back") as exc:
        plug(QmpHotPlugger(qemu), BLOCKDEV, DISK)
    assert exc.value.uncertain and exc.value.steps_done == 1
    assert exc.value.leftovers == ({"execute": "device_del", "arguments": {"id": "virtio-drive-a"}},
                                   {"execute": "blockdev-del", "arguments": {"node-name": "drive-a"}})


def test_an_incomplete_roll_back_says_what_is_left() -> None:
    qemu = vm()
    qemu.fail("device_add", "Bus 'nope' not found")
    qemu.fail("blockdev-del", "Node 'drive-a' is busy")
    with pytest.raises(HotplugError, match=r"roll-back incomplete, left in the VM: blockdev-del .*busy") as exc:
        plug(QmpHotPlugger(qemu), BLOCKDEV, DISK)
    assert exc.value.leftovers == ({"execute": "blockdev-del", "arguments": {"node-name": "drive-a"}},)
    assert qemu.leftovers()["nodes"] == ["drive-a"]


def test_cleanup_removes_only_what_is_still_there() -> None:
    qemu = vm()
    plug(QmpHotPlugger(qemu), BLOCKDEV)  # an attach was interrupted after its first step
    QmpHotPlugger(qemu).cleanup([BLOCKDEV, DISK], device="/dev/vdb")  # the device_add never ran
    assert qemu.leftovers()["nodes"] == []
    assert ("device_del", {"id": "virtio-drive-a"}) not in qemu.log  # absent: not even tried


# --- unplug --------------------------------------------------------------------------------------------
def test_unplug_waits_for_device_deleted_before_removing_the_backend() -> None:
    qemu = vm()
    hot = QmpHotPlugger(qemu)
    plug(hot, BLOCKDEV, DISK)
    steps: list[int] = []
    hot.unplug(DISK_UNPLUG, device="/dev/vdb", progress=steps.append)
    assert steps == [1, 2] and qemu.leftovers()["nodes"] == [] and qemu.leftovers()["devices"] == []


def test_a_guest_that_does_not_release_the_device_stops_the_unplug_before_the_backend() -> None:
    qemu = vm()
    hot = QmpHotPlugger(qemu, unplug_timeout=0.01)
    plug(hot, BLOCKDEV, DISK)
    qemu.guest_acks = False
    with pytest.raises(DetachTimeoutError, match=r"no DEVICE_DELETED within 0.01 s; the device stays") as exc:
        hot.unplug(DISK_UNPLUG, device="/dev/vdb", progress=lambda _: None)
    assert exc.value.steps_done == 0 and qemu.nodes  # blockdev-del was not attempted
    assert not any(c == "blockdev-del" for c, _ in qemu.log)
    qemu.ack_pending()  # the guest releases it later; a second detach finishes the job
    hot.unplug(DISK_UNPLUG, device="/dev/vdb", progress=lambda _: None)
    assert qemu.leftovers()["nodes"] == []
    assert [c for c, _ in qemu.log].count("device_del") == 1  # gone already: not sent again


@pytest.mark.parametrize("step", [
    {"execute": "human-monitor-command", "arguments": {"command-line": 'migrate "exec:touch /tmp/pwned"'}},
    {"execute": "device_del", "arguments": {"id": "virtio-drive-a", "extra": 1}},
    {"execute": "device_del", "arguments": {"id": 7}},
    {"execute": "device_add", "arguments": {"id": "x", "driver": "virtio-blk-pci"}},
])
def test_an_unplug_step_that_is_not_a_removal_is_refused_before_any_step_runs(step: dict[str, Any]) -> None:
    """Unplug steps come back from the state file: one edited to send another command is refused."""
    qemu = vm()
    hot = QmpHotPlugger(qemu)
    plug(hot, BLOCKDEV, DISK)
    sent = len(qemu.log)
    with pytest.raises(UnsupportedError, match=r"cannot unplug: step .* is not a removal naming one object") as exc:
        hot.unplug([DISK_UNPLUG[0], step], device="/dev/vdb", progress=lambda _: None)
    assert (exc.value.device, exc.value.field) == ("/dev/vdb", "unplug") and "\n" not in str(exc.value)
    assert qemu.log[sent:] == [] and qemu.leftovers()["devices"] == ["virtio-drive-a"]


# --- what the VM has ---------------------------------------------------------------------------------
def test_free_ports_are_the_ports_without_a_device_in_natural_order() -> None:
    qemu = FakeQemu()
    for port in ("rp10", "rp2", "rp0"):
        qemu.add_port(port)
    qemu.add_port("swdp0", "switch-port").add_device("vfio0", "vfio-pci", bus="rp2")
    assert QmpHotPlugger(qemu).free_ports() == [
        PortRecord(id="rp0", kind="root-port"),
        PortRecord(id="rp10", kind="root-port"),
        PortRecord(id="swdp0", kind="switch-port"),
    ]


def test_check_ready_wants_the_boot_time_parts_a_device_needs() -> None:
    qemu = vm()
    hot = QmpHotPlugger(qemu)
    scsi = QemuAttach(hotplugged=True, shared_args={"scsi0": ("-device", "virtio-scsi-pci,id=scsi0")})
    with pytest.raises(UnsupportedError, match=r"needs -device virtio-scsi-pci,id=scsi0 \(scsi0\) from boot"):
        hot.check_ready(scsi, device="/dev/sdb")
    qemu.add_device("scsi0", "virtio-scsi-pci")
    hot.check_ready(scsi, device="/dev/sdb")
    shared = QemuAttach(hotplugged=True, memory=MemoryNeeds(shared=True))
    with pytest.raises(UnsupportedError, match="shared memory backend") as exc:
        hot.check_ready(shared, device="/dev/vhost")
    assert exc.value.field == "memory"
    qemu.add_object("vmdev-ram", "memory-backend-memfd", share=True)
    hot.check_ready(shared, device="/dev/vhost")
    qemu.machine["nvdimm"] = False
    with pytest.raises(UnsupportedError, match=r"needs -machine nvdimm=on from boot, but .* nvdimm=off"):
        hot.check_ready(QemuAttach(hotplugged=True, machine={"nvdimm": True}), device="/pmem")
    with pytest.raises(UnsupportedError, match="QEMU's live driver hot-plugs QEMU renderings, not ClhAttach"):
        hot.check_ready(ClhAttach(hotplugged=True), device="/dev/x")


def test_presence_reports_what_a_hot_plug_created() -> None:
    qemu = vm()
    hot = QmpHotPlugger(qemu)
    plug(hot, BLOCKDEV)
    assert hot.presence([BLOCKDEV, DISK]) == [("blockdev-add drive-a", True), ("device_add virtio-drive-a", False)]


def test_steps_may_be_the_json_the_state_keeps() -> None:
    qemu = vm()
    hot = QmpHotPlugger(qemu)
    hot.plug([BLOCKDEV.to_json(), DISK.to_json()], device="/dev/vdb", progress=lambda _: None)
    assert hot.presence([BLOCKDEV.to_json()]) == [("blockdev-add drive-a", True)]
    hot.unplug([c.to_json() for c in DISK_UNPLUG], device="/dev/vdb", progress=lambda _: None)
    assert qemu.leftovers()["nodes"] == []
    with pytest.raises(UnsupportedError, match="not a QMP command"):
        hot.plug([{"attach": "<disk/>"}], device="/dev/vdb", progress=lambda _: None)


def test_each_step_says_what_it_creates_removes_and_refers_to() -> None:
    assert step_objects(RNG_DEVICE.to_json()) == StepObjects(
        creates="virtio-rng0", refers=frozenset({"virtio-rng-pci", "rng0", "rp1"}),
        undo={"execute": "device_del", "arguments": {"id": "virtio-rng0"}})
    assert step_objects(QmpCommand("object-del", {"id": "iommufd0"})) == StepObjects(removes="iommufd0")
    on_scsi = step_objects(QmpCommand("device_add", {"driver": "scsi-hd", "id": "d0", "bus": "scsi0.0",
                                                     "drive": "drive-a"}))
    assert {"scsi0.0", "scsi0", "drive-a"} <= on_scsi.refers and on_scsi.creates == "d0"
    assert QmpHotPlugger(vm()).step_objects(BLOCKDEV) == step_objects(BLOCKDEV)


# --- the fake QEMU tracks every reference ---------------------------------------------------------------
def test_the_fake_refuses_to_delete_an_object_any_property_refers_to() -> None:
    qemu = vm()
    hot = QmpHotPlugger(qemu)
    cdev = QmpCommand("device_add", {"driver": "vfio-pci", "id": "vfio0", "iommufd": "iommufd0", "bus": "rp0"})
    plug(hot, QmpCommand("object-add", {"qom-type": "iommufd", "id": "iommufd0"}), cdev)
    assert qemu.references[("device", "vfio0")] == {("object", "iommufd0"), ("bus", "rp0")}
    with pytest.raises(QmpCommandError, match="object 'iommufd0' is in use, can not be deleted"):
        qemu.execute("object-del", {"id": "iommufd0"})
    qemu.execute("device_del", {"id": "vfio0"})
    qemu.execute("object-del", {"id": "iommufd0"})
    assert qemu.leftovers()["objects"] == []


@pytest.mark.parametrize(
    ("create", "referrer", "remove", "message"),
    [
        (("chardev-add", {"id": "chr0", "backend": {"type": "socket"}}),
         ("device_add", {"driver": "vhost-user-fs-pci", "id": "fs0", "chardev": "chr0", "bus": "rp0"}),
         ("chardev-remove", {"id": "chr0"}), "Chardev 'chr0' is busy"),
        (("blockdev-add", {"driver": "raw", "node-name": "file0"}),
         ("blockdev-add", {"driver": "qcow2", "node-name": "top0", "file": "file0"}),
         ("blockdev-del", {"node-name": "file0"}), "Node 'file0' is busy: node is used by node top0"),
        (("netdev_add", {"type": "vhost-user", "id": "net0", "chardev": "none"}),
         ("device_add", {"driver": "virtio-net-pci", "id": "nic0", "netdev": "net0", "bus": "rp0"}),
         ("netdev_del", {"id": "net0"}), "Netdev 'net0' is in use by device nic0"),
        (("getfd", {"fdname": "fd0"}),
         ("object-add", {"qom-type": "iommufd", "id": "iommufd0", "fd": "fd0"}),
         ("closefd", {"fdname": "fd0"}), "File descriptor named 'fd0' is in use by object iommufd0"),
    ],
)
def test_the_fake_refuses_to_remove_anything_still_referenced(
    create: tuple[str, dict[str, object]], referrer: tuple[str, dict[str, object]],
    remove: tuple[str, dict[str, object]], message: str,
) -> None:
    qemu = vm()
    qemu.execute(*create)
    qemu.execute(*referrer)
    with pytest.raises(QmpCommandError, match=message):
        qemu.execute(*remove)


def test_the_fake_knows_controller_buses_and_their_devices() -> None:
    qemu = vm()
    qemu.bus_drivers["virtio-scsi-pci"] = (".0",)
    qemu.execute("device_add", {"driver": "virtio-scsi-pci", "id": "scsi0", "bus": "rp0"})
    qemu.execute("blockdev-add", {"driver": "raw", "node-name": "drive-a"})
    qemu.execute("device_add", {"driver": "scsi-hd", "id": "disk0", "bus": "scsi0.0", "drive": "drive-a"})
    with pytest.raises(QmpCommandError, match="Device 'scsi0' has devices on its bus: device disk0"):
        qemu.execute("device_del", {"id": "scsi0"})
    qemu.execute("device_del", {"id": "disk0"})
    qemu.execute("device_del", {"id": "scsi0"})
    assert qemu.leftovers()["devices"] == []


# --- the backend-neutral helpers -----------------------------------------------------------------------
def test_rendered_steps_are_any_backends_hot_plug_steps_as_json() -> None:
    add, remove = ApiRequest("PUT", "/api/v1/vm.add-disk", {"id": "d0"}), ApiRequest("PUT", "/api/v1/vm.remove-device")
    assert rendered_steps(ClhAttach(hotplug=[add], unplug=[remove], hotplugged=True), device="d0") == LiveSteps(
        hotplug=[add.to_json()], unplug=[remove.to_json()])
    assert rendered_steps(QemuAttach(details={"why": "stays in the container"}), device="g0") == LiveSteps()
    for cold in (QemuAttach(args=["-device", "x"]), ClhAttach(vm_config={"disks": [{}]})):
        with pytest.raises(UnsupportedError, match="renders it for cold plug only") as exc:
            rendered_steps(cold, device="/dev/x")
        assert (exc.value.device, exc.value.field) == ("/dev/x", "hotplug")


def test_describe_step_names_the_verb_and_its_object() -> None:
    assert describe_step({"execute": "device_del", "arguments": {"id": "virtio-x"}}) == "device_del virtio-x"
    assert describe_step(ApiRequest("PUT", "/api/v1/vm.remove-device", {"id": "d0"}).to_json()) == (
        "PUT /api/v1/vm.remove-device d0")


def test_qemus_driver_stays_importable_from_vmdev_live() -> None:
    assert live.QmpHotPlugger is QmpHotPlugger and live.QmpSession is QmpSession
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        live.Nope  # noqa: B018


# --- the real QMP client against a fake QEMU on a socket --------------------------------------------
@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "qmp.sock"


def test_session_talks_qmp_and_sees_events(sock: Path) -> None:
    qemu = vm()
    with FakeQmpServer(qemu, sock), QmpSession.connect(str(sock)) as session:
        hot = QmpHotPlugger(session)
        plug(hot, RNG_OBJECT, RNG_DEVICE)
        hot.unplug([QmpCommand("device_del", {"id": "virtio-rng0"}), QmpCommand("object-del", {"id": "rng0"})],
                   device="rng0", progress=lambda _: None)
        assert any(e["event"] == "DEVICE_DELETED" for e in session.events())
    assert qemu.leftovers()["objects"] == [] and ("qmp_capabilities", {}) in qemu.log


def test_session_maps_qemu_errors_and_lost_connections(sock: Path) -> None:
    qemu = vm()
    with FakeQmpServer(qemu, sock) as server, QmpSession.connect(str(sock)) as session:
        with pytest.raises(QmpCommandError) as exc:
            session.execute("device_del", {"id": "nope"})
        assert (exc.value.error_class, exc.value.desc) == ("DeviceNotFound", "Device 'nope' not found")
        with pytest.raises(QmpTimeoutError, match="no DEVICE_DELETED event"):
            session.wait_event("DEVICE_DELETED", {"device": "x"}, after=session.event_mark(), timeout=0.05)
        server.kill()
        with pytest.raises(QmpConnectionError, match="connection to QEMU lost during query-status") as lost:
            session.execute("query-status", timeout=5.0)
        assert lost.value.device == str(sock)


def test_connecting_to_nothing_is_a_clear_error(sock: Path) -> None:
    with pytest.raises(QmpConnectionError, match="cannot connect to QEMU's QMP socket: No such file") as exc:
        QmpSession.connect(str(sock))
    assert (exc.value.device, exc.value.field) == (str(sock), "qmp")


def test_a_deferred_session_connects_on_first_use_once_and_never_after_close(sock: Path) -> None:
    qemu = vm()
    unused = DeferredSession(str(sock))
    unused.close()  # never connected: nothing to close, and no socket is needed
    with FakeQmpServer(qemu, sock):
        session = DeferredSession(str(sock))
        assert qemu.log == []
        hot = QmpHotPlugger(session)
        plug(hot, RNG_OBJECT, RNG_DEVICE)
        assert hot.presence([RNG_OBJECT, RNG_DEVICE]) == [("object-add rng0", True), ("device_add virtio-rng0", True)]
        assert [command for command, _ in qemu.log].count("qmp_capabilities") == 1
        session.close()
        with pytest.raises(QmpConnectionError, match="not connected") as exc:
            session.execute("query-status")
        assert (exc.value.device, exc.value.field) == (str(sock), "qmp")
        with pytest.raises(QmpConnectionError, match="not connected"):
            unused.event_mark()
    assert [command for command, _ in qemu.log].count("qmp_capabilities") == 1


def test_qemu_s_live_driver_answers_the_hot_plug_protocols_through_the_driver_it_makes(sock: Path) -> None:
    """The QEMU backend hands out its QmpHotPlugger only when first asked (the QMP client stays
    unimported for a generic device); the manager's protocol checks and every call still reach it."""
    from vmdev.backend import LiveConnection
    from vmdev.backends.qemu import BACKEND

    assert BACKEND.live is not None
    never_used = BACKEND.live(LiveConnection(options={"qmp": str(sock)}, timeout=0.5))
    never_used.close()  # nothing made, nothing to close: no socket is needed
    driver = BACKEND.live(LiveConnection(options={"qmp": str(sock)}, timeout=5.0))
    assert isinstance(driver, live.ObjectAware)  # what the manager asks before it shares objects
    with FakeQmpServer(vm(), sock):
        assert [port.id for port in driver.free_ports()] == ["rp0", "rp1"]
        driver.close()
        with pytest.raises(QmpConnectionError, match="not connected"):
            driver.free_ports()


def test_threads_asking_qemu_s_live_driver_at_once_share_one_driver_and_one_connection(
    sock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU's QMP socket takes one client: the manager's threads must not each make a driver."""
    from vmdev import qmp
    from vmdev.backend import LiveConnection
    from vmdev.backends.qemu import BACKEND

    class Slow(qmp.QmpHotPlugger):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.05)  # widen the window in which another thread could find no driver yet
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(qmp, "QmpHotPlugger", Slow)
    assert BACKEND.live is not None
    driver = BACKEND.live(LiveConnection(options={"qmp": str(sock)}, timeout=5.0))
    qemu = vm()
    answers: list[int] = []
    with FakeQmpServer(qemu, sock):
        threads = [threading.Thread(target=lambda: answers.append(len(driver.free_ports()))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        driver.close()
    assert answers == [2] * 6
    assert [command for command, _ in qemu.log].count("qmp_capabilities") == 1


def test_a_deferred_session_reports_connection_errors_at_first_use(sock: Path) -> None:
    session = DeferredSession(str(sock), timeout=0.3)
    with pytest.raises(QmpConnectionError, match="cannot connect to QEMU's QMP socket: No such file") as exc:
        session.execute("query-status")
    assert (exc.value.device, exc.value.field) == (str(sock), "qmp")


def test_a_qemu_never_reached_is_an_error_with_nothing_done_and_nothing_uncertain(sock: Path) -> None:
    """A deferred session connects at the first step; failing to is not a step of unknown outcome
    (whose undo steps the manager would keep to clean up), as when vmdev connected first."""
    hot = QmpHotPlugger(DeferredSession(str(sock), timeout=0.3))
    unplug = [QmpCommand("device_del", {"id": "virtio-rng0"}), QmpCommand("object-del", {"id": "rng0"})]
    for run in (lambda: plug(hot, RNG_OBJECT, RNG_DEVICE),
                lambda: hot.unplug(unplug, device="rng0", progress=lambda _: None),
                lambda: hot.cleanup([RNG_OBJECT, RNG_DEVICE], device="rng0")):
        with pytest.raises(live.VmUnreachableError) as exc:  # the manager leaves the device as it was
            run()
        assert (exc.value.steps_done, exc.value.leftovers, exc.value.uncertain) == (0, (), False)
        assert (exc.value.device, exc.value.field) == (str(sock), "qmp")
        assert exc.value.message.startswith("cannot connect to QEMU's QMP socket: No such file")


def test_a_monitor_busy_with_another_client_is_named_as_the_likely_cause(sock: Path) -> None:
    with FakeQmpServer(vm(), sock, greet=False), pytest.raises(
        QmpConnectionError, match=r"did not greet within 0.3 s .*serves one client at a time"
    ):
        QmpSession.connect(str(sock), timeout=0.3)


# --- the QMP wire, as QmpSession reads it (a scripted monitor on a raw socket) ---------------------------
GREETING = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n'


def scripted_monitor(path: Path, script: Any) -> threading.Thread:
    """A monitor that greets, answers qmp_capabilities, then runs ``script(conn, reader)``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            reader = conn.makefile("rb")
            conn.sendall(GREETING)
            hello = json.loads(reader.readline())
            conn.sendall(json.dumps({"return": {}, "id": hello["id"]}).encode() + b"\r\n")
            script(conn, reader)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_answers_are_matched_by_id_and_events_between_them_are_kept(sock: Path) -> None:
    def script(conn: socket.socket, reader: Any) -> None:
        first, second = json.loads(reader.readline()), json.loads(reader.readline())
        conn.sendall(b'{"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n')
        conn.sendall(json.dumps({"return": "second", "id": second["id"]}).encode() + b"\r\n")
        conn.sendall(json.dumps({"return": "first", "id": first["id"]}).encode() + b"\r\n")

    scripted_monitor(sock, script)
    with QmpSession.connect(str(sock)) as session:
        answers: dict[str, Any] = {}
        other = threading.Thread(target=lambda: answers.update(b=session.execute("query-b")))
        ask_first = threading.Thread(target=lambda: answers.update(a=session.execute("query-a")))
        ask_first.start()
        time.sleep(0.1)  # query-a goes out first; its answer comes last
        other.start()
        ask_first.join(5)
        other.join(5)
        assert answers == {"a": "first", "b": "second"}
        assert [e["event"] for e in session.events()] == ["RESUME"]


def test_a_flood_of_events_keeps_the_latest_and_the_awaited_one_is_still_found(sock: Path) -> None:
    """A guest can make QEMU send events unthrottled (a tray opened and closed): the session keeps
    the latest MAX_EVENTS, positions still count every event, and a waiter finds its event."""
    flood = MAX_EVENTS * 2 + 123
    tray = b'{"event": "DEVICE_TRAY_MOVED", "data": {"id": "cd0", "tray-open": true}}\r\n'
    done = threading.Event()

    def script(conn: socket.socket, reader: Any) -> None:
        asked = json.loads(reader.readline())
        conn.sendall(tray * flood)
        conn.sendall(b'{"event": "DEVICE_DELETED", "data": {"device": "virtio-x"}}\r\n')
        conn.sendall(json.dumps({"return": {}, "id": asked["id"]}).encode() + b"\r\n")
        asked = json.loads(reader.readline())
        conn.sendall(b'{"event": "DEVICE_DELETED", "data": {"device": "virtio-y"}}\r\n')
        conn.sendall(json.dumps({"return": {}, "id": asked["id"]}).encode() + b"\r\n")
        done.wait(10)  # the monitor stays until the test is done

    scripted_monitor(sock, script)
    with QmpSession.connect(str(sock)) as session:
        mark = session.event_mark()
        session.execute("device_del", {"id": "virtio-x"}, timeout=10.0)
        found = session.wait_event("DEVICE_DELETED", {"device": "virtio-x"}, after=mark, timeout=5.0)
        assert found["event"] == "DEVICE_DELETED"
        assert session.event_mark() == mark + flood + 1
        kept = session.events()
        assert MAX_EVENTS // 2 <= len(kept) <= MAX_EVENTS and kept[-1] is found
        later = session.event_mark()  # past every event let go
        session.execute("device_del", {"id": "virtio-y"}, timeout=10.0)
        assert session.wait_event("DEVICE_DELETED", {}, after=later, timeout=5.0)["data"]["device"] == "virtio-y"
        with pytest.raises(QmpTimeoutError):
            session.wait_event("DEVICE_DELETED", {}, after=session.event_mark(), timeout=0.05)
    done.set()


@pytest.mark.parametrize(("wire", "expected"), [
    (b"not json\r\n", "connection to QEMU lost during query-status: Expecting value"),
    (b"", "connection to QEMU lost during query-status: QEMU closed the connection"),
])
def test_a_broken_monitor_is_a_lost_connection_in_one_line(sock: Path, wire: bytes, expected: str) -> None:
    def script(conn: socket.socket, reader: Any) -> None:
        reader.readline()
        conn.sendall(wire)

    scripted_monitor(sock, script)
    with QmpSession.connect(str(sock)) as session, pytest.raises(QmpConnectionError) as exc:
        session.execute("query-status", timeout=5.0)
    assert str(exc.value).startswith(f"{sock}: qmp: {expected}") and "\n" not in str(exc.value)


def test_a_command_without_an_answer_times_out_naming_it(sock: Path) -> None:
    done = threading.Event()
    scripted_monitor(sock, lambda conn, reader: done.wait(5))
    with QmpSession.connect(str(sock)) as session, pytest.raises(
        QmpConnectionError, match=r"QEMU gave no answer to query-status within 0\.2 s"
    ):
        session.execute("query-status", timeout=0.2)
    done.set()


def test_a_socket_that_is_no_monitor_is_refused_at_the_greeting(sock: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            conn.sendall(b'{"hello": "I am not QEMU"}\n')
            conn.recv(1)

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(QmpConnectionError, match="it sent no QMP greeting"):
        QmpSession.connect(str(sock), timeout=2.0)
