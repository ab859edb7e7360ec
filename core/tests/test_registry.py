"""The registry's indexes answer as a walk over every device would, whatever the changes were."""

from __future__ import annotations

import random

from vmdev.models import DeviceInfo
from vmdev.registry import Registry
from vmdev.settings import SandboxSettings
from vmdev.state import Attachment, AttachPhase, DeviceRecord, PortRecord, SandboxState


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
