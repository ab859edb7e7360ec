"""The persisted state of a sandbox: its devices, their counts and attachments, its allocations.

A :class:`SandboxState` is what the device manager (:mod:`vmdev.manager`) saves between two
invocations of ``vmdev attach``/``detach``/``status``: versioned JSON (cattrs), written
atomically by :class:`StateFile`. It names no hypervisor's vocabulary: an attachment keeps the live
steps its backend rendered as JSON (QMP commands for QEMU, ``{"attach": xml}`` for a libvirt
backend), a device its saved form (rebuilt by its family's ``device_from_state`` hook) and the
host facts it was built from. The settings are saved as written, never their derived typed
``values`` (the device manager prepares them again when it loads the sandbox).

Writing:

1. the JSON goes to a temporary file in the same directory (``O_EXCL``, mode 0600),
2. which is flushed to the disk (``fsync``),
3. renamed over the state file (``rename`` is atomic on POSIX file systems),
4. and the directory is flushed too, so the rename itself survives a crash.

A process killed at any point leaves either the previous state or the new one, never a mix;
an interrupted write leaves only a temporary file, which the next save of another process
removes. A state file written by a newer vmdev (a higher ``version``) or one that is not a
valid state is refused with :class:`StateVersionError` / :class:`StateCorruptError`, never
guessed at. Older layouts still load: version 1 (steps as QMP commands, no host facts) reads as
version 2 with no facts recorded. :meth:`StateFile.locked` serialises the load-act-save cycles of
several processes.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from vmdev._convert import any_dict
from vmdev.errors import VmdevError
from vmdev.models import DeviceInfo, PCIePort
from vmdev.qemu import check_id
from vmdev.serialize import converter as _base_converter
from vmdev.settings import SandboxSettings

#: the ``format`` key of every state file
STATE_FORMAT: Final = "vmdev-sandbox-state"
#: the newest state layout this vmdev reads and the one it writes
STATE_VERSION: Final = 2
#: the oldest layout it still reads (version 1: no host facts, no shared objects)
OLDEST_STATE_VERSION: Final = 1
#: attach and reference counts saturate here (Kata: the largest uint); going past is an error
MAX_COUNT: Final = 2**32 - 1
#: how long :meth:`StateFile.locked` waits for another process's lock
LOCK_TIMEOUT: Final = 120.0
_TEMP_MARK: Final = ".tmp-"


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


def _qemu_id(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    check_id(value, field=attribute.name)


#: one live step as its backend rendered it, in JSON (``{"execute": ..., "arguments": {...}}`` for QMP)
Step = Mapping[str, Any]


def _step(value: Any) -> dict[str, Any]:
    """A step as JSON: a mapping, or an object with ``to_json()`` (a ``QmpCommand``)."""
    to_json = getattr(value, "to_json", None)
    data = to_json() if callable(to_json) else value
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
    pid: int = attrs.field(default=0, validator=_non_negative)
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


# --- JSON ------------------------------------------------------------------------------------------
def _strict(kind: type) -> Callable[[Any, Any], Any]:
    """A structure hook that accepts ``kind`` only (cattrs would convert ``"2"`` to 2)."""

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got a boolean")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


#: what the state keeps of the settings: everything but the typed ``values`` (derived from the rest)
_DERIVED_SETTINGS: Final = ("values",)


def _make_converter() -> cattrs.Converter:
    conv = _base_converter.copy()
    conv.register_structure_hook(Any, lambda value, _: value)
    for kind in (int, str, bool, float):
        conv.register_structure_hook(kind, _strict(kind))
    # str-based enums must not fall to the str hook above
    conv.register_structure_hook(AttachPhase, lambda value, kind: kind(value))
    conv.register_structure_hook(PCIePort, lambda value, kind: kind(value))
    # the base converter's attrs factories (un)structure nested classes with the base converter:
    # make this one's own, so that the strict hooks and the settings hooks below apply at any depth
    def renames(cls: type[Any]) -> dict[str, Any]:
        fields = attrs.fields(cls)
        return {f.name: override(rename=f.name.rstrip("_")) for f in fields if f.name.endswith("_")}

    conv.register_unstructure_hook_factory(attrs.has, lambda c: make_dict_unstructure_fn(
        c, conv, **renames(c)
    ))
    conv.register_structure_hook_factory(attrs.has, lambda c: make_dict_structure_fn(c, conv, **renames(c)))
    settings_out = make_dict_unstructure_fn(
        SandboxSettings, conv, **{name: override(omit=True) for name in _DERIVED_SETTINGS}  # type: ignore[arg-type]
    )
    settings_in = make_dict_structure_fn(
        SandboxSettings, conv, **{name: override(omit=True) for name in _DERIVED_SETTINGS}  # type: ignore[arg-type]
    )
    conv.register_unstructure_hook(SandboxSettings, settings_out)
    conv.register_structure_hook(SandboxSettings, settings_in)
    return conv


_converter = _make_converter()


def to_document(state: SandboxState) -> dict[str, Any]:
    """The JSON document of ``state`` (``format`` and ``version`` first)."""
    body = _converter.unstructure(state)
    document: dict[str, Any] = {"format": STATE_FORMAT, "version": STATE_VERSION}
    document.update(body)
    return document


def record_to_json(record: DeviceRecord) -> dict[str, Any]:
    """One device record as JSON (as it appears in the state file)."""
    data: dict[str, Any] = _converter.unstructure(record)
    return data


def encode(state: SandboxState) -> bytes:
    try:
        # compact: the indented form forces Python's slow encoder (32 of 44 ms per save of a
        # 1,000-device sandbox, issue 13); `python -m json.tool` shows a state file readably
        text = json.dumps(to_document(state), separators=(",", ":"), allow_nan=False)
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
    try:
        return _converter.structure(body, SandboxState)
    except cattrs.BaseValidationError as exc:
        first = cattrs.transform_error(exc, path="$", format_exception=_describe)[0]
        message, _, path = first.rpartition(" @ ")
        raise StateCorruptError(f"invalid state: {message}", device=source, field=path) from None
    except (VmdevError, TypeError, ValueError, KeyError) as exc:
        raise StateCorruptError(f"invalid state: {_describe(exc, None)}", device=source, field="$") from None


def _describe(exc: BaseException, expected: Any) -> str:
    """One problem of a state document, in words (cattrs' ``format_exception``)."""
    if isinstance(exc, VmdevError):
        return f"{exc.field}: {exc.message}" if exc.field else exc.message
    if isinstance(exc, KeyError):
        return "required field missing"
    if expected is not None and isinstance(exc, ValueError | TypeError | AttributeError):
        return f"invalid value, expected {getattr(expected, '__name__', expected)}"
    return str(exc) or type(exc).__name__


def decode(data: bytes, *, source: str = "") -> SandboxState:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateCorruptError(f"is not valid JSON: {exc}", device=source) from None
    return from_document(document, source=source)


# --- the file --------------------------------------------------------------------------------------
@attrs.frozen
class StateFile:
    """A state file on disk: atomic saves, strict loads, and a lock for load-act-save cycles."""

    path: Path = attrs.field(converter=Path)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> SandboxState:
        """The saved state; :class:`StateError` when the file is missing, unreadable or invalid."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise StateError("no such state file", device=str(self.path)) from None
        except OSError as exc:
            raise StateError(f"cannot read the state file: {exc.strerror}", device=str(self.path)) from None
        return decode(data, source=str(self.path))

    def load_or(self, default: SandboxState) -> SandboxState:
        """The saved state, or ``default`` when there is no state file yet."""
        return self.load() if self.exists() else default

    def save(self, state: SandboxState) -> None:
        """Replace the state file with ``state`` atomically (see the module documentation)."""
        write_atomically(self.path, encode(state))

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold an exclusive lock (``flock`` on ``<state>.lock``) for a load-act-save cycle."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _flock(fd, timeout, str(self.path))
            yield
        finally:
            os.close(fd)  # releases the lock


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
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".{path.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
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


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
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
        if pid_text.isdigit() and not _alive(int(pid_text)):
            with contextlib.suppress(OSError):
                (directory / entry).unlink()


def _alive(pid: int) -> bool:
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
    "AttachPhase",
    "Attachment",
    "DeviceRecord",
    "PortRecord",
    "SandboxState",
    "StateCorruptError",
    "Step",
    "StateError",
    "StateFile",
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
