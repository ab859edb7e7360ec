"""Many threads attaching, detaching, referencing and removing on one manager keep exact counts."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import pytest

from vmdev import hookimpl
from vmdev.fakeqmp import FakeQemu
from vmdev.live import QmpHotPlugger
from vmdev.manager import DeviceManager
from vmdev.models import Device, DeviceInfo
from vmdev.qemu import QemuAttach, QmpCommand, make_id
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget
from vmdev.testing import FakeHost

THREADS = 8
ROUNDS = 1000


@attrs.frozen
class Disk:
    kind: ClassVar[str] = "disk"
    id: str
    container_path: str


class DiskPlugin:
    @hookimpl
    def build_device(self, info: DeviceInfo) -> Device | None:
        return Disk(id=make_id("disk", info.container_path), container_path=info.container_path) \
            if info.dev_type == "b" else None

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget) -> QemuAttach | None:
        if not isinstance(device, Disk):
            return None
        bus = target.hotplug_bus(device.container_path)  # type: ignore[attr-defined]
        node = device.id + "-node"
        return QemuAttach(
            hotplug=[QmpCommand("blockdev-add", {"node-name": node}),
                     QmpCommand("device_add", {"driver": "virtio-blk-pci", "id": device.id, "drive": node,
                                               "bus": bus})],
            unplug=[QmpCommand("device_del", {"id": device.id}), QmpCommand("blockdev-del", {"node-name": node})],
            hotplugged=True,
        )


@pytest.fixture(autouse=True)
def busy_switching() -> Iterator[None]:
    """Let the interpreter switch threads very often, so that races have a chance to show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def run_threads(work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def body(number: int) -> None:
        try:
            barrier.wait()
            work(number)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]


@pytest.fixture
def setup(fake_host: FakeHost, vmdev_plugins: Any) -> tuple[DeviceManager, FakeQemu]:
    fake_host.block_device(8, 0, "sda")
    fake_host.block_device(8, 16, "sdb")
    qemu = FakeQemu().add_port("rp0").add_port("rp1")
    manager = DeviceManager(SandboxSettings(), host=fake_host.context(),
                            plugins=vmdev_plugins(extra=[("disks", DiskPlugin())]), hotplugger=QmpHotPlugger(qemu))
    return manager, qemu


def test_attach_detach_from_many_threads_keeps_exact_counts(setup: tuple[DeviceManager, FakeQemu]) -> None:
    manager, qemu = setup
    shared = manager.new_device(DeviceInfo(container_path="/dev/a", dev_type="b", major=8, minor=0))
    steady = manager.new_device(DeviceInfo(container_path="/dev/b", dev_type="b", major=8, minor=16))

    def work(_: int) -> None:
        for n in range(ROUNDS):
            manager.attach(shared.id)  # in and out: the device comes and goes with the count
            manager.detach(shared.id)
            manager.attach(steady.id)  # two in, one out every other round: never back to 0
            if n % 2:
                manager.detach(steady.id)

    run_threads(work)
    assert manager.get(shared.id).attach_count == 0 and manager.get(shared.id).attachment is None
    assert manager.get(steady.id).attach_count == THREADS * ROUNDS // 2
    adds = [a["id"] for c, a in qemu.log if c == "device_add"]
    dels = [a["id"] for c, a in qemu.log if c == "device_del"]
    assert adds.count(steady.id) == 1 and steady.id not in dels  # plugged once, never unplugged
    assert adds.count(shared.id) == dels.count(shared.id) >= 1  # every plug of it was undone
    assert qemu.leftovers()["devices"] == [steady.id] and qemu.leftovers()["nodes"] == [steady.id + "-node"]


def test_references_from_many_threads_are_exact(setup: tuple[DeviceManager, FakeQemu]) -> None:
    manager, qemu = setup
    info = DeviceInfo(container_path="/dev/a", dev_type="b", major=8, minor=0)
    ids: set[str] = set()

    def take(_: int) -> None:
        for _round in range(ROUNDS):
            ids.add(manager.new_device(info).id)

    run_threads(take)
    (device_id,) = ids
    assert manager.get(device_id).ref_count == THREADS * ROUNDS

    def drop(_: int) -> None:
        for _round in range(ROUNDS):
            manager.remove(device_id)

    run_threads(drop)
    assert manager.devices() == [] and manager.allocator.snapshot() == {} and qemu.log == []
