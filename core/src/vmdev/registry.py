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
for the sharing devices whose VM I/O is under way (:meth:`Registry.in_io`; those wait for nothing,
so waits never form a cycle). Count changes of devices that are not busy never wait. Every change
is passed to the ``journal`` (the CLI saves it), under the lock, so saves are in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from vmdev.errors import InvalidIdError, VmdevError
from vmdev.live import describe_step
from vmdev.models import DeviceInfo
from vmdev.resources import Allocator
from vmdev.settings import SandboxSettings
from vmdev.state import (
    MAX_COUNT,
    Attachment,
    AttachPhase,
    DeviceRecord,
    PortRecord,
    SandboxState,
    process_alive,
)

Journal = Callable[[SandboxState], None]


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
def device_key(info: DeviceInfo) -> str:
    """What makes two requests the same device: the device number within its class (block or
    character), or the host path for regular files (major -1) and FIFOs. Kata ignores the
    class, so its char 1:3 and block 1:3 collide; here they do not."""
    if info.is_block_file:
        return f"file {info.host_path}"
    if info.dev_type == "p":
        return f"fifo {info.host_path or info.container_path}"
    kind = "block" if info.dev_type == "b" else "char"
    return f"{kind} {info.major}:{info.minor}"


def sandbox_key(device_id: str) -> str:
    return f"sandbox {device_id}"


def needs_host_path(info: DeviceInfo) -> bool:
    """Whether the key of ``info`` depends on its host path (files and FIFOs)."""
    return info.is_block_file or info.dev_type == "p"


def build_scope(key: str) -> str:
    """The allocator scope of the device with ``key``: its numbers are freed with it."""
    return "build:" + hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _footprint(attachment: Attachment | None) -> Any:
    """What other devices' renderings and sharing depend on: a change bumps the generation."""
    if attachment is None:
        return None
    return (attachment.buses, attachment.notes, attachment.hotplug, attachment.unplug, attachment.shared)


# --- the registry ------------------------------------------------------------------------------------
class Registry:
    """A sandbox's devices, counts, allocations and ports (see the module documentation)."""

    def __init__(self, state: SandboxState, journal: Journal | None = None) -> None:
        self.settings: SandboxSettings = state.settings
        self.journal = journal
        self._cond = threading.Condition(threading.RLock())
        self._records: dict[str, DeviceRecord] = {r.id: r for r in state.devices}
        self._alloc = Allocator.restore(state.allocations)
        self.ports: tuple[PortRecord, ...] = state.ports
        self._busy: dict[str, str] = {}
        #: busy devices whose VM I/O is under way (they wait for nothing any more)
        self._io: set[str] = set()
        #: bumped whenever a device's footprint in the VM changes (ports, notes, steps)
        self.generation = 0

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

    def in_io(self, device_id: str) -> bool:
        """Whether the device's VM I/O is under way: a device deciding what to share waits for it
        (and only for it: a device doing I/O never waits, so waits cannot form a cycle)."""
        return device_id in self._io

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
            return next((r for r in self._records.values() if r.key == key), None)

    def sandbox_device(self, name: str) -> DeviceRecord | None:
        """The sandbox device (no request) whose id or kind is ``name``, if exactly one is."""
        with self._cond:
            matches = [r for r in self._records.values() if r.info is None and name in (r.id, r.kind)]
            return matches[0] if len(matches) == 1 else None

    def in_vm(self, *, besides: str) -> list[DeviceRecord]:
        """The devices with something in the VM (attached, resident, or an operation under way or
        interrupted), ``besides`` excepted."""
        with self._cond:
            return [r for r in self._records.values() if r.attachment is not None and r.id != besides]

    def held_buses(self) -> set[str]:
        """The hot-plug ports some device of the sandbox has taken."""
        with self._cond:
            return {bus for r in self._records.values() if r.attachment is not None
                    for bus in r.attachment.buses}

    def seed_notes(self, *, besides: str = "") -> dict[str, dict[str, str]]:
        """The render notes of every device in the VM (a plugin's cross-device rules see them)."""
        seed: dict[str, dict[str, str]] = {}
        for record in self.in_vm(besides=besides):
            assert record.attachment is not None
            for key, inner in record.attachment.notes.items():
                seed.setdefault(key, {}).update(inner)
        return seed

    @property
    def allocator(self) -> Allocator:
        return self._alloc

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
            if before is None or _footprint(before.attachment) != _footprint(record.attachment):
                self.generation += 1
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
            del self._records[record.id]
            self._alloc.release_scope(build_scope(record.key))
            self.generation += 1
            self._journal()

    def set_ports(self, ports: Sequence[PortRecord]) -> None:
        with self._cond:
            self.ports = tuple(ports)
            self._journal()

    def journal_now(self) -> None:
        with self._cond:
            self._journal()

    def _journal(self) -> None:
        if self.journal is not None:
            self.journal(self.snapshot())

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
    """Where the device stands, in words (``vmdev status``), including interrupted operations."""
    attachment = record.attachment
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
