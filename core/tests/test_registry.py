"""The registry's indexes answer as a walk over every device would, whatever the changes were."""

from __future__ import annotations

import random

from vmdev.live import StepObjects
from vmdev.models import DeviceInfo
from vmdev.registry import Registry
from vmdev.settings import SandboxSettings
from vmdev.sharing import Removal, Sharing, SharingIndex
from vmdev.state import Attachment, AttachPhase, DeviceRecord, PortRecord, SandboxState, Step


def walked_seed(books: Registry, besides: str) -> dict[str, dict[str, str]]:
    """The render notes of the devices in the VM, merged in creation order (the definition)."""
    seed: dict[str, dict[str, str]] = {}
    for record in books.in_vm(besides=besides):
        assert record.attachment is not None
        for key, inner in record.attachment.notes.items():
            seed.setdefault(key, {}).update(inner)
    return seed


def random_record(rng: random.Random, n: int) -> DeviceRecord:
    attachment = None
    if rng.random() < 0.7:
        notes = {f"k{rng.randrange(3)}": {f"/dev/x{rng.randrange(4)}": f"v{n}-{rng.randrange(9)}"}
                 for _ in range(rng.randrange(3))}
        attachment = Attachment(phase=AttachPhase.ATTACHED, buses=[f"rp{rng.randrange(5)}"] * rng.randrange(2),
                                notes=notes)
    sandbox = rng.random() < 0.2
    info = None if sandbox else DeviceInfo(container_path=f"/dev/d{n}", dev_type="c", major=500, minor=n)
    return DeviceRecord(id=f"dev{n}", key=f"sandbox dev{n}" if sandbox else f"k{rng.randrange(6)}",
                        kind=rng.choice(["rng", "generic"]), plugin="p", container_path=None if sandbox else
                        f"/dev/d{n}", host_path="", info=info, ref_count=1, attachment=attachment)


def test_indexed_lookups_agree_with_a_walk_over_every_device() -> None:
    rng = random.Random(2026)
    start = [random_record(rng, n) for n in range(6)]
    books = Registry(SandboxState(settings=SandboxSettings(), devices=start))
    for step in range(2000):
        n = rng.randrange(15)
        current = books.find(f"dev{n}")
        if current is not None and rng.random() < 0.3:
            books.forget(current)
        else:
            books.store(random_record(rng, n))
        records = books.records()
        for key in {r.key for r in records} | {"k9"}:
            assert books.by_key(key) == next((r for r in records if r.key == key), None), step
        for name in ("rng", "generic", f"dev{n}", "nothing"):
            matches = [r for r in records if r.info is None and name in (r.id, r.kind)]
            assert books.sandbox_device(name) == (matches[0] if len(matches) == 1 else None), step
        held = {bus for r in records if r.attachment for bus in r.attachment.buses}
        assert books.held_buses() == held, step
        ports = [PortRecord(id=f"rp{i}", kind="root-port") for i in range(6)]
        assert books.unheld(ports) == [p for p in ports if p.id not in held]
        for besides in ("", f"dev{n}", f"dev{rng.randrange(15)}"):
            assert books.seed_notes(besides=besides) == walked_seed(books, besides), (step, besides)


def test_the_seed_handed_out_does_not_change_with_later_changes() -> None:
    attached = Attachment(phase=AttachPhase.ATTACHED, notes={"k": {"/dev/a": "1"}})
    books = Registry(SandboxState(settings=SandboxSettings()))
    books.store(DeviceRecord(id="a", key="a", kind="g", plugin="p", container_path="/dev/a", host_path="",
                             attachment=attached))
    seed = books.seed_notes()
    books.store(DeviceRecord(id="b", key="b", kind="g", plugin="p", container_path="/dev/b", host_path="",
                             attachment=Attachment(phase=AttachPhase.ATTACHED, notes={"k": {"/dev/b": "2"}})))
    assert seed == {"k": {"/dev/a": "1"}}
    assert books.seed_notes() == {"k": {"/dev/a": "1", "/dev/b": "2"}}


def objects_of(step: Step) -> StepObjects:
    """A fake driver's reading of a step: ``c`` creates, ``x`` removes, ``r`` refers to."""
    creates = step.get("c", "")
    return StepObjects(creates=creates, removes=step.get("x", ""), refers=frozenset(step.get("r", ())),
                       undo={"x": creates} if creates else None)


def random_steps(rng: random.Random, names: list[str]) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = []
    for _ in range(rng.randrange(4)):
        kind = rng.choice(["c", "x", "r"])
        steps.append({"r": rng.sample(names, 2)} if kind == "r" else {kind: rng.choice(names)})
    return steps


def test_the_shared_object_index_decides_as_a_walk_over_every_device() -> None:
    rng = random.Random(7)
    names = [f"obj{i}" for i in range(6)]
    books = Registry(SandboxState(settings=SandboxSettings()))
    index = SharingIndex(objects_of, books.order)
    walk = Sharing(objects_of)
    for step in range(1500):
        n = rng.randrange(10)
        current = books.find(f"dev{n}")
        if current is not None and rng.random() < 0.2:
            books.forget(current)
        else:
            attachment = None if rng.random() < 0.2 else Attachment(
                phase=rng.choice(list(AttachPhase)), hotplug=random_steps(rng, names),
                unplug=random_steps(rng, names), shared=rng.sample(names, rng.randrange(2)))
            books.store(DeviceRecord(id=f"dev{n}", key=f"k{n}", kind="g", plugin="p", container_path=None,
                                     host_path="", attachment=attachment))
        for device_id in books.attachment_changes():
            index.update(device_id, books.find(device_id))
        device_id = f"dev{rng.randrange(10)}"
        hotplug = random_steps(rng, names)
        assert index.creations(device_id, hotplug) == walk.creations(hotplug, books.in_vm(besides=device_id)), step
        record = books.find(device_id)
        if record is not None:
            undo = rng.random() < 0.5
            assert index.removal(record, hotplug, undo=undo) == \
                walk.removal(record, hotplug, books.in_vm(besides=device_id), undo=undo), step


def device(device_id: str, phase: AttachPhase, *, hotplug: list[Step] | None = None,
           unplug: list[Step] | None = None) -> DeviceRecord:
    return DeviceRecord(id=device_id, key=device_id, kind="g", plugin="p", container_path=None, host_path="",
                        attachment=Attachment(phase=phase, hotplug=hotplug or [], unplug=unplug or []))


def test_only_an_attached_device_s_objects_are_present_and_an_attached_user_inherits_their_removal() -> None:
    walk = Sharing(objects_of)
    attaching = device("a", AttachPhase.ATTACHING, hotplug=[{"c": "obj"}])
    attached = device("b", AttachPhase.ATTACHED, hotplug=[{"c": "obj"}])
    assert walk.creations([{"c": "obj"}], [attaching]) == ([{"c": "obj"}], [])
    assert walk.creations([{"c": "obj"}], [attaching, attached]) == ([], ["obj"])
    leaving = device("c", AttachPhase.ATTACHED, unplug=[{"x": "obj"}])
    assert walk.removal(leaving, [{"x": "obj"}], [attaching, attached]) == \
        Removal(steps=(), handed={"b": ({"x": "obj"},)})
