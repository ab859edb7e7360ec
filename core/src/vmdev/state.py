"""The persisted state of a sandbox: its devices, their counts and attachments, its allocations.

A :class:`SandboxState` is what the device manager (:mod:`vmdev.manager`) saves between two
invocations of ``vmdev attach``/``detach``/``status``: versioned JSON (read strictly by
:mod:`vmdev.typedjson`, written by :func:`vmdev.serialize.to_json`), written atomically by
:class:`StateFile` and changed, change by change, by :class:`StateJournal`. It names no hypervisor's
vocabulary: an attachment keeps the live steps its backend rendered as JSON (QMP commands for QEMU,
``{"attach": xml}`` for a libvirt backend), a device its saved form (rebuilt by its family's
``device_from_state`` hook) and the host facts it was built from. The settings are saved as written,
never their derived typed ``values`` (the device manager prepares them again when it loads the sandbox).

The file (version 3) is one line holding the whole state (the *snapshot*, a JSON object with
``format`` and ``version`` first), then one line per change (the *journal*: a JSON object with the
device records stored, the ids forgotten, the allocations taken or freed and the spare ports, as
far as the change touched them; see :class:`StateChange`). Loading reads the snapshot and applies
the changes in order; a device record a later line replaces or drops is checked for its id only
(:func:`_replay`). Saving everything (:meth:`StateFile.save`, and *compaction*: a journal that
has grown past the snapshot's size is replaced by a new snapshot) is atomic:

1. the JSON goes to a temporary file in the same directory (``O_EXCL``, mode 0600),
2. which is flushed to the disk (``fsync``),
3. renamed over the state file (``rename`` is atomic on POSIX file systems),
4. and the directory is flushed too, so the rename itself survives a crash.

A change is appended as one ``write`` of its line and its newline, then ``fsync``: it counts once
the ``fsync`` returned. So a process killed at any point leaves the previous state or the new
one, never a mix: an interrupted save leaves only a temporary file, which the next save of
another process removes; an interrupted append leaves a last line without its newline, which
loading ignores (that change was never acknowledged) and the next change replaces by compacting.
Anything else that does not read (a bad line before the last, a bad snapshot) is
:class:`StateCorruptError`, and a state file written by a newer vmdev (a higher ``version``) is
:class:`StateVersionError`, never guessed at. Older layouts still load: version 2 is a snapshot
without journal lines, version 1 (steps as QMP commands, no host facts) reads as version 2 with no
facts recorded; the first change of a journal rewrites them as version 3. :meth:`StateFile.locked`
serialises the load-act-save cycles of several processes (appends happen under it).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from vmdev._convert import any_dict
from vmdev.errors import VmdevError
from vmdev.models import DeviceInfo
from vmdev.qemu import check_id
from vmdev.serialize import to_json
from vmdev.settings import SandboxSettings
from vmdev.strictjson import JsonError, json_value
from vmdev.typedjson import Invalid, TypedReader, describe

#: the ``format`` key of every state file
STATE_FORMAT: Final = "vmdev-sandbox-state"
#: the newest state layout this vmdev reads and the one it writes (3: a snapshot line, then journal
#: lines)
STATE_VERSION: Final = 3
#: the oldest layout it still reads (version 1: no host facts, no shared objects)
OLDEST_STATE_VERSION: Final = 1
#: attach and reference counts saturate here (Kata: the largest uint); going past is an error
MAX_COUNT: Final = 2**32 - 1
#: how long :meth:`StateFile.locked` waits for another process's lock
LOCK_TIMEOUT: Final = 120.0
#: a journal is compacted once its lines would pass the snapshot's size, or this size if larger.
#: Every command reads the whole file, and a compaction (an atomic rewrite: ~0.25 ms of CPU for a
#: small sandbox, against ~0.05 ms for an append) is paid once per this many bytes of lines, while
#: reading lines costs ~15-30 us a KiB: per command, about 0.1 ms at 8 KiB for a small sandbox's
#: generic devices (~0.6 KiB a line) or hot-plugged disks (~1.9 KiB), where 64 KiB (until issue
#: 13's last round) cost 0.5-1 ms of reading. Large sandboxes compact at the snapshot's size.
COMPACT_BYTES: Final = 8 * 1024
#: ... or once it holds this many lines
COMPACT_LINES: Final = 10_000
_TEMP_MARK: Final = ".tmp-"
#: the largest state file read. A hot-plugged block device's record is ~1.9 KiB (a generic one
#: ~0.6 KiB) and the journal is compacted once it passes the snapshot's size, so a 1,000-device
#: sandbox's file stays under ~4 MiB; 64 MiB is 16 times that (some 17,000 such devices). A file
#: that is not a regular one (a FIFO, ``/dev/zero``) is refused unread.
MAX_STATE_BYTES: Final = 64 * 1024 * 1024
#: the largest process id a state file may record (pid_t is a signed 32-bit integer; Linux's own
#: limit is 2**22): anything larger is corrupt, not a process to signal
MAX_PID: Final = 2**31 - 1
#: allocation indexes are canonical decimals up to this (pools are small: 65535 drive indexes)
MAX_INDEX: Final = 2**32 - 1


class StateError(VmdevError):
    """A state file cannot be read or written."""


class StateVersionError(StateError):
    """The state file was written by a newer vmdev (its layout version is unknown here)."""


class StateCorruptError(StateError):
    """The state file is not a valid sandbox state (bad JSON, wrong format, invalid values)."""


class StateLockedError(StateError):
    """Another process held the state file's lock for too long."""


class AttachPhase(str, enum.Enum):
    """Where an attachment stands. Saved at every change, so an interruption is visible."""

    #: hot plug running (or interrupted: the ``pid`` is gone); ``steps_done`` steps completed
    ATTACHING = "attaching"
    #: in the VM
    ATTACHED = "attached"
    #: hot unplug running or stopped part-way (``error`` says why); the device may still be there
    DETACHING = "detaching"
    #: an attach failed and could not be rolled back completely: ``leftovers`` may be in the VM
    FAILED = "failed"


def _count(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise StateCorruptError(f"must be a count from 0 to {MAX_COUNT}, got {value!r}", field=attribute.name)


def _non_negative(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateCorruptError(f"must be a number >= 0, got {value!r}", field=attribute.name)


def _pid(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PID:
        raise StateCorruptError(f"must be a process id from 0 to {MAX_PID}, got {value!r:.40}",
                                field=attribute.name)


def _qemu_id(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    check_id(value, field=attribute.name)


#: one live step as its backend rendered it, in JSON (``{"execute": ..., "arguments": {...}}`` for QMP)
Step = Mapping[str, Any]


def _step(value: Any) -> dict[str, Any]:
    """A step as JSON: a mapping, or an object with ``to_json()`` (a ``QmpCommand``)."""
    own = getattr(value, "to_json", None)  # (not the module's to_json: the step's own)
    data = own() if callable(own) else value
    if not isinstance(data, Mapping):
        raise StateCorruptError(
            f"a live step must be a JSON object, got {type(data).__name__}", field="steps"
        )
    return dict(data)


def steps_json(value: Any) -> tuple[dict[str, Any], ...]:
    """Live steps as JSON objects (see :func:`_step`); for the attachment's fields."""
    return tuple(_step(item) for item in value)


def _facts(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _notes(value: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    return {key: dict(inner) for key, inner in value.items()}


@attrs.frozen(kw_only=True)
class Attachment:
    """How a device is (being) attached to the running VM."""

    phase: AttachPhase
    #: stays in the VM while its attach count is 0: cold-plugged at boot, or impossible to unplug
    resident: bool = False
    #: the live steps that plugged it, in order (as run: objects other devices had created already
    #: are left out), and those that unplug it; JSON as the backend rendered them
    hotplug: tuple[Step, ...] = attrs.field(default=(), converter=steps_json)
    unplug: tuple[Step, ...] = attrs.field(default=(), converter=steps_json)
    #: hot-plug steps the VM completed (attaching, failed) or unplug steps completed (detaching)
    steps_done: int = attrs.field(default=0, validator=_non_negative)
    #: the hot-plug ports (buses) the device took
    buses: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    #: undo steps of a failed attach that may still have something to remove in the VM
    leftovers: tuple[Step, ...] = attrs.field(default=(), converter=steps_json)
    #: objects in the VM this device uses that other devices' steps created (shared hot-plug
    #: objects: they stay while any user is attached)
    shared: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    #: notes the plugin recorded while rendering (``RenderTarget.record``), by key then device
    notes: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, converter=_notes)
    #: the plugin's ``details`` of the rendering (JSON)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)
    #: the last error of this attachment ("" when none)
    error: str = ""
    #: the process that runs the attach or detach (0 when none)
    pid: int = attrs.field(default=0, validator=_pid)
    #: when the phase last changed (seconds since the epoch)
    since: float = 0.0


@attrs.frozen(kw_only=True)
class DeviceRecord:
    """One device of the sandbox, shared by every container that references it."""

    #: the device's id (its plugin derives it; QEMU sees it)
    id: str = attrs.field(validator=_qemu_id)
    #: what deduplicates requests: ``block 8:16``, ``char 1:3``, ``file /img``, ``sandbox rng0``...
    key: str
    kind: str
    plugin: str
    #: the container path of the first request (None for sandbox devices)
    container_path: str | None
    host_path: str
    #: the request it was built from, host path resolved (None for sandbox devices)
    info: DeviceInfo | None = None
    #: the built device as JSON (its family's ``device_from_state`` rebuilds it after a reload)
    device: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)
    #: the host facts it was built from (``node.type``, ``node.rdev`` and its family's): compared
    #: when the saved sandbox is used again
    facts: Mapping[str, str] = attrs.field(factory=dict, converter=_facts)
    #: how many containers reference it (``new_device`` adds one, ``remove`` takes one)
    ref_count: int = attrs.field(default=0, validator=_count)
    #: how many times it is attached (the first attach plugs it, the last detach unplugs it)
    attach_count: int = attrs.field(default=0, validator=_count)
    #: the users (containers) that named themselves, one entry per reference
    users: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    attachment: Attachment | None = None

    @property
    def name(self) -> str:
        """What errors call the device: its container path, else its id."""
        return self.container_path or self.id

    @property
    def attached(self) -> bool:
        return self.attach_count > 0

    @property
    def in_vm(self) -> bool:
        """Attached, resident, or possibly partly in the VM after an interrupted operation."""
        return self.attachment is not None


@attrs.frozen(kw_only=True)
class PortRecord:
    """A hot-plug port the VM was booted with (``root-port`` or ``switch-port``)."""

    id: str = attrs.field(validator=_qemu_id)
    kind: str


def _records(value: Any) -> tuple[DeviceRecord, ...]:
    return tuple(value)


def _ports(value: Any) -> tuple[PortRecord, ...]:
    return tuple(value)


def _pools(value: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    return {pool: dict(used) for pool, used in value.items()}


@attrs.frozen(kw_only=True)
class SandboxState:
    """Everything the device manager knows about one sandbox."""

    settings: SandboxSettings
    devices: tuple[DeviceRecord, ...] = attrs.field(default=(), converter=_records)
    #: :meth:`vmdev.resources.Allocator.snapshot` of the sandbox's pools
    allocations: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, converter=_pools)
    #: spare hot-plug ports of the boot plan (used when no live VM is asked)
    ports: tuple[PortRecord, ...] = attrs.field(default=(), converter=_ports)

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for record in self.devices:
            if record.id in seen:
                raise StateCorruptError(f"device id {record.id!r} appears twice", field="devices")
            seen.add(record.id)

    def device(self, device_id: str) -> DeviceRecord | None:
        return next((r for r in self.devices if r.id == device_id), None)


# --- changes ---------------------------------------------------------------------------------------
def _changes(value: Mapping[str, Mapping[int, str | None]]) -> dict[str, dict[int, str | None]]:
    return {pool: dict(used) for pool, used in value.items()}


@attrs.frozen(kw_only=True)
class StateChange:
    """What one change of the books did: a journal line. Applied to the state before it (records
    stored in ``put`` replace those with their id in place, or come last; ids in ``drop`` go first),
    it gives the state after it, exactly."""

    #: device records stored (new or changed)
    put: tuple[DeviceRecord, ...] = attrs.field(default=(), converter=_records)
    #: ids of devices forgotten
    drop: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    #: allocations taken (the owner) or freed (None), by pool then index
    allocations: Mapping[str, Mapping[int, str | None]] = attrs.field(factory=dict, converter=_changes)
    #: the spare hot-plug ports, when they changed
    ports: tuple[PortRecord, ...] | None = None

    @property
    def empty(self) -> bool:
        return not (self.put or self.drop or self.allocations or self.ports is not None)

    def to_json(self) -> dict[str, Any]:
        """The journal line's object: only the keys the change has."""
        line: dict[str, Any] = {}
        if self.drop:
            line["drop"] = list(self.drop)
        if self.put:
            line["put"] = [record_to_json(record) for record in self.put]
        if self.allocations:
            line["alloc"] = {pool: {str(i): o for i, o in used.items()}
                             for pool, used in self.allocations.items()}
        if self.ports is not None:
            line["ports"] = [{"id": port.id, "kind": port.kind} for port in self.ports]
        return line

    def apply(self, devices: dict[str, DeviceRecord], allocations: dict[str, dict[str, str]]) -> None:
        """Apply the change to a state's devices by id and its allocations (ports: see ``ports``)."""
        for device_id in self.drop:
            devices.pop(device_id, None)
        for record in self.put:
            devices[record.id] = record
        for pool, used in self.allocations.items():
            held = allocations.setdefault(pool, {})
            for index, owner in used.items():
                if owner is None:
                    held.pop(str(index), None)
                else:
                    held[str(index)] = owner


@runtime_checkable
class ChangeJournal(Protocol):
    """What the device manager's books tell each change to (:class:`StateJournal` writes them)."""

    def begin(self, state: SandboxState, *, continues: bool) -> None:
        """The books start as ``state``: the state they were made with (``continues``: a journal
        on the file it was loaded from may append to it), or the whole current state of books
        whose journal is changed (the journal must start with a snapshot)."""

    def record(self, change: StateChange, current: Callable[[], SandboxState]) -> None:
        """One change (possibly empty: saving was asked for); ``current()`` is the whole new state,
        for a journal that writes a snapshot instead."""


#: what a journal line that does not structure is called
_BAD_LINE: Final = "invalid journal line"


def _change_from(value: Any, *, source: str, line: int) -> StateChange:
    """The change a journal line's JSON holds but for its records (:func:`_replay` reads those)."""
    where = f"line {line}"
    if not isinstance(value, dict) or not set(value) <= {"put", "drop", "alloc", "ports"}:
        raise StateCorruptError("is not a journal line (a JSON object with put, drop, alloc, ports)",
                                device=source, field=where)
    what = _BAD_LINE
    drop = _structure(value.get("drop", []), list[str], source=source, what=what, path=f"{where}.drop")
    alloc = _structure(value.get("alloc", {}), dict[str, dict[str, str | None]], source=source, what=what,
                       path=f"{where}.alloc")
    _check_indexes(alloc, source=source, what=what, path=f"{where}.alloc")
    ports = value.get("ports")
    allocations = {pool: {int(i): o for i, o in used.items()} for pool, used in alloc.items()}
    return StateChange(
        drop=drop, allocations=allocations,
        ports=None if ports is None else _structure(ports, list[PortRecord], source=source, what=what,
                                                    path=f"{where}.ports"),
    )


def _check_indexes(pools: Mapping[str, Mapping[str, Any]], *, source: str, what: str, path: str) -> None:
    """Allocation indexes (JSON keys) must be canonical decimals from 0 to :data:`MAX_INDEX`: the
    allocator turns them into integers, and ``"x"`` or a 5,000-digit one must not get that far."""
    for pool, used in pools.items():
        for index in used:
            if not _index_ok(index):
                shown = json.dumps(index[:24]) + ("..." if len(index) > 24 else "")
                raise StateCorruptError(
                    f"{what}: an allocation index is not a number from 0 to {MAX_INDEX}: {shown} in pool "
                    f"{json.dumps(pool)}", device=source, field=path,
                )


def _index_ok(index: str) -> bool:
    return (index.isascii() and index.isdigit() and len(index) <= 10 and (index == "0" or index[0] != "0")
            and int(index) <= MAX_INDEX)


# --- JSON ------------------------------------------------------------------------------------------
#: what the state keeps of the settings: everything but the typed ``values`` (derived from the rest)
_DERIVED_SETTINGS: Final = ("values",)
_readers: list[TypedReader] = []


def _reader() -> TypedReader:
    """The state's reader, made on first use (it resolves the classes' annotations then)."""
    if not _readers:
        _readers.append(TypedReader(skip={SandboxSettings: _DERIVED_SETTINGS}))
    return _readers[0]


def to_document(state: SandboxState) -> dict[str, Any]:
    """The JSON document of ``state`` (``format`` and ``version`` first)."""
    document: dict[str, Any] = {"format": STATE_FORMAT, "version": STATE_VERSION}
    document.update(to_json(state))
    for name in _DERIVED_SETTINGS:
        document["settings"].pop(name, None)
    return document


def record_to_json(record: DeviceRecord) -> dict[str, Any]:
    """One device record as JSON (as it appears in the state file)."""
    data: dict[str, Any] = to_json(record)
    return data


def encode(state: SandboxState) -> bytes:
    return _json_line(to_document(state))


def _json_line(value: Any) -> bytes:
    """One line of the state file: compact JSON and its newline."""
    try:
        # compact: the indented form forces Python's slow encoder (32 of 44 ms per save of a
        # 1,000-device sandbox, issue 13); `python -m json.tool` shows a state file readably
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"cannot be stored as JSON: {exc}", field="state") from None
    return (text + "\n").encode("utf-8")


def from_document(document: Any, *, source: str = "") -> SandboxState:
    """Validate and structure a decoded state document."""
    if not isinstance(document, dict):
        raise StateCorruptError("is not a vmdev sandbox state (not a JSON object)", device=source)
    if document.get("format") != STATE_FORMAT:
        raise StateCorruptError(
            f"is not a vmdev sandbox state (format {document.get('format')!r}, expected {STATE_FORMAT!r})",
            device=source,
            field="format",
        )
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < OLDEST_STATE_VERSION:
        raise StateCorruptError(f"invalid state version {version!r}", device=source, field="version")
    if version > STATE_VERSION:
        raise StateVersionError(
            f"was written by a newer vmdev (state version {version}; this vmdev reads version "
            f"{STATE_VERSION} at most): upgrade vmdev",
            device=source,
            field="version",
        )
    # version 1 differs only by what it lacks (host facts, shared objects: none recorded) and keeps
    # QMP commands as steps, which are the same JSON objects; saved typed settings values are ignored
    body = {k: v for k, v in document.items() if k not in ("format", "version")}
    state: SandboxState = _structure(body, SandboxState, source=source, what="invalid state")
    _check_indexes(state.allocations, source=source, what="invalid state", path="$.allocations")
    return state


def _structure(value: Any, kind: Any, *, source: str, what: str, path: str = "$") -> Any:
    """``value`` structured as ``kind``; :class:`StateCorruptError` naming the JSON path if it is not one."""
    try:
        return _reader().read(value, kind, path)
    except Invalid as exc:
        raise StateCorruptError(f"{what}: {exc.message}", device=source, field=exc.path) from None
    except (VmdevError, TypeError, ValueError, KeyError, ArithmeticError) as exc:
        raise StateCorruptError(f"{what}: {describe(exc)}", device=source, field=path) from None


def decode(data: bytes, *, source: str = "") -> SandboxState:
    """The state a state file's bytes hold (its snapshot, its journal lines applied)."""
    return _read(data, source=source)[0]


def _decode_document(data: bytes, *, source: str) -> SandboxState:
    try:
        document = json_value(data)
    except JsonError as exc:
        raise StateCorruptError(f"is not valid JSON: {exc}", device=source, field=exc.path) from None
    return from_document(document, source=source)


# --- the file --------------------------------------------------------------------------------------
@attrs.frozen
class _Layout:
    """What a load saw of a state file: where its journal may be appended to."""

    #: (device, inode, size) of the file as read
    identity: tuple[int, int, int]
    #: the size of its snapshot line and of its journal lines
    snapshot_bytes: int
    journal_bytes: int
    lines: int
    #: the state it holds (loaded or written whole), so a journal can tell the books start from it;
    #: None once lines were appended to it
    state: SandboxState | None


#: per state file path, the layout this process last read or wrote, when journal lines may follow
_KNOWN: dict[str, _Layout] = {}
_KNOWN_MAX: Final = 16


_KNOWN_LOCK: Final = threading.Lock()


def _remember(path: Path, layout: _Layout | None) -> None:
    key = str(path)
    with _KNOWN_LOCK:
        _KNOWN.pop(key, None)
        if layout is not None:
            _KNOWN[key] = layout
            while len(_KNOWN) > _KNOWN_MAX:
                del _KNOWN[next(iter(_KNOWN))]


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size)


def _read(data: bytes, *, source: str) -> tuple[SandboxState, tuple[int, int] | None]:
    """The state a file's bytes hold: its snapshot with its journal lines applied; and, when more
    lines may be appended (a version 3 snapshot, every line complete), the sizes of the snapshot
    line and of the journal lines."""
    end = data.find(b"\n")
    document: Any = None
    if end >= 0:
        try:
            document = json_value(data[:end])
        except JsonError as exc:
            if not exc.malformed:  # JSON past vmdev's limits (nesting, digits): no older layout either
                raise StateCorruptError(f"is not valid JSON: {exc}", device=source,
                                        field=f"line 1{exc.path[1:]}") from None
    if not isinstance(document, dict):  # an older vmdev's indented file, or not a state at all
        return _decode_document(data, source=source), None
    state = from_document(document, source=source)
    lines = data[end + 1 :].split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or an append that was interrupted
    appendable = not tail and document["version"] == STATE_VERSION
    if not lines:
        return state, ((end + 1, 0) if appendable else None)
    state = _replay(lines, state, source=source)
    return state, ((end + 1, len(data) - end - 1) if appendable else None)


def _replay(lines: list[bytes], state: SandboxState, *, source: str) -> SandboxState:
    """``state`` with the journal ``lines`` (the file's second line on) applied in order.

    Every line is parsed and checked as it comes (JSON, the keys of a change, what it drops,
    allocates and leaves as spare ports), but a device record it stores is structured only once
    no later line replaces or drops it: a device attached and detached again and again leaves one
    record, not one per line. A command line run loads the whole file each time, and structuring
    records was most of that (issue 13). A record is kept as read only when it is an object with
    a string ``id``; anything else is structured at once, so it is refused naming its line."""
    devices: dict[str, DeviceRecord | tuple[dict[str, Any], str]] = {r.id: r for r in state.devices}
    allocations = {pool: dict(used) for pool, used in state.allocations.items()}
    ports = state.ports
    for number, line in enumerate(lines, start=2):
        try:
            value = json_value(line)
        except JsonError as exc:
            raise StateCorruptError(f"journal line is not valid JSON: {exc}", device=source,
                                    field=f"line {number}{exc.path[1:]}") from None
        if not isinstance(value, dict) or value.keys() - {"put"}:  # not only records: read the rest
            change = _change_from(value, source=source, line=number)
            change.apply(devices, allocations)  # type: ignore[arg-type]  # records kept as read by id too
            ports = change.ports if change.ports is not None else ports
        _keep_records(value.get("put", []), devices, source=source, line=number)
    return SandboxState(
        settings=state.settings, devices=tuple(_record(kept, source) for kept in devices.values()),
        ports=ports, allocations={pool: dict(sorted(used.items(), key=lambda item: int(item[0])))
                                  for pool, used in allocations.items() if used},
    )


def _keep_records(puts: Any, devices: dict[str, DeviceRecord | tuple[dict[str, Any], str]], *, source: str,
                  line: int) -> None:
    """A journal line's ``put`` into ``devices`` by id, as read (with where they were read)."""
    if not isinstance(puts, list):
        _structure(puts, list[Any], source=source, what=_BAD_LINE, path=f"line {line}.put")
    for index, put in enumerate(puts):
        path = f"line {line}.put[{index}]"
        if isinstance(put, dict) and isinstance(put.get("id"), str):
            devices[put["id"]] = (put, path)
        else:
            record = _structure(put, DeviceRecord, source=source, what=_BAD_LINE, path=path)
            devices[record.id] = record


def _record(kept: DeviceRecord | tuple[dict[str, Any], str], source: str) -> DeviceRecord:
    if isinstance(kept, DeviceRecord):
        return kept
    value, path = kept
    record: DeviceRecord = _structure(value, DeviceRecord, source=source, what=_BAD_LINE, path=path)
    return record


@attrs.frozen
class StateFile:
    """A state file on disk: atomic saves, strict loads, and a lock for load-act-save cycles."""

    path: Path = attrs.field(converter=Path)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        try:
            return self.path.exists()
        except OSError as exc:  # a directory on the way that may not be searched
            raise StateError(f"cannot look up the state file: {exc.strerror}",
                             device=str(self.path)) from None

    def load(self) -> SandboxState:
        """The saved state (snapshot and journal); :class:`StateError` when the file is missing,
        unreadable (not a regular file: a FIFO would block, ``/dev/zero`` never ends; larger than
        :data:`MAX_STATE_BYTES`) or invalid."""
        state = self.load_if_present()
        if state is None:
            raise StateError("no such state file", device=str(self.path))
        return state

    def load_if_present(self) -> SandboxState | None:
        """:meth:`load`, or None when there is no state file (found by the read itself: no
        :meth:`exists` first, which would look the file up once more on every command)."""
        from vmdev.errors import HostReadError
        from vmdev.host import read_regular_stat

        try:
            read = read_regular_stat(self.path, limit=MAX_STATE_BYTES)
        except HostReadError as exc:
            raise StateError(f"cannot read the state file: {exc.reason}", device=str(self.path)) from None
        if read is None:
            return None
        data, identity = read[0], _identity(read[1])
        state, sizes = _read(data, source=str(self.path))
        if sizes is None or identity[2] != len(data):
            _remember(self.path, None)
        else:
            _remember(self.path, _Layout(identity, sizes[0], sizes[1], data.count(b"\n") - 1, state))
        return state

    def load_or(self, default: SandboxState) -> SandboxState:
        """The saved state, or ``default`` when there is no state file yet."""
        state = self.load_if_present()
        return default if state is None else state

    def save(self, state: SandboxState) -> None:
        """Replace the state file with ``state`` atomically (see the module documentation)."""
        _remember(self.path, None)
        write_atomically(self.path, encode(state))

    def journal(self) -> StateJournal:
        """A journal of changes to this file (see :class:`StateJournal`)."""
        return StateJournal(self)

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold an exclusive lock (``flock`` on ``<state>.lock``) for a load-act-save cycle; a lock
        file that cannot be created or opened (a directory vmdev may not write, a lock file another
        user owns, a path through a file) is a :class:`StateError` naming the state file."""
        _make_directory(self.path)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open its lock file {json.dumps(str(self.lock_path))}: {exc.strerror}",
                             device=str(self.path)) from None
        try:
            _flock(fd, timeout, str(self.path))
            yield
        finally:
            os.close(fd)  # releases the lock


class StateJournal:
    """Appends each change of a sandbox's books to its state file as one line (see the module
    documentation), and compacts the file (a new snapshot, written atomically) once the lines
    would pass the snapshot's size (at least ``compact_bytes``) or number ``compact_lines``: the
    cost of a change follows the change, not the sandbox, and loading reads at most twice a
    snapshot, or a snapshot and ``compact_bytes`` of lines for a small sandbox (in which each
    device a line stores is structured only if no later line replaces it: :func:`_replay`).

    It appends to the file only when the books start from the state this process loaded from
    that very file (same inode and size, nothing written since) or last wrote to it; otherwise
    its first change writes a snapshot. A failed write makes the next change write a snapshot
    too. Call it under :meth:`StateFile.locked` when other processes may change the sandbox.
    """

    def __init__(self, file: StateFile | str | os.PathLike[str], *, compact_bytes: int = COMPACT_BYTES,
                 compact_lines: int = COMPACT_LINES) -> None:
        self.file = file if isinstance(file, StateFile) else StateFile(Path(file))
        self.compact_bytes = compact_bytes
        self.compact_lines = compact_lines
        self._layout: _Layout | None = None
        #: what this journal wrote: snapshots (compactions) and appended lines
        self.compactions = 0
        self.appends = 0

    def begin(self, state: SandboxState, *, continues: bool) -> None:
        known = _KNOWN.get(str(self.file.path))
        held = known.state if known is not None else None
        fits = continues and held is not None and held.devices is state.devices \
            and held.ports == state.ports and held.allocations == state.allocations
        self._layout = known if fits else None

    def record(self, change: StateChange, current: Callable[[], SandboxState]) -> None:
        layout = self._layout
        if layout is None:
            self.compact(current())
            return
        if change.empty:
            return
        line = _json_line(change.to_json())
        if layout.journal_bytes + len(line) > max(layout.snapshot_bytes, self.compact_bytes) \
                or layout.lines >= self.compact_lines:
            self.compact(current())
            return
        self._append(layout, line, current)

    def compact(self, state: SandboxState) -> None:
        """Replace the file by a snapshot of ``state`` (atomically), with no journal lines."""
        self._layout = None
        _remember(self.file.path, None)
        data = encode(state)
        write_atomically(self.file.path, data)
        self.compactions += 1
        try:
            identity = _identity(os.stat(self.file.path))
        except OSError:
            return
        self._layout = _Layout(identity, len(data), 0, 0, state)
        _remember(self.file.path, self._layout)

    def _append(self, layout: _Layout, line: bytes, current: Callable[[], SandboxState]) -> None:
        path = self.file.path
        self._layout = None  # until the line is on the disk: a failure compacts next time
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            self.compact(current())  # gone or replaced: start again
            return
        try:
            if _identity(os.fstat(fd)) != layout.identity:  # changed by someone else: start again
                os.close(fd)
                fd = -1
                self.compact(current())
                return
            _write_all(fd, line)
            os.fsync(fd)
        except OSError as exc:
            raise StateError(f"cannot append to the state file: {exc.strerror}", device=str(path)) from None
        finally:
            if fd >= 0:
                os.close(fd)
        dev, ino, size = layout.identity
        self._layout = attrs.evolve(layout, identity=(dev, ino, size + len(line)), state=None,
                                    journal_bytes=layout.journal_bytes + len(line), lines=layout.lines + 1)
        _remember(path, self._layout)
        self.appends += 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _flock(fd: int, timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise StateError(f"cannot lock the state file: {exc.strerror}", device=name) from None
        if time.monotonic() > deadline:
            raise StateLockedError(
                f"another process has held the state file's lock for {timeout:.0f} s", device=name
            )
        time.sleep(0.02)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content."""
    directory = path.parent if str(path.parent) else Path(".")
    _make_directory(path)
    temp = directory / f".{path.name}{_TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise StateError(f"cannot write the state file: {exc.strerror}", device=str(path)) from None
    _fsync_directory(directory)
    _remove_stale_temps(directory, path.name)


def _make_directory(path: Path) -> None:
    """Create the state file's directory if it is missing; :class:`StateError` naming ``path`` when
    that fails (a file on the way: ``/etc/passwd/x.json``; a parent vmdev may not write)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's answer for a file where a directory should be
        raise StateError(f"cannot create its directory: {json.dumps(str(path.parent))} is not a directory",
                         device=str(path)) from None
    except OSError as exc:
        raise StateError(f"cannot create its directory {json.dumps(str(path.parent))}: {exc.strerror}",
                         device=str(path)) from None


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        # a directory vmdev may write but not read (mode -wx) cannot be opened to be flushed: the
        # rename is done and stays as durable as the file system makes it; failing here would
        # report a change as failed that the state file already shows
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StateError(f"cannot flush the state file's directory: {exc.strerror}",
                         device=str(directory)) from None
    finally:
        os.close(fd)


def _remove_stale_temps(directory: Path, name: str) -> None:
    """Remove temporary files that processes killed in the middle of a save left behind."""
    prefix = f".{name}{_TEMP_MARK}"
    try:
        entries = [entry for entry in os.listdir(directory) if entry.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid_text = entry[len(prefix) :].split("-", 1)[0]
        # a pid of more than 10 digits is no process (and would overflow os.kill)
        if pid_text.isascii() and pid_text.isdigit() and (len(pid_text) > 10 or not _alive(int(pid_text))):
            with contextlib.suppress(OSError):
                (directory / entry).unlink()


def _alive(pid: int) -> bool:
    if not 0 < pid <= MAX_PID:  # no process has it (os.kill would overflow, 0 is our own group)
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (for reporting interrupted attachments)."""
    return pid > 0 and _alive(pid)


__all__ = [
    "MAX_COUNT",
    "OLDEST_STATE_VERSION",
    "STATE_FORMAT",
    "STATE_VERSION",
    "COMPACT_BYTES",
    "COMPACT_LINES",
    "AttachPhase",
    "Attachment",
    "ChangeJournal",
    "DeviceRecord",
    "PortRecord",
    "SandboxState",
    "StateCorruptError",
    "Step",
    "StateError",
    "StateChange",
    "StateFile",
    "StateJournal",
    "StateLockedError",
    "StateVersionError",
    "decode",
    "encode",
    "from_document",
    "process_alive",
    "record_to_json",
    "steps_json",
    "to_document",
    "write_atomically",
]
