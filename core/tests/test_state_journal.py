"""The append-only state journal: a snapshot line, one line per change, compaction, torn last lines."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import attrs
import pytest

from vmdev.manager import DeviceManager
from vmdev.registry import Registry, build_scope
from vmdev.settings import SandboxSettings
from vmdev.state import (
    STATE_VERSION,
    Attachment,
    AttachPhase,
    DeviceRecord,
    PortRecord,
    SandboxState,
    StateChange,
    StateCorruptError,
    StateFile,
    StateJournal,
    StateVersionError,
    encode,
)


def record(n: int, *, attached: bool = False, notes: str = "") -> DeviceRecord:
    attachment = Attachment(phase=AttachPhase.ATTACHED, buses=[f"rp{n}"], notes={"k": {f"d{n}": notes}} if notes
                            else {}) if attached else None
    return DeviceRecord(id=f"dev{n}", key=f"char 500:{n}", kind="generic", plugin="generic",
                        container_path=f"/dev/d{n}", host_path=f"/dev/h{n}", device={"n": n}, ref_count=1,
                        attach_count=int(attached), users=("c1",), attachment=attachment)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def opened(path: Path, state: SandboxState | None = None, **kw: int) -> tuple[Registry, StateJournal]:
    """Books for ``path`` as the CLI opens them: load (or a new state), then journal every change."""
    file = StateFile(path)
    start = file.load() if file.exists() else (state or SandboxState(settings=SandboxSettings()))
    journal = StateJournal(file, **kw)
    return Registry(start, journal), journal


def test_each_change_is_appended_as_one_line_and_loads_as_the_books_hold_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    books, journal = opened(path)
    books.store(record(0))  # no file yet: a snapshot
    inode = path.stat().st_ino
    books.store(record(1))
    books.update("dev0", ref_count=2, users=("c1", "c2"))
    books.set_ports([PortRecord(id="rp0", kind="root-port")])
    books.forget(books.get("dev1"))
    assert path.stat().st_ino == inode  # appended to, never replaced
    snapshot, *changes = lines(path)
    assert json.loads(snapshot)["version"] == STATE_VERSION == 3
    assert [sorted(json.loads(line)) for line in changes] == [["put"], ["put"], ["ports"], ["drop"]]
    assert json.loads(changes[1])["put"][0]["ref_count"] == 2
    assert StateFile(path).load() == books.snapshot()
    assert (journal.compactions, journal.appends) == (1, 4)


def test_random_changes_replay_to_exactly_the_books_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    rng = random.Random(13)
    books, journal = opened(path, compact_bytes=4096)
    for step in range(300):
        action = rng.randrange(5)
        n = rng.randrange(12)
        current = books.find(f"dev{n}")
        if action == 0 and current is None:  # built: takes numbers in its scope, as the manager does
            view = books.scoped(build_scope(f"char 500:{n}"))
            view.take("generic.index", f"/dev/d{n}", limit=64)
            if rng.random() < 0.2:
                view.take("other.index", f"/dev/d{n}", limit=64, start=3)
            books.store(record(n))
        elif action == 1 and current is not None:
            books.store(record(n, attached=current.attachment is None, notes=str(step % 3)))
        elif action == 2 and current is not None:
            books.forget(current)
        elif action == 3:
            books.set_ports([PortRecord(id=f"rp{i}", kind="root-port") for i in range(rng.randrange(4))])
        else:
            books.journal_now()
        assert StateFile(path).load() == books.snapshot(), step
    assert journal.appends > 100 and journal.compactions > 3  # both paths ran


def test_the_journal_is_compacted_once_it_would_pass_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    big = SandboxState(settings=SandboxSettings(), devices=[record(n) for n in range(40)])
    books, journal = opened(path, big, compact_bytes=0)
    books.journal_now()
    snapshot_size = path.stat().st_size
    appended = 0
    while journal.compactions == 1:
        books.update("dev0", ref_count=books.get("dev0").ref_count + 1)
        appended += 1
    assert appended > 5 and len(lines(path)) == 1  # the change that would pass it wrote a snapshot
    assert path.stat().st_size <= 2 * snapshot_size
    assert StateFile(path).load() == books.snapshot()


def test_a_torn_last_line_is_ignored_and_the_next_change_writes_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    before = books.snapshot()
    books.store(record(1))
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # killed in the middle of the append: the change was never acknowledged
    assert StateFile(path).load() == before
    path.write_bytes(data[:-1])  # all but the newline: not acknowledged either
    assert StateFile(path).load() == before
    again, journal = opened(path)
    again.store(record(2))
    assert journal.compactions == 1 and len(lines(path)) == 1  # never appended after a torn line
    assert StateFile(path).load() == again.snapshot()


@pytest.mark.parametrize(
    ("damage", "message", "field"),
    [
        (lambda ls: ls.insert(2, b"{not json"), "journal line is not valid JSON", "line 3"),
        (lambda ls: ls.insert(2, b'{"put": [{"id": "x"}]}'), "invalid journal line: required field missing",
         "line 3.put[0].key"),
        (lambda ls: ls.insert(1, b'{"renamed": []}'), "is not a journal line", "line 2"),
        (lambda ls: ls.insert(2, b""), "journal line is not valid JSON", "line 3"),
        (lambda ls: ls.append(b"[]"), "is not a journal line", "line 4"),  # complete, so not torn
        (lambda ls: ls.__setitem__(1, b'{"alloc": {"p": {"x": "o"}}}'), "invalid journal line: an allocation index is not a number",
         "line 2.alloc"),
    ],
)
def test_a_damaged_line_before_the_torn_tail_is_a_corrupt_state(
    tmp_path: Path, damage: object, message: str, field: str
) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    books.store(record(1))
    books.store(record(2))
    content = lines(path)
    damage(content)  # type: ignore[operator]
    path.write_bytes(b"\n".join(content) + b"\n")
    with pytest.raises(StateCorruptError, match=message) as exc:
        StateFile(path).load()
    assert exc.value.field == field and exc.value.device == str(path) and "\n" not in str(exc.value)


def test_a_record_a_later_line_replaces_or_drops_is_never_structured(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    books.store(record(1))
    books.update("dev0", ref_count=2)
    books.forget(books.get("dev1"))
    books.update("dev0", ref_count=3)
    content = lines(path)
    for number in (2, 3):  # dev1 stored (dropped on line 4), dev0 updated (again on line 5)
        line = json.loads(content[number - 1])
        line["put"][0]["ref_count"] = -1  # what a structured record refuses
        content[number - 1] = json.dumps(line).encode()
    path.write_bytes(b"\n".join(content) + b"\n")
    assert StateFile(path).load() == books.snapshot()
    content[3] = content[3][:-1] + b', "drop": 7}'  # the other keys of a line are read as they come
    path.write_bytes(b"\n".join(content) + b"\n")
    with pytest.raises(StateCorruptError, match="invalid journal line") as exc:
        StateFile(path).load()
    assert exc.value.field == "line 4.drop"


@pytest.mark.parametrize(
    ("put", "field"),
    [('{"id": 7}', "line 2.put[0]"), ('"dev9"', "line 2.put[0]"), ('{"key": "char 1:1"}', "line 2.put[0].id")],
)
def test_a_record_without_a_string_id_is_refused_on_the_line_that_holds_it(
    tmp_path: Path, put: str, field: str
) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    books.store(record(1))
    content = lines(path)
    content.insert(1, b'{"put": [%s]}' % put.encode())
    path.write_bytes(b"\n".join(content) + b"\n")
    with pytest.raises(StateCorruptError, match="invalid journal line") as exc:
        StateFile(path).load()
    assert exc.value.field.startswith(field)


def test_a_put_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    books.store(record(1))
    content = lines(path)
    content.insert(1, b'{"put": {"id": "dev0"}}')
    path.write_bytes(b"\n".join(content) + b"\n")
    with pytest.raises(StateCorruptError, match="invalid journal line") as exc:
        StateFile(path).load()
    assert exc.value.field == "line 2.put"


def test_a_newer_snapshot_with_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    document = json.loads(encode(SandboxState(settings=SandboxSettings())))
    document["version"] = STATE_VERSION + 1
    path.write_text(json.dumps(document) + "\n" + '{"drop": ["x"]}\n')
    with pytest.raises(StateVersionError, match="newer vmdev"):
        StateFile(path).load()


def test_an_older_state_file_is_rewritten_as_a_snapshot_by_the_first_change(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    document = json.loads(encode(SandboxState(settings=SandboxSettings(), devices=[record(0)])))
    document["version"] = 2
    path.write_text(json.dumps(document, indent=2))  # as an older vmdev wrote it
    books, journal = opened(path)
    assert books.get("dev0").ref_count == 1
    books.update("dev0", ref_count=5)
    assert journal.compactions == 1 and json.loads(lines(path)[0])["version"] == 3
    books.update("dev0", ref_count=6)
    assert journal.appends == 1 and StateFile(path).load().devices[0].ref_count == 6


def test_books_that_do_not_come_from_the_file_start_it_with_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    other = Registry(SandboxState(settings=SandboxSettings(), devices=[record(7)]), StateJournal(path))
    other.update("dev7", ref_count=3)  # this file was loaded, but not into these books
    assert len(lines(path)) == 1 and StateFile(path).load() == other.snapshot()
    changed, journal = opened(path)
    os.utime(path)  # the same file, but someone appended meanwhile
    with path.open("ab") as file:
        file.write(b'{"drop": ["dev7"]}\n')
    changed.update("dev7", ref_count=4)
    assert journal.compactions == 1 and StateFile(path).load() == changed.snapshot()


def test_a_state_files_bound_save_still_works_and_journals_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    file = StateFile(path)
    books = Registry(SandboxState(settings=SandboxSettings()), journal=file.save)
    assert isinstance(books.journal, StateJournal)
    books.store(record(0))
    books.store(record(1))
    assert len(lines(path)) == 2 and file.load() == books.snapshot()
    saved: list[SandboxState] = []
    books.journal = saved.append  # a plain callable still gets the whole state
    books.forget(books.get("dev0"))
    assert saved == [books.snapshot()]


def test_a_journal_set_later_starts_with_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    books, _ = opened(path)
    books.store(record(0))
    books.journal = None
    books.store(record(1))  # not journaled
    journal = StateJournal(path)
    books.journal = journal
    books.store(record(2))
    assert journal.compactions == 1 and StateFile(path).load() == books.snapshot()


def test_a_change_holds_only_what_it_changed() -> None:
    change = StateChange(put=[record(1)], allocations={"p": {3: "o", 4: None}})
    assert change.to_json() == {"put": [json.loads(encode(SandboxState(settings=SandboxSettings(),
                                                                       devices=[record(1)])))["devices"][0]],
                                "alloc": {"p": {"3": "o", "4": None}}}
    assert StateChange().empty and not attrs.evolve(change, put=()).empty


def test_journal_now_writes_the_file_only_when_it_does_not_hold_the_books(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    manager = DeviceManager.open(path)
    manager.journal_now()  # a new sandbox: its file is written
    assert StateFile(path).load() == manager.snapshot()
    before = path.stat()
    DeviceManager.open(path).journal_now()  # loaded from the file it would write: nothing to do
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_books_made_from_a_state_the_file_has_moved_on_from_start_with_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = StateFile(path)
    first.save(SandboxState(settings=SandboxSettings(), devices=[record(0)]))
    loaded = first.load()
    Registry(loaded, StateJournal(path)).store(record(1))  # appended: the file is no longer `loaded`
    journal = StateJournal(path)
    stale = Registry(loaded, journal)
    stale.update("dev0", ref_count=9)
    assert journal.compactions == 1 and StateFile(path).load() == stale.snapshot()
