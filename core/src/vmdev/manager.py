"""The sandbox device manager: one registry of a sandbox's devices, shared by its containers.

:func:`vmdev.planner.plan` is stateless. A runtime also needs what Kata Containers' device
manager and sandbox give it, and :class:`DeviceManager` is that:

* **devices with counts.** :meth:`~DeviceManager.new_device` resolves a request and returns
  the sandbox's device for it, creating it or referencing the existing one (the same
  ``major:minor`` of the same class, or the same host path for files and FIFOs): each
  container that uses a device holds one reference. :meth:`~DeviceManager.attach` and
  :meth:`~DeviceManager.detach` move the attach count; only the first attach plugs the device
  into the VM and only the last detach unplugs it. :meth:`~DeviceManager.remove` drops a
  reference and forgets the device with its last one; it is refused while the device is
  attached. Counts saturate at :data:`vmdev.state.MAX_COUNT` with an error.
* **allocations that outlive a plan.** A sandbox keeps one :class:`~vmdev.resources.Allocator`.
  ``build_device`` receives a view of it scoped to the device, freed when the device is removed,
  so plugins get the smallest free number (a drive index, a SCSI address) and numbers freed by
  a detach and remove are reused. Hot-plug ports are the free ports of the running VM (asked
  from the :class:`~vmdev.live.HotPlugger`), or the spare ports the boot plan recorded, one
  device per port; a full VM is an error naming the setting that adds ports.
* **live hot plug** through a :class:`~vmdev.live.HotPlugger` (:class:`vmdev.live.QmpHotPlugger`
  for QEMU): failed attaches are rolled back, detaches wait for the guest. Without a hot plugger
  the manager only keeps the books.
* **persisted state.** :meth:`~DeviceManager.snapshot` is a :class:`~vmdev.state.SandboxState`;
  :meth:`~DeviceManager.save`/:meth:`~DeviceManager.load` write and read it atomically, and a
  ``journal`` callback receives every change (the CLI saves each one, so an interrupted hot plug
  is visible in the state file).
* **thread safety.** Every public method runs under one lock.

Attachments are recorded as :class:`~vmdev.state.Attachment`: the QMP commands that plugged the
device (and unplug it), the ports it took, and its phase. A device that stays in the VM while
no container attaches it (cold-plugged at boot, or one QEMU cannot unplug) is *resident*: its
attach count may go to 0, and attaching it again only counts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from vmdev.backend import RenderContext
from vmdev.errors import ConfigError, DeviceError, InvalidIdError, UnsupportedError, VmdevError
from vmdev.host import HostContext
from vmdev.live import HotplugError, HotPlugger
from vmdev.models import Device, DeviceInfo
from vmdev.oci import OciSpec
from vmdev.planner import Pipeline, Plan, PlannedDevice
from vmdev.plugins import PluginManager
from vmdev.qemu import MemoryNeeds, QemuAttach, QmpCommand, check_id
from vmdev.resources import Allocator
from vmdev.serialize import to_json
from vmdev.settings import SandboxSettings
from vmdev.state import (
    MAX_COUNT,
    Attachment,
    AttachPhase,
    DeviceRecord,
    PortRecord,
    SandboxState,
    StateFile,
    process_alive,
)
from vmdev.targets import AttachOptions, RenderTarget

log = logging.getLogger("vmdev.manager")

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


def _needs_host_path(info: DeviceInfo) -> bool:
    return info.is_block_file or info.dev_type == "p"


def _build_scope(key: str) -> str:
    return "build:" + hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


# --- render targets that keep the sandbox's books -----------------------------------------------------
@attrs.define
class _Notes:
    """``RenderTarget.record`` for the manager: the notes of the sandbox's attached devices
    (``seed``) plus those of the device being rendered (``notes``, kept in its attachment)."""

    seed: dict[str, dict[str, str]] = attrs.Factory(dict)
    notes: dict[str, dict[str, str]] = attrs.Factory(dict)

    def begin(self) -> None:
        self.notes = {}

    def record(self, key: str, device: str, value: str) -> Mapping[str, str]:
        self.notes.setdefault(key, {})[device] = value
        merged = dict(self.seed.get(key, {}))
        merged.update(self.notes[key])
        return merged


# --- the manager -------------------------------------------------------------------------------------
class DeviceManager:
    """The devices of one sandbox (see the module documentation).

    ``settings`` are fixed for the sandbox's life; with ``state`` (a saved sandbox) they come
    from it. ``hotplugger`` changes the running VM (None: keep the books only); ``journal``
    receives the new state after every change.
    """

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        state: SandboxState | None = None,
        host: HostContext | None = None,
        plugins: PluginManager | None = None,
        hotplugger: HotPlugger | None = None,
        journal: Journal | None = None,
    ) -> None:
        if state is not None and settings is not None and settings != state.settings:
            raise ConfigError(
                "a saved sandbox keeps the settings it was created with; do not pass others",
                field="settings",
            )
        state = state or SandboxState(settings=settings or SandboxSettings())
        self._settings = state.settings
        self._pipeline = Pipeline.start(state.settings, host, plugins)
        self._host = self._pipeline.host
        self._pm = self._pipeline.pm
        self.hotplugger = hotplugger
        self.journal = journal
        self._lock = threading.RLock()
        self._records: dict[str, DeviceRecord] = {r.id: r for r in state.devices}
        self._alloc = Allocator.restore(state.allocations)
        self._ports = state.ports
        self._objects: dict[str, Device] = {}

    # --- loading and saving --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> DeviceManager:
        """A manager for the sandbox saved in ``path`` (``kwargs`` as for the constructor)."""
        return cls(state=StateFile(Path(path)).load(), **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole sandbox to ``path`` atomically."""
        StateFile(Path(path)).save(self.snapshot())

    def snapshot(self) -> SandboxState:
        """The sandbox as a :class:`~vmdev.state.SandboxState` (immutable)."""
        with self._lock:
            return SandboxState(
                settings=self._settings,
                devices=tuple(self._records.values()),
                allocations=self._alloc.snapshot(),
                ports=self._ports,
            )

    @property
    def settings(self) -> SandboxSettings:
        return self._settings

    @property
    def allocator(self) -> Allocator:
        """The sandbox's allocator (read it; the manager changes it)."""
        return self._alloc

    # --- queries -------------------------------------------------------------------------------
    def get(self, device_id: str) -> DeviceRecord:
        """The device with this id; :class:`DeviceNotFoundError` if there is none."""
        with self._lock:
            return self._get(device_id)

    def devices(self) -> list[DeviceRecord]:
        """Every device of the sandbox, in creation order."""
        with self._lock:
            return list(self._records.values())

    def is_attached(self, device_id: str) -> bool:
        with self._lock:
            record = self._records.get(device_id)
            return record is not None and record.attach_count > 0

    def find(self, info: DeviceInfo) -> DeviceRecord | None:
        """The sandbox's device for this request (resolved like :meth:`new_device`), or None."""
        with self._lock:
            return self._by_key(device_key(self._resolved(info, for_key=True)))

    def find_sandbox_device(self, name: str) -> DeviceRecord | None:
        """The sandbox device (RNG, ...) with this id or kind, if the sandbox has it."""
        with self._lock:
            matches = [r for r in self._records.values() if r.info is None and name in (r.id, r.kind)]
            return matches[0] if len(matches) == 1 else None

    # --- devices -------------------------------------------------------------------------------
    def new_device(self, info: DeviceInfo, *, user: str = "") -> DeviceRecord:
        """The sandbox's device for ``info``: an existing one gains a reference, else a new one is
        resolved and built (reference count 1). ``user`` names the container, for status."""
        with self._lock:
            resolved = self._resolved(info, for_key=False)
            existing = self._by_key(device_key(resolved))
            if existing is not None:
                return self._reference(existing, user)
            record = self._build(resolved, user)
            self._store(record)
            return record

    def new_sandbox_device(self, name: str, *, user: str = "") -> DeviceRecord:
        """The sandbox device (``sandbox_devices`` hook) whose id or kind is ``name``: ``rng0``
        or ``rng``. An existing one gains a reference."""
        with self._lock:
            device, plugin = self._sandbox_device(name)
            return self._register_sandbox(device, plugin, user)

    def remove(self, device_id: str, *, user: str = "") -> DeviceRecord | None:
        """Drop one reference (``user``'s, when named). The last one forgets the device and frees
        its build-time allocations; that is refused while it is attached or partly in the VM
        (:class:`DeviceAttachedError`). A resident device stays, with no references. Returns the
        device, or None when it was forgotten."""
        with self._lock:
            record = self._get(device_id)
            users = self._without_user(record, user)
            if record.ref_count > 1:
                return self._store(attrs.evolve(record, ref_count=record.ref_count - 1, users=users))
            if record.attach_count > 0:
                raise DeviceAttachedError(
                    f"can't remove attached device (attached {record.attach_count} time(s)); detach it first",
                    device=record.name,
                    field="attach_count",
                )
            attachment = record.attachment
            if attachment is not None and not attachment.resident:
                self._clean_up(record, attachment)
                record = self._get(device_id)
            if record.attachment is not None:  # resident: it stays in the VM
                return self._store(attrs.evolve(record, ref_count=0, users=users))
            self._forget(record)
            return None

    def attach(self, device_id: str) -> DeviceRecord:
        """Attach the device once more; the first attach plugs it into the VM."""
        with self._lock:
            record = self._get(device_id)
            if record.attach_count >= MAX_COUNT:
                raise CountOverflowError(
                    "device was attached too many times", device=record.name, field="attach_count"
                )
            attachment = record.attachment
            if record.attach_count > 0 or (attachment is not None and attachment.resident):
                return self._store(attrs.evolve(record, attach_count=record.attach_count + 1))
            if attachment is not None:  # an earlier attach failed or was interrupted
                self._clean_up(record, attachment)
                record = self._get(device_id)
            return self._plug(record)

    def detach(self, device_id: str) -> DeviceRecord:
        """Detach the device once; the last detach unplugs it (a resident device stays)."""
        with self._lock:
            record = self._get(device_id)
            if record.attach_count == 0:
                raise DeviceNotAttachedError(
                    "device isn't attached (detaching a device that wasn't attached)",
                    device=record.name,
                    field="attach_count",
                )
            if record.attach_count > 1:
                return self._store(attrs.evolve(record, attach_count=record.attach_count - 1))
            return self._unplug(record)

    def add_device(self, info: DeviceInfo, *, user: str = "") -> DeviceRecord:
        """:meth:`new_device` then :meth:`attach`; the reference is dropped again if the attach
        fails (Kata's ``Sandbox.AddDevice``)."""
        with self._lock:
            record = self.new_device(info, user=user)
            return self._attach_or_release(record, user)

    def add_sandbox_device(self, name: str, *, user: str = "") -> DeviceRecord:
        """:meth:`new_sandbox_device` then :meth:`attach` (the reference is dropped on failure)."""
        with self._lock:
            record = self.new_sandbox_device(name, user=user)
            return self._attach_or_release(record, user)

    def release_device(self, device_id: str, *, user: str = "") -> DeviceRecord | None:
        """:meth:`detach` then :meth:`remove`: what a container does when it stops using a device."""
        with self._lock:
            record = self._get(device_id)
            self._without_user(record, user)  # check before changing anything
            self.detach(device_id)
            return self.remove(device_id, user=user)

    # --- the boot plan -------------------------------------------------------------------------
    def plan_boot(self, spec: OciSpec, *, user: str = "") -> Plan:
        """Plan a new sandbox's VM as :func:`vmdev.planner.plan` does, and keep its books.

        Every device is registered with the numbers the plan gave it. Cold-plugged devices are
        resident and attached, with a reference held by ``user`` (the sandbox). Hot-pluggable
        ones get no reference and stay unattached: their numbers are reserved and their ports
        left free until a container attaches them (:meth:`add_device`). The plan's spare ports
        are recorded for later hot plug."""
        with self._lock:
            if self._records:
                raise ManagerError("plan_boot plans a new sandbox, and this one has devices already")
            records = [self.new_device(request.info, user=user) for request in self._pipeline.requests(spec)]
            records += [self._register_sandbox(built.device, built.plugin, user) for built in
                        self._pipeline.sandbox_devices()]
            books = _Notes()
            target = self._target(books, live=False)
            planned: list[PlannedDevice] = []
            hot: list[DeviceRecord] = []
            for record in _unique(records):
                attach = self._render(record, target, books, hotplug=self._settings.hotplug)
                planned.append(_planned(record, self._object(record), attach))
                if attach.hotplugged:
                    hot.append(self._store(attrs.evolve(record, ref_count=0, users=())))
                else:
                    self._store(attrs.evolve(record, attach_count=1, attachment=self._attachment(
                        AttachPhase.ATTACHED, attach, books, [], resident=True)))
                books.seed = _merge_notes(books.seed, books.notes)
            result = self._pipeline.assemble(target, tuple(planned), spec)
            self._ports = tuple(PortRecord(id=port, kind=kind) for port, kind in
                                target.spare_ports({r.name for r in hot}))
            self._journal()
            return result

    # --- internals: records --------------------------------------------------------------------
    def _get(self, device_id: str) -> DeviceRecord:
        record = self._records.get(device_id)
        if record is None:
            raise DeviceNotFoundError(
                "device with specified ID hasn't been created", device=device_id, field="id"
            )
        return record

    def _by_key(self, key: str) -> DeviceRecord | None:
        return next((r for r in self._records.values() if r.key == key), None)

    def _store(self, record: DeviceRecord) -> DeviceRecord:
        self._records[record.id] = record
        self._journal()
        return record

    def _forget(self, record: DeviceRecord) -> None:
        del self._records[record.id]
        self._objects.pop(record.id, None)
        self._alloc.release_scope(_build_scope(record.key))
        self._journal()

    def _journal(self) -> None:
        if self.journal is not None:
            self.journal(self.snapshot())

    def _reference(self, record: DeviceRecord, user: str) -> DeviceRecord:
        if record.ref_count >= MAX_COUNT:
            raise CountOverflowError(
                "device was referenced too many times", device=record.name, field="ref_count"
            )
        users = (*record.users, user) if user else record.users
        return self._store(attrs.evolve(record, ref_count=record.ref_count + 1, users=users))

    def _without_user(self, record: DeviceRecord, user: str) -> tuple[str, ...]:
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

    def _check_id_free(self, device_id: str, name: str) -> None:
        other = self._records.get(device_id)
        if other is not None:
            raise DeviceIdConflictError(
                f"id {device_id!r} is already used by {other.name}", device=name, field="id"
            )

    def _attach_or_release(self, record: DeviceRecord, user: str) -> DeviceRecord:
        try:
            return self.attach(record.id)
        except VmdevError:
            current = self._records.get(record.id)
            if current is not None:
                users = self._without_user(current, user)
                if current.ref_count > 1 or current.attachment is not None:
                    self._store(attrs.evolve(current, ref_count=current.ref_count - 1, users=users))
                else:
                    self._forget(current)
            raise

    # --- internals: building -------------------------------------------------------------------
    def _resolved(self, info: DeviceInfo, *, for_key: bool) -> DeviceInfo:
        if info.host_path and (info.is_block_file or for_key):
            return info
        if for_key and not _needs_host_path(info):
            return info
        return self._pipeline.resolve(info)

    def _build(self, info: DeviceInfo, user: str) -> DeviceRecord:
        key = device_key(info)
        scope = _build_scope(key)
        try:
            answer = self._pipeline.build(info, self._alloc.scoped(scope))
            device = answer.device
            self._check_id_free(device.id, info.name)
        except BaseException:
            self._alloc.release_scope(scope)
            raise
        self._objects[device.id] = device
        return DeviceRecord(
            id=device.id,
            key=key,
            kind=device.kind,
            plugin=answer.plugin,
            container_path=info.container_path,
            host_path=info.host_path,
            info=info,
            device=to_json(device),
            ref_count=1,
            users=(user,) if user else (),
        )

    def _sandbox_device(self, name: str) -> tuple[Device, str]:
        answers = self._pipeline.sandbox_devices()
        matches = [a for a in answers if name in (a.device.id, a.device.kind)]
        if len(matches) != 1:
            offered = ", ".join(f"{a.device.id} ({a.device.kind})" for a in answers) or "none"
            problem = "is ambiguous" if matches else "is not a sandbox device of this sandbox"
            raise DeviceNotFoundError(f"{problem}; the plugins offer: {offered}", device=name, field="id")
        return matches[0].device, matches[0].plugin

    def _register_sandbox(self, device: Device, plugin: str, user: str) -> DeviceRecord:
        key = f"sandbox {device.id}"
        existing = self._by_key(key)
        if existing is not None:
            return self._reference(existing, user)
        check_id(device.id, device=device.id, field="id")
        self._check_id_free(device.id, device.id)
        self._objects[device.id] = device
        return self._store(DeviceRecord(
            id=device.id,
            key=key,
            kind=device.kind,
            plugin=plugin,
            container_path=None,
            host_path=str(getattr(device, "host_path", "") or ""),
            device=to_json(device),
            ref_count=1,
            users=(user,) if user else (),
        ))

    def _object(self, record: DeviceRecord) -> Device:
        """The device object (rebuilt from the recorded request after a load)."""
        device = self._objects.get(record.id)
        if device is not None:
            return device
        if record.info is None:
            device, _ = self._sandbox_device(record.id)
        else:
            scoped = self._alloc.scoped(_build_scope(record.key))
            device = self._pipeline.build(record.info, scoped).device
        if device.id != record.id:
            raise DeviceError(
                f"the plugin now builds this device as {device.id!r}, not as the recorded {record.id!r}; "
                "the host or the plugins changed since it was created",
                device=record.name,
                field="id",
            )
        self._objects[record.id] = device
        return device

    # --- internals: rendering ------------------------------------------------------------------
    def _target(self, books: _Notes, *, live: bool) -> RenderTarget:
        live_ports = self._free_ports if live else None
        return self._pipeline.target(RenderContext(notes=books, live_ports=live_ports))

    def _free_ports(self) -> list[PortRecord]:
        held = {bus for r in self._records.values() if r.attachment is not None for bus in r.attachment.buses}
        ports = self.hotplugger.free_ports() if self.hotplugger is not None else self._ports
        return [p for p in ports if p.id not in held]

    def _render(
        self, record: DeviceRecord, target: RenderTarget, books: _Notes, *, hotplug: bool
    ) -> AttachOptions:
        books.begin()
        return self._pm.attach_options(self._object(record), target, hotplug, name=record.name)

    def _attachment(
        self, phase: AttachPhase, attach: AttachOptions, books: _Notes, buses: Sequence[str],
        *, resident: bool = False,
    ) -> Attachment:
        qemu = attach if isinstance(attach, QemuAttach) else None
        return Attachment(
            phase=phase,
            resident=resident,
            hotplug=qemu.hotplug if qemu is not None and qemu.hotplugged else (),
            unplug=qemu.unplug if qemu is not None and qemu.hotplugged else (),
            buses=tuple(buses),
            notes=books.notes,
            details=to_json(dict(attach.details)),
            pid=os.getpid() if phase in (AttachPhase.ATTACHING, AttachPhase.DETACHING) else 0,
            since=time.time(),
        )

    def _seed_notes(self) -> dict[str, dict[str, str]]:
        seed: dict[str, dict[str, str]] = {}
        for record in self._records.values():
            if record.attachment is not None:
                seed = _merge_notes(seed, record.attachment.notes)
        return seed

    # --- internals: plugging -------------------------------------------------------------------
    def _plug(self, record: DeviceRecord) -> DeviceRecord:
        books = _Notes(seed=self._seed_notes())
        target = self._target(books, live=True)
        attach = self._render(record, target, books, hotplug=True)
        buses = list(target.ports_taken)
        commands = self._hot_commands(record, attach)
        if commands and self.hotplugger is not None and isinstance(attach, QemuAttach):
            self.hotplugger.check_ready(attach, device=record.name)
        if not commands or self.hotplugger is None:
            attachment = self._attachment(AttachPhase.ATTACHED, attach, books, buses)
            resident = bool(commands) and not attachment.unplug
            return self._store(attrs.evolve(record, attach_count=1,
                                            attachment=attrs.evolve(attachment, resident=resident)))
        record = self._store(attrs.evolve(
            record, attachment=self._attachment(AttachPhase.ATTACHING, attach, books, buses)))
        try:
            self.hotplugger.plug(commands, device=record.name, progress=self._progress(record.id))
        except HotplugError as exc:
            self._plug_failed(record.id, exc)
            raise
        current = self._get(record.id)
        assert current.attachment is not None
        attachment = attrs.evolve(current.attachment, phase=AttachPhase.ATTACHED, pid=0, since=time.time(),
                                  steps_done=len(commands), resident=not current.attachment.unplug)
        if attachment.resident:
            log.info("%s cannot be unplugged: it stays in the VM until it stops", record.name)
        return self._store(attrs.evolve(current, attach_count=1, attachment=attachment))

    def _hot_commands(self, record: DeviceRecord, attach: AttachOptions) -> tuple[QmpCommand, ...]:
        if not isinstance(attach, QemuAttach):
            if self.hotplugger is not None:
                raise UnsupportedError(
                    f"live hot plug talks QMP to QEMU; this sandbox runs {self._settings.hypervisor}",
                    device=record.name,
                    field="hypervisor",
                )
            return ()
        if attach.hotplugged:
            return attach.hotplug
        if attach.args or attach.shared_args or attach.machine or attach.memory != MemoryNeeds():
            raise UnsupportedError(
                "cannot be hot-plugged into the running VM: its plugin renders it for cold plug only "
                "(put it in the boot plan instead)",
                device=record.name,
                field="hotplug",
            )
        return ()  # nothing reaches the hypervisor (a generic device)

    def _progress(self, device_id: str) -> Callable[[int], None]:
        def done(steps: int) -> None:
            with self._lock:
                current = self._get(device_id)
                if current.attachment is not None:
                    attachment = attrs.evolve(current.attachment, steps_done=steps)
                    self._store(attrs.evolve(current, attachment=attachment))

        return done

    def _plug_failed(self, device_id: str, exc: HotplugError) -> None:
        current = self._get(device_id)
        assert current.attachment is not None
        if not exc.leftovers and not exc.uncertain:
            self._store(attrs.evolve(current, attachment=None))
            return
        failed = attrs.evolve(current.attachment, phase=AttachPhase.FAILED, steps_done=exc.steps_done,
                              leftovers=exc.leftovers, error=exc.message, pid=0, since=time.time())
        self._store(attrs.evolve(current, attachment=failed))

    def _unplug(self, record: DeviceRecord) -> DeviceRecord:
        attachment = record.attachment
        if attachment is None or attachment.resident:
            return self._store(attrs.evolve(record, attach_count=0))
        if self.hotplugger is not None and attachment.unplug:
            record = self._store(attrs.evolve(record, attachment=attrs.evolve(
                attachment, phase=AttachPhase.DETACHING, steps_done=0, pid=os.getpid(), error="",
                since=time.time())))
            try:
                progress = self._progress(record.id)
                self.hotplugger.unplug(attachment.unplug, device=record.name, progress=progress)
            except HotplugError as exc:
                current = self._get(record.id)
                assert current.attachment is not None
                self._store(attrs.evolve(current, attachment=attrs.evolve(
                    current.attachment, error=exc.message, pid=0, since=time.time())))
                raise
        return self._store(attrs.evolve(self._get(record.id), attach_count=0, attachment=None))

    def _clean_up(self, record: DeviceRecord, attachment: Attachment) -> None:
        """Remove what an interrupted or failed attach (or detach) left in the VM."""
        if attachment.phase is AttachPhase.ATTACHING and process_alive(attachment.pid) \
                and attachment.pid != os.getpid():
            raise ManagerError(
                f"process {attachment.pid} is attaching this device right now",
                device=record.name,
                field="pid",
            )
        if self.hotplugger is not None:
            if attachment.phase is AttachPhase.DETACHING:
                self.hotplugger.unplug(attachment.unplug, device=record.name, progress=lambda _: None)
            else:
                maybe_done = attachment.hotplug[: attachment.steps_done + 1]
                self.hotplugger.cleanup(maybe_done, device=record.name)
        elif attachment.phase is not AttachPhase.ATTACHED:
            raise DeviceAttachedError(
                f"an earlier {attachment.phase.value} may have left parts of it in the VM; connect to "
                "the VM to clean them up",
                device=record.name,
                field="attachment",
            )
        self._store(attrs.evolve(record, attachment=None))


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
    left = "; ".join(f"{c.execute} {next(iter(c.arguments.values()), '')}" for c in attachment.leftovers)
    return f"attach failed: {attachment.error}" + (f"; may be left in the VM: {left}" if left else "")


# --- helpers -----------------------------------------------------------------------------------------
def _unique(records: Sequence[DeviceRecord]) -> list[DeviceRecord]:
    seen: set[str] = set()
    out: list[DeviceRecord] = []
    for record in records:
        if record.id not in seen:
            seen.add(record.id)
            out.append(record)
    return out


def _merge_notes(
    base: Mapping[str, Mapping[str, str]], more: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    merged = {key: dict(inner) for key, inner in base.items()}
    for key, inner in more.items():
        merged.setdefault(key, {}).update(inner)
    return merged


def _planned(record: DeviceRecord, device: Device, attach: AttachOptions) -> PlannedDevice:
    return PlannedDevice(
        device=device,
        plugin=record.plugin,
        container_path=record.container_path,
        host_path=record.host_path,
        attach=attach,
    )


__all__ = [
    "CountOverflowError",
    "DeviceAttachedError",
    "DeviceIdConflictError",
    "DeviceManager",
    "DeviceNotAttachedError",
    "DeviceNotFoundError",
    "ManagerError",
    "NotAUserError",
    "describe_status",
    "device_key",
]
