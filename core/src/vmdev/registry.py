"""The books of a sandbox, hypervisor-neutral: its devices by key, their counts, users, phases, the
sandbox's allocations and spare ports.

:class:`Registry` is what :class:`vmdev.manager.DeviceManager` keeps its state in. It never talks to
a hypervisor and never calls a plugin: every method is quick and runs under the registry's lock (a
re-entrant lock inside a condition variable), so counts stay exact however many threads share a
manager. What takes time (hot plug, unplug, waiting for the guest) happens **outside** the lock, in
three steps:

1. under the lock, the device is *claimed* (:meth:`Registry.claim`: marked busy in this process)
   and its phase saved (``attaching``/``detaching``, with the pid, in its attachment);
2. the manager talks to the VM without the lock (:meth:`Registry.begin_io` marks that), reporting
   progress through short locked updates;
3. under the lock, the result is stored and the claim released (:meth:`Registry.release`).

A thread that wants to attach, detach or remove a busy device waits (:meth:`Registry.idle`) and
then sees the committed result: a second attach of a device being plugged counts once the plug
succeeded, or plugs it itself after a failure. A device deciding what to share with others waits
for the sharing devices whose VM I/O is under way (:meth:`Registry.in_io_records`; those wait for nothing,
so waits never form a cycle). Count changes of devices that are not busy never wait. Every change
is passed to the ``journal`` (the CLI saves it), under the lock, so saves are in order: a
:class:`vmdev.state.ChangeJournal` (the CLI's :class:`vmdev.state.StateJournal`) gets what changed
(a :class:`vmdev.state.StateChange`), a plain callable the whole new state.

**Cost.** What a change does under the lock does not grow with the sandbox: devices are indexed by
key, sandbox devices and busy devices are kept apart, the held hot-plug ports are counted and the
render notes of the devices in the VM are merged as they change (issue 13). Only the whole-state
reads (:meth:`Registry.snapshot`, :meth:`Registry.records`, :meth:`Registry.in_vm`) walk every
device.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from vmdev.errors import InvalidIdError, VmdevError, one_line
from vmdev.live import describe_step
from vmdev.models import DEVICE_GENERIC, DeviceInfo, device_key
from vmdev.resources import SCOPE_SEPARATOR, Allocator, ScopedAllocator
from vmdev.settings import SandboxSettings
from vmdev.state import (
    MAX_COUNT,
    Attachment,
    AttachPhase,
    ChangeJournal,
    DeviceRecord,
    PortRecord,
    SandboxState,
    StateChange,
    StateFile,
    process_alive,
)

#: what receives every change: a :class:`~vmdev.state.ChangeJournal` (told what changed) or a
#: callable given the whole new state; a state file's bound ``save`` is taken as that file's
#: :class:`~vmdev.state.StateJournal` (the file holds the same state, written change by change)
Journal = Callable[[SandboxState], None] | ChangeJournal


# --- errors ------------------------------------------------------------------------------------------
class ManagerError(VmdevError):
    """A device manager operation is not possible in the sandbox's current state."""


class DeviceNotFoundError(ManagerError):
    """No device with this id (or for this request) exists in the sandbox."""


class DeviceNotAttachedError(ManagerError):
    """Detaching a device that is not attached."""


class DeviceAttachedError(ManagerError):
    """Removing a device that is still attached (or still partly in the VM)."""


class CountOverflowError(ManagerError):
    """An attach or reference count would pass :data:`vmdev.state.MAX_COUNT`."""


class DeviceIdConflictError(InvalidIdError):
    """Two different devices of the sandbox would have the same id."""


class NotAUserError(ManagerError):
    """A user (container) releases a device it does not use."""


class HostChangedError(ManagerError):
    """The host changed under a device of a saved sandbox (a fact it was built from differs now)."""


# --- device keys -------------------------------------------------------------------------------------
def sandbox_key(device_id: str) -> str:
    return f"sandbox {device_id}"


def needs_host_path(info: DeviceInfo) -> bool:
    """Whether the key of ``info`` depends on its host path (files and FIFOs)."""
    return info.is_block_file or info.dev_type == "p"


def build_scope(key: str) -> str:
    """The allocator scope of the device with ``key``: its numbers are freed with it."""
    from vmdev.qemu import blake2b  # CPython's BLAKE2 without hashlib (which loads OpenSSL)

    return "build:" + blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _footprint(attachment: Attachment | None) -> Any:
    """What other devices' renderings and sharing depend on: a change bumps the generation."""
    if attachment is None:
        return None
    return (attachment.buses, attachment.notes, attachment.hotplug, attachment.unplug, attachment.shared)


# --- the registry ------------------------------------------------------------------------------------
@attrs.define
class _RecordingAllocator(ScopedAllocator):
    """A device's scoped view of the sandbox's pools that tells the registry what it takes, so the
    journal gets the allocations that changed, not all of them."""

    taken: Callable[[str, int, str], None] = attrs.field(kw_only=True)
    released: Callable[[str], None] = attrs.field(kw_only=True)

    def take(self, pool: str, owner: str, *, limit: int, device: str = "", start: int = 0) -> int:
        index = super().take(pool, owner, limit=limit, device=device, start=start)
        self.taken(pool, index, self.scope + SCOPE_SEPARATOR + owner)
        return index

    def release(self, owner: str) -> None:
        self.released(self.scope + SCOPE_SEPARATOR + owner)
        super().release(owner)


class _Notes:
    """The render notes of the devices in the VM, merged as :meth:`Registry.seed_notes` gives them,
    kept up to date per change: ``sources`` holds each note's value per device (the device
    created last wins, as when merging in creation order), ``merged`` the winners. Inner dicts of
    ``merged`` are replaced, never changed, so a merged view handed out stays as it was."""

    def __init__(self) -> None:
        self.sources: dict[str, dict[str, dict[str, str]]] = {}
        self.merged: dict[str, dict[str, str]] = {}

    def change(self, device_id: str, before: Mapping[str, Mapping[str, str]],
               after: Mapping[str, Mapping[str, str]], order: Mapping[str, int]) -> None:
        touched: dict[str, set[str]] = {}
        for key, inner in before.items():
            for name in inner:
                self.sources.get(key, {}).get(name, {}).pop(device_id, None)
                touched.setdefault(key, set()).add(name)
        for key, inner in after.items():
            for name, value in inner.items():
                self.sources.setdefault(key, {}).setdefault(name, {})[device_id] = value
                touched.setdefault(key, set()).add(name)
        for key, names in touched.items():
            merged = dict(self.merged.get(key, {}))
            for name in names:
                winner = self.winner(key, name, order, besides="")
                if winner is None:
                    merged.pop(name, None)
                    self.sources[key].pop(name, None)
                else:
                    merged[name] = winner
            if merged:
                self.merged[key] = merged
            else:
                self.merged.pop(key, None)
                self.sources.pop(key, None)

    def winner(self, key: str, name: str, order: Mapping[str, int], *, besides: str) -> str | None:
        values = {d: v for d, v in self.sources.get(key, {}).get(name, {}).items() if d != besides}
        if not values:
            return None
        return values[max(values, key=order.__getitem__)]


class Registry:
    """A sandbox's devices, counts, allocations and ports (see the module documentation)."""

    def __init__(self, state: SandboxState, journal: Journal | None = None) -> None:
        self.settings: SandboxSettings = state.settings
        self._cond = threading.Condition(threading.RLock())
        self._records: dict[str, DeviceRecord] = {}
        self._alloc = Allocator.restore(state.allocations)
        self.ports: tuple[PortRecord, ...] = state.ports
        self._busy: dict[str, str] = {}
        #: busy devices whose VM I/O is under way (they wait for nothing any more)
        self._io: set[str] = set()
        #: bumped whenever a device's footprint in the VM changes (ports, notes, steps)
        self.generation = 0
        # indexes (see the module documentation: per-change work must not grow with the sandbox)
        self._order: dict[str, int] = {}
        self._made = 0
        self._by_key: dict[str, list[str]] = {}
        self._sandbox: dict[str, None] = {}
        self._buses: dict[str, int] = {}
        self._notes = _Notes()
        self._scopes: dict[str, dict[tuple[str, int], str]] = {}
        #: devices whose attachment changed since :meth:`attachment_changes` was last asked
        self._attachments_changed: dict[str, None] = {}
        for pool, used in state.allocations.items():
            for index, owner in used.items():
                scope = owner.split(SCOPE_SEPARATOR, 1)[0]
                self._scopes.setdefault(scope, {})[(pool, int(index))] = owner
        for record in state.devices:
            self._records[record.id] = record
            self._index(None, record)
        # what changed since the journal was last told
        self._put: dict[str, DeviceRecord] = {}
        self._drop: dict[str, None] = {}
        self._alloc_changes: dict[str, dict[int, str | None]] = {}
        self._ports_changed = False
        self._journal_fn: Callable[[SandboxState], None] | None = None
        self._recorder: ChangeJournal | None = None
        self._set_journal(journal, state)

    # --- the journal ---------------------------------------------------------------------------
    @property
    def journal(self) -> Journal | None:
        return self._recorder if self._recorder is not None else self._journal_fn

    @journal.setter
    def journal(self, journal: Journal | None) -> None:
        with self._cond:
            self._set_journal(journal, None)

    def _set_journal(self, journal: Journal | None, state: SandboxState | None) -> None:
        """A change journal starts from ``state`` (the state the registry was made with, which its
        file may hold already) or, set later, from the whole current state."""
        self._clear_changes()
        owner = getattr(journal, "__self__", None)
        if isinstance(owner, StateFile) and getattr(journal, "__func__", None) is StateFile.save:
            journal = owner.journal()  # `journal=file.save`: the same file, written change by change
        if isinstance(journal, ChangeJournal):
            self._recorder, self._journal_fn = journal, None
            journal.begin(state if state is not None else self.snapshot(), continues=state is not None)
        else:
            self._recorder, self._journal_fn = None, journal

    def _clear_changes(self) -> None:
        self._put, self._drop, self._alloc_changes, self._ports_changed = {}, {}, {}, False

    def journal_now(self) -> None:
        with self._cond:
            self._journal()

    def _journal(self) -> None:
        if self._recorder is not None:
            change = StateChange(put=tuple(self._put.values()), drop=tuple(self._drop),
                                 allocations=self._alloc_changes,
                                 ports=self.ports if self._ports_changed else None)
            self._clear_changes()
            self._recorder.record(change, self.snapshot)
        else:
            self._clear_changes()
            if self._journal_fn is not None:
                self._journal_fn(self.snapshot())

    # --- the lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._cond:
            yield

    def wait(self) -> None:
        """Wait (releasing the lock) until a claim is released."""
        self._cond.wait()

    def claim(self, device_id: str, what: str) -> None:
        """Mark the device busy with ``what`` (``attaching``...): other threads wait for it."""
        assert device_id not in self._busy, device_id
        self._busy[device_id] = what

    def release(self, device_id: str) -> None:
        with self._cond:
            self._busy.pop(device_id, None)
            self._io.discard(device_id)
            self._cond.notify_all()

    def busy(self, device_id: str) -> bool:
        return device_id in self._busy

    def begin_io(self, device_id: str) -> None:
        """The claimed device's VM I/O starts (its steps are decided and saved)."""
        assert device_id in self._busy, device_id
        self._io.add(device_id)

    def end_io(self, device_id: str) -> None:
        with self._cond:
            self._io.discard(device_id)
            self._cond.notify_all()

    def in_io_records(self, *, besides: str) -> list[DeviceRecord]:
        """The devices whose VM I/O is under way, ``besides`` excepted, in creation order: a device
        deciding what to share waits for them (and only for them: a device doing I/O never waits,
        so waits cannot form a cycle)."""
        with self._cond:
            ids = sorted((d for d in self._io if d != besides and d in self._records),
                         key=self._order.__getitem__)
            return [r for r in map(self._records.__getitem__, ids) if r.attachment is not None]

    def idle(self, device_id: str) -> DeviceRecord:
        """The device once no other thread of this process is attaching, detaching or removing it
        (the caller holds the lock)."""
        while device_id in self._busy:
            self._cond.wait()
        return self.get(device_id)

    # --- queries -------------------------------------------------------------------------------
    def get(self, device_id: str) -> DeviceRecord:
        with self._cond:
            record = self._records.get(device_id)
            if record is None:
                raise DeviceNotFoundError(
                    "device with specified ID hasn't been created", device=device_id, field="id"
                )
            return record

    def find(self, device_id: str) -> DeviceRecord | None:
        with self._cond:
            return self._records.get(device_id)

    def records(self) -> list[DeviceRecord]:
        with self._cond:
            return list(self._records.values())

    def by_key(self, key: str) -> DeviceRecord | None:
        with self._cond:
            ids = self._by_key.get(key)
            return self._records[ids[0]] if ids else None

    def sandbox_device(self, name: str) -> DeviceRecord | None:
        """The sandbox device (no request) whose id or kind is ``name``, if exactly one is."""
        with self._cond:
            matches = [r for r in map(self._records.__getitem__, self._sandbox) if name in (r.id, r.kind)]
            return matches[0] if len(matches) == 1 else None

    def in_vm(self, *, besides: str) -> list[DeviceRecord]:
        """The devices with something in the VM (attached, resident, or an operation under way or
        interrupted), ``besides`` excepted."""
        with self._cond:
            return [r for r in self._records.values() if r.attachment is not None and r.id != besides]

    def held_buses(self) -> set[str]:
        """The hot-plug ports some device of the sandbox has taken."""
        with self._cond:
            return set(self._buses)

    def unheld(self, ports: Iterable[PortRecord]) -> list[PortRecord]:
        """``ports`` without those a device of the sandbox has taken."""
        with self._cond:
            return [port for port in ports if port.id not in self._buses]

    def seed_notes(self, *, besides: str = "") -> dict[str, dict[str, str]]:
        """The render notes of every device in the VM (a plugin's cross-device rules see them).
        The inner dicts are shared with the registry: read them, do not change them."""
        with self._cond:
            seed = dict(self._notes.merged)
            record = self._records.get(besides)
            if record is None or record.attachment is None:
                return seed
            for key, inner in record.attachment.notes.items():
                merged = dict(seed.get(key, {}))
                for name in inner:
                    value = self._notes.winner(key, name, self._order, besides=besides)
                    if value is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = value
                if merged:
                    seed[key] = merged
                else:
                    seed.pop(key, None)
            return seed

    def attachment_changes(self) -> list[str]:
        """The devices whose attachment changed (or that were forgotten) since the last call: the
        manager keeps its shared-object index up to date with them."""
        with self._cond:
            changed = list(self._attachments_changed)
            self._attachments_changed.clear()
            return changed

    def order(self, device_id: str) -> int:
        """Where the device comes in creation order (as :meth:`records` lists them)."""
        return self._order[device_id]

    @property
    def allocator(self) -> Allocator:
        return self._alloc

    def scoped(self, scope: str) -> Allocator:
        """The allocator view a device is built with (its numbers are freed with it)."""
        view = self._alloc.scoped(scope)
        return _RecordingAllocator(pools=view._pools, scope=scope, taken=self._taken,
                                   released=self._released)

    def release_scope(self, scope: str) -> None:
        """Free the numbers taken through :meth:`scoped` view ``scope`` (a device that was not made)."""
        with self._cond:
            held = self._scopes.pop(scope, {})
            for pool, index in held:
                self._alloc_changes.setdefault(pool, {})[index] = None
            for owner in set(held.values()):  # not release_scope: that looks at every owner
                self._alloc.release(owner)

    def _taken(self, pool: str, index: int, owner: str) -> None:
        with self._cond:
            self._scopes.setdefault(owner.split(SCOPE_SEPARATOR, 1)[0], {})[(pool, index)] = owner
            self._alloc_changes.setdefault(pool, {})[index] = owner

    def _released(self, owner: str) -> None:
        with self._cond:
            held = self._scopes.get(owner.split(SCOPE_SEPARATOR, 1)[0], {})
            for (pool, index), holder in list(held.items()):
                if holder == owner:
                    del held[(pool, index)]
                    self._alloc_changes.setdefault(pool, {})[index] = None

    def snapshot(self) -> SandboxState:
        with self._cond:
            return SandboxState(
                settings=self.settings,
                devices=tuple(self._records.values()),
                allocations=self._alloc.snapshot(),
                ports=self.ports,
            )

    # --- changes -------------------------------------------------------------------------------
    def store(self, record: DeviceRecord) -> DeviceRecord:
        with self._cond:
            before = self._records.get(record.id)
            self._records[record.id] = record
            self._index(before, record)
            if before is None or _footprint(before.attachment) != _footprint(record.attachment):
                self.generation += 1
            self._put[record.id] = record
            self._journal()
            return record

    def update(self, device_id: str, **changes: Any) -> DeviceRecord:
        """Store the current record of ``device_id`` with ``changes``."""
        with self._cond:
            return self.store(attrs.evolve(self.get(device_id), **changes))

    def update_attachment(self, device_id: str, **changes: Any) -> DeviceRecord:
        """Store the device with its attachment changed (it must have one)."""
        with self._cond:
            record = self.get(device_id)
            assert record.attachment is not None, device_id
            return self.store(attrs.evolve(record, attachment=attrs.evolve(record.attachment, **changes)))

    def forget(self, record: DeviceRecord) -> None:
        """Drop the device and free its build-time numbers."""
        with self._cond:
            record = self._records.pop(record.id)
            self._index(record, None)
            self.release_scope(build_scope(record.key))
            self.generation += 1
            self._put.pop(record.id, None)
            self._drop[record.id] = None
            self._journal()

    def set_ports(self, ports: Sequence[PortRecord]) -> None:
        with self._cond:
            self.ports = tuple(ports)
            self._ports_changed = True
            self._journal()

    def _index(self, before: DeviceRecord | None, after: DeviceRecord | None) -> None:
        """Keep the indexes in step with one record's change (under the lock)."""
        device_id = (after or before).id  # type: ignore[union-attr]
        if before is None:
            self._made += 1
            self._order[device_id] = self._made
        if before is not None and (after is None or after.key != before.key):
            ids = self._by_key[before.key]
            ids.remove(device_id)
            if not ids:
                del self._by_key[before.key]
        if after is not None and (before is None or after.key != before.key):
            ids = self._by_key.setdefault(after.key, [])
            ids.append(device_id)
            if len(ids) > 1:  # two devices with one key (never made so by the manager): the first wins
                ids.sort(key=self._order.__getitem__)
        if after is not None and after.info is None:
            self._sandbox[device_id] = None
        else:
            self._sandbox.pop(device_id, None)
        self._index_attachment(device_id, before.attachment if before else None,
                               after.attachment if after else None)
        if after is None:
            del self._order[device_id]

    def _index_attachment(self, device_id: str, old: Attachment | None, new: Attachment | None) -> None:
        if old is new:
            return
        self._attachments_changed[device_id] = None
        old_buses, new_buses = (old.buses if old else ()), (new.buses if new else ())
        if old_buses != new_buses:
            for bus in old_buses:
                self._buses[bus] -= 1
                if not self._buses[bus]:
                    del self._buses[bus]
            for bus in new_buses:
                self._buses[bus] = self._buses.get(bus, 0) + 1
        old_notes, new_notes = (old.notes if old else {}), (new.notes if new else {})
        if old_notes != new_notes:
            self._notes.change(device_id, old_notes, new_notes, self._order)

    # --- counts and users ----------------------------------------------------------------------
    def reference(self, record: DeviceRecord, user: str) -> DeviceRecord:
        """One more reference (by ``user``, when named)."""
        with self._cond:
            record = self.get(record.id)
            if record.ref_count >= MAX_COUNT:
                raise CountOverflowError(
                    "device was referenced too many times", device=record.name, field="ref_count"
                )
            users = (*record.users, user) if user else record.users
            return self.store(attrs.evolve(record, ref_count=record.ref_count + 1, users=users))

    @staticmethod
    def without_user(record: DeviceRecord, user: str) -> tuple[str, ...]:
        """The users once ``user`` released one reference; :class:`NotAUserError` if it holds none."""
        if not user:
            return record.users
        if user not in record.users:
            holders = ", ".join(sorted(set(record.users))) or "none named"
            raise NotAUserError(
                f"{user} does not use this device (its users: {holders})", device=record.name, field="user"
            )
        users = list(record.users)
        users.remove(user)
        return tuple(users)

    def check_id_free(self, device_id: str, name: str) -> None:
        with self._cond:
            other = self._records.get(device_id)
            if other is not None:
                raise DeviceIdConflictError(
                    f"id {device_id!r} is already used by {other.name}", device=name, field="id"
                )


# --- reporting ---------------------------------------------------------------------------------------
def describe_status(record: DeviceRecord) -> str:
    """Where the device stands, in words (``vmdev status``), including interrupted operations. A
    generic device (the core's kind for a node that stays in the container, as Kata's) is never in
    the VM: the boot plan books it as attached, which only means a container uses it.

    Always one line (:func:`vmdev.errors.one_line`): the error texts and steps it quotes come from
    the state file, and so from QEMU or whoever wrote the file."""
    return one_line(_status_words(record))


def _status_words(record: DeviceRecord) -> str:
    attachment = record.attachment
    if record.kind == DEVICE_GENERIC and not (attachment and (attachment.hotplug or attachment.unplug)):
        return "stays in the container (nothing in the VM)"
    if attachment is None:
        return "attached" if record.attach_count else "not attached"
    total = len(attachment.hotplug)
    if attachment.phase is AttachPhase.ATTACHED:
        if not attachment.resident:
            return "attached"
        why = "cold-plugged at boot" if not attachment.hotplug else "cannot be unplugged"
        return f"in the VM ({why})" + ("" if record.attach_count else ", not attached")
    if attachment.phase is AttachPhase.ATTACHING:
        if process_alive(attachment.pid) and attachment.pid != os.getpid():
            return f"attaching: process {attachment.pid}, {attachment.steps_done} of {total} steps done"
        return (
            f"attach interrupted after {attachment.steps_done} of {total} steps (process {attachment.pid} "
            "is gone); parts may be in the VM until the next attach or remove cleans them up"
        )
    if attachment.phase is AttachPhase.DETACHING:
        steps = len(attachment.unplug)
        if attachment.error:
            return f"detach stopped after {attachment.steps_done} of {steps} steps: {attachment.error}"
        if process_alive(attachment.pid) and attachment.pid != os.getpid():
            return f"detaching: process {attachment.pid}, {attachment.steps_done} of {steps} steps done"
        return (
            f"detach interrupted after {attachment.steps_done} of {steps} steps "
            f"(process {attachment.pid} is gone)"
        )
    left = "; ".join(describe_step(step) for step in attachment.leftovers)
    return f"attach failed: {attachment.error}" + (f"; may be left in the VM: {left}" if left else "")


def merge_notes(
    base: Mapping[str, Mapping[str, str]], more: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    merged = {key: dict(inner) for key, inner in base.items()}
    for key, inner in more.items():
        merged.setdefault(key, {}).update(inner)
    return merged


__all__ = [
    "CountOverflowError",
    "DeviceAttachedError",
    "DeviceIdConflictError",
    "DeviceNotAttachedError",
    "DeviceNotFoundError",
    "HostChangedError",
    "Journal",
    "ManagerError",
    "NotAUserError",
    "Registry",
    "build_scope",
    "describe_status",
    "device_key",
    "merge_notes",
    "needs_host_path",
    "sandbox_key",
]
