"""The sandbox device manager: one registry of a sandbox's devices, shared by its containers.

:func:`vmdev.planner.plan` is stateless. A runtime also needs what Kata Containers' device
manager and sandbox give it, and :class:`DeviceManager` is that. It is three parts, none of which
knows a device family or a hypervisor:

* **the pipeline** (:class:`vmdev.planner.Pipeline`, the planner's own): requests, host-path
  resolution, building (with the id checks), rendering for the sandbox's backend and assembling a
  boot plan. The manager never re-implements a step of it.
* **the books** (:class:`vmdev.registry.Registry`): devices by key with reference and attach
  counts and users, the sandbox's allocator (``build_device`` gets a view scoped to the device,
  freed with it), the spare ports of the boot plan, every attachment's phase, all persisted as a
  :class:`~vmdev.state.SandboxState` (the ``journal`` gets every change). One lock guards them;
  it is **never held while the VM is talked to**.
* **the backend's live driver** (:class:`vmdev.live.HotPlugger`, from ``Backend.live``; QEMU's
  is :class:`vmdev.qmp.QmpHotPlugger`): hot plug with roll-back, unplug waiting for the guest,
  free hot-plug ports. Without one the manager keeps the books only.

**Counts.** :meth:`~DeviceManager.new_device` resolves a request and returns the sandbox's device
for it, creating it or referencing the existing one (same key: ``major:minor`` within its class,
or the host path for files and FIFOs). :meth:`~DeviceManager.attach` and
:meth:`~DeviceManager.detach` move the attach count; only the first attach plugs the device in
and only the last detach unplugs it. While a device is being plugged or unplugged it is busy:
other threads attaching or detaching *it* wait for the result, everything else goes on.

**Saved devices.** A device is rebuilt from its saved form by its family's ``device_from_state``
hook, never re-probed from the host; the host facts recorded when it was built
(:mod:`vmdev.hostfacts`) are compared when it is attached, and a change is an error naming the
fact (:class:`~vmdev.registry.HostChangedError`).

**Shared objects.** Objects that several devices' hot-plug steps create or use (a controller, an
IOMMU backend object, shared memory) are counted when the live driver can tell what a step
creates, removes and refers to (:class:`vmdev.live.ObjectAware`): a step creating an object that
an attached device's steps created already is skipped, and a step removing an object that another
attached device still uses is skipped and handed to that device, whose own detach removes it
last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vmdev.backend import RenderContext
from vmdev.errors import ConfigError, VmdevError
from vmdev.host import HostContext
from vmdev.hostfacts import DeviceObjects, FactChange
from vmdev.live import HotplugError, HotPlugger, ObjectAware, VmUnreachableError, rendered_steps
from vmdev.models import DEVICE_GENERIC, DeviceInfo
from vmdev.planner import Built, Pipeline, Plan, PlannedDevice, attached_twice
from vmdev.plugins import PluginManager
from vmdev.registry import (
    CountOverflowError,
    DeviceAttachedError,
    DeviceIdConflictError,
    DeviceNotAttachedError,
    DeviceNotFoundError,
    HostChangedError,
    Journal,
    ManagerError,
    NotAUserError,
    Registry,
    build_scope,
    describe_status,
    device_key,
    merge_notes,
    needs_host_path,
    sandbox_key,
)
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
    Step,
    process_alive,
)

if TYPE_CHECKING:
    from vmdev.oci import OciSpec
    from vmdev.sharing import Sharing, SharingIndex


# --- render notes across the sandbox -----------------------------------------------------------------
@attrs.define
class SandboxNotes:
    """``RenderTarget.record`` for the manager: the notes of the sandbox's devices in the VM
    (``seed``) plus those of the device being rendered (``notes``, saved in its attachment), so a
    plugin's cross-device rules hold across hot plugs as within one plan."""

    seed: dict[str, dict[str, str]] = attrs.Factory(dict)
    notes: dict[str, dict[str, str]] = attrs.Factory(dict)

    def begin(self) -> None:
        self.notes = {}

    def commit(self) -> None:
        self.seed = merge_notes(self.seed, self.notes)

    def record(self, key: str, device: str, value: str) -> Mapping[str, str]:
        self.notes.setdefault(key, {})[device] = value
        merged = dict(self.seed.get(key, {}))
        merged.update(self.notes[key])
        return merged


# --- the manager -------------------------------------------------------------------------------------
class DeviceManager:
    """The devices of one sandbox (see the module documentation).

    ``settings`` are fixed for the sandbox's life; with ``state`` (a saved sandbox) they come from
    it. Both are prepared by the pipeline (declared keys parsed, ``check_settings`` run).
    ``hotplugger`` is the backend's live driver for the running VM (None: keep the books only);
    ``journal`` receives every change: a :class:`vmdev.state.ChangeJournal` (a state file's
    :class:`~vmdev.state.StateJournal`, or its bound ``save``) what changed, a plain callable the
    whole new state.
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
        self._pipeline = Pipeline.start(state.settings, host, plugins)
        self._registry = Registry(attrs.evolve(state, settings=self._pipeline.settings), journal)
        self.hotplugger = hotplugger
        self._devices = DeviceObjects(self._pipeline.pm, self._pipeline.host)
        self._shared: SharingIndex | None = None

    # --- loading and saving --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> DeviceManager:
        """A manager for the sandbox saved in ``path`` (``kwargs`` as for the constructor)."""
        return cls(state=StateFile(Path(path)).load(), **kwargs)

    @classmethod
    def open(cls, path: str | os.PathLike[str], settings: SandboxSettings | None = None,
             **kwargs: Any) -> DeviceManager:
        """A manager for the sandbox saved in ``path`` (a new one with ``settings`` when there is
        no state file yet) that records every change in the file, as a journal line
        (:class:`vmdev.state.StateJournal`). Hold :meth:`StateFile.locked` around its use when
        other processes may change the sandbox."""
        file = StateFile(Path(path))
        state = file.load_if_present()
        return cls(settings, state=state, journal=file.journal(), **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole sandbox to ``path`` atomically."""
        StateFile(Path(path)).save(self.snapshot())

    def snapshot(self) -> SandboxState:
        """The sandbox as a :class:`~vmdev.state.SandboxState` (immutable)."""
        return self._registry.snapshot()

    def journal_now(self) -> None:
        """Make sure the journal holds the sandbox as it is: a :class:`~vmdev.state.StateJournal`
        writes its file only when the file does not hold these books yet (a new sandbox, a journal
        set later), a plain callable journal gets the whole state. What the CLI calls at the end
        of a command instead of saving everything again."""
        self._registry.journal_now()

    @property
    def settings(self) -> SandboxSettings:
        """The sandbox's settings, prepared."""
        return self._pipeline.settings

    @property
    def host(self) -> HostContext:
        return self._pipeline.host

    @property
    def plugins(self) -> PluginManager:
        return self._pipeline.pm

    @property
    def allocator(self) -> Allocator:
        """The sandbox's allocator (read it; the manager changes it)."""
        return self._registry.allocator

    @property
    def journal(self) -> Journal | None:
        return self._registry.journal

    @journal.setter
    def journal(self, journal: Journal | None) -> None:
        self._registry.journal = journal

    # --- queries -------------------------------------------------------------------------------
    def get(self, device_id: str) -> DeviceRecord:
        """The device with this id; :class:`DeviceNotFoundError` if there is none."""
        return self._registry.get(device_id)

    def devices(self) -> list[DeviceRecord]:
        """Every device of the sandbox, in creation order."""
        return self._registry.records()

    def is_attached(self, device_id: str) -> bool:
        record = self._registry.find(device_id)
        return record is not None and record.attach_count > 0

    def find(self, info: DeviceInfo) -> DeviceRecord | None:
        """The sandbox's device for this request (resolved like :meth:`new_device`), or None."""
        return self._registry.by_key(device_key(self._resolved(info, for_key=True)))

    def find_sandbox_device(self, name: str) -> DeviceRecord | None:
        """The sandbox device (RNG, ...) with this id or kind, if the sandbox has it."""
        return self._registry.sandbox_device(name)

    def host_changes(self, device_id: str) -> list[FactChange]:
        """The host facts recorded when the device was built that differ now (empty: none)."""
        return self._devices.changes(self._registry.get(device_id))

    # --- devices -------------------------------------------------------------------------------
    def new_device(self, info: DeviceInfo, *, user: str = "") -> DeviceRecord:
        """The sandbox's device for ``info``: an existing one gains a reference, else a new one is
        resolved and built (reference count 1). ``user`` names the container, for status."""
        resolved = self._resolved(info, for_key=False)
        key = device_key(resolved)
        registry = self._registry
        with registry.locked():
            existing = registry.by_key(key)
            if existing is not None:
                return registry.reference(existing, user)
            return registry.store(self._build(resolved, key, user))

    def new_sandbox_device(self, name: str, *, user: str = "") -> DeviceRecord:
        """The sandbox device (``sandbox_devices`` hook) whose id or kind is ``name``: ``rng0``
        or ``rng``. An existing one gains a reference."""
        registry = self._registry
        with registry.locked():
            existing = registry.sandbox_device(name)
            if existing is not None:
                return registry.reference(existing, user)
            return self._register_sandbox(self._sandbox_built(name), user)

    def remove(self, device_id: str, *, user: str = "") -> DeviceRecord | None:
        """Drop one reference (``user``'s, when named). The last one forgets the device and frees
        its build-time allocations; that is refused while it is attached or partly in the VM
        (:class:`DeviceAttachedError`). A resident device stays, with no references. Returns the
        device, or None when it was forgotten."""
        registry = self._registry
        with registry.locked():
            record = registry.idle(device_id)
            if not self._must_clean_up(record, user):
                return self._drop_reference(record, user)
            registry.claim(device_id, "removing")
        try:
            self._clean_up(device_id)
            with registry.locked():
                return self._drop_reference(registry.get(device_id), user)
        finally:
            registry.release(device_id)

    def attach(self, device_id: str) -> DeviceRecord:
        """Attach the device once more; the first attach plugs it into the VM. A device whose host
        changed since it was built is refused (:class:`HostChangedError`)."""
        self._check_host(device_id)
        registry = self._registry
        with registry.locked():
            record = registry.idle(device_id)
            if record.attach_count >= MAX_COUNT:
                raise CountOverflowError(
                    "device was attached too many times", device=record.name, field="attach_count"
                )
            attachment = record.attachment
            if record.attach_count > 0 or (attachment is not None and attachment.resident):
                return registry.store(attrs.evolve(record, attach_count=record.attach_count + 1))
            registry.claim(device_id, "attaching")
        try:
            if record.attachment is not None:  # an earlier attach failed or was interrupted
                self._clean_up(device_id)
            return self._plug(device_id)
        finally:
            registry.release(device_id)

    def detach(self, device_id: str) -> DeviceRecord:
        """Detach the device once; the last detach unplugs it (a resident device stays)."""
        registry = self._registry
        with registry.locked():
            while True:
                record = registry.idle(device_id)
                if record.attach_count == 0:
                    raise DeviceNotAttachedError(
                        "device isn't attached (detaching a device that wasn't attached)",
                        device=record.name,
                        field="attach_count",
                    )
                attachment = record.attachment
                if record.attach_count > 1 or attachment is None or attachment.resident:
                    return registry.store(attrs.evolve(record, attach_count=record.attach_count - 1))
                driver = self.hotplugger
                if driver is None or not attachment.unplug:
                    return registry.store(attrs.evolve(record, attach_count=0, attachment=None))
                if not self._sharers_busy(record):
                    break
                registry.wait()
            removal = self._removal(record, attachment.unplug)
            registry.update_attachment(device_id, phase=AttachPhase.DETACHING, steps_done=0, pid=os.getpid(),
                                       error="", since=time.time())
            registry.claim(device_id, "detaching")
            registry.begin_io(device_id)
        try:
            driver.unplug(removal, device=record.name, progress=self._progress(device_id))
        except VmUnreachableError:
            registry.store(record)  # nothing was sent: the device is attached as it was
            raise
        except HotplugError as exc:
            registry.update_attachment(device_id, error=exc.message, pid=0, since=time.time())
            raise
        else:
            return registry.update(device_id, attach_count=0, attachment=None)
        finally:
            registry.release(device_id)

    def add_device(self, info: DeviceInfo, *, user: str = "") -> DeviceRecord:
        """:meth:`new_device` then :meth:`attach`; the reference is dropped again if the attach
        fails (Kata's ``Sandbox.AddDevice``)."""
        return self._attach_or_release(self.new_device(info, user=user), user)

    def add_sandbox_device(self, name: str, *, user: str = "") -> DeviceRecord:
        """:meth:`new_sandbox_device` then :meth:`attach` (the reference is dropped on failure)."""
        return self._attach_or_release(self.new_sandbox_device(name, user=user), user)

    def release_device(self, device_id: str, *, user: str = "") -> DeviceRecord | None:
        """:meth:`detach` then :meth:`remove`: what a container does when it stops using a device."""
        self._registry.without_user(self._registry.get(device_id), user)  # check before changing anything
        self.detach(device_id)
        return self.remove(device_id, user=user)

    # --- the boot plan -------------------------------------------------------------------------
    def plan_boot(self, spec: OciSpec, *, user: str = "") -> Plan:
        """Plan a new sandbox's VM as :func:`vmdev.planner.plan` does, and keep its books.

        Every device is registered with the numbers the plan gave it. Cold-plugged devices are
        resident and attached, with a reference held by ``user`` (the sandbox). Hot-pluggable
        ones get no reference and stay unattached: their numbers are reserved and their ports
        left free until a container attaches them (:meth:`add_device`). The plan's spare ports
        are recorded for later hot plug. Nothing talks to a VM, so the lock is held throughout."""
        registry, pipeline = self._registry, self._pipeline
        with registry.locked():
            if registry.records():
                raise ManagerError("plan_boot plans a new sandbox, and this one has devices already")
            records = [self._boot_device(request.info, user) for request in pipeline.requests(spec)]
            records += [self._register_sandbox(built, user) for built in pipeline.sandbox_devices()]
            books = SandboxNotes()
            target = pipeline.target(RenderContext(notes=books))
            planned: list[PlannedDevice] = []
            hot: list[str] = []
            for record in _unique(records):
                books.begin()
                rendered = pipeline.render(self._built(record), target, hotplug=self.settings.hotplug)
                planned.append(rendered)
                if rendered.hotplug:
                    hot.append(record.name)
                    registry.store(attrs.evolve(record, ref_count=0, users=()))
                else:
                    registry.store(attrs.evolve(record, attach_count=1, attachment=Attachment(
                        phase=AttachPhase.ATTACHED, resident=True, notes=books.notes,
                        details=to_json(dict(rendered.attach.details)), since=time.time())))
                books.commit()
            result = pipeline.assemble(target, tuple(planned), spec)
            spare = target.spare_ports(set(hot))
            registry.set_ports([PortRecord(id=port, kind=kind) for port, kind in spare])
            return result

    def _boot_device(self, info: DeviceInfo, user: str) -> DeviceRecord:
        """:meth:`new_device` for the boot plan, which refuses a second request of a device the VM
        gets as :func:`vmdev.planner.plan` does (before it takes a reference)."""
        same = self.find(info)
        if same is not None and same.kind != DEVICE_GENERIC:
            raise attached_twice(info.name, same.key, same.name)
        return self.new_device(info, user=user)

    # --- internals: building -------------------------------------------------------------------
    def _resolved(self, info: DeviceInfo, *, for_key: bool) -> DeviceInfo:
        if info.host_path and (info.is_block_file or for_key):
            return info
        if for_key and not needs_host_path(info):
            return info
        return self._pipeline.resolve(info)

    def _build(self, info: DeviceInfo, key: str, user: str) -> DeviceRecord:
        """A new record for a resolved request (under the lock: it takes numbers)."""
        registry = self._registry
        scope = build_scope(key)
        try:
            built = self._pipeline.build(info, registry.scoped(scope))
            device = built.device
            registry.check_id_free(device.id, info.name)
            facts = self._devices.facts(device, info.host_path, info.name)
        except BaseException:
            registry.release_scope(scope)
            raise
        self._devices.keep(device)
        return DeviceRecord(
            id=device.id,
            key=key,
            kind=device.kind,
            plugin=built.plugin,
            container_path=info.container_path,
            host_path=info.host_path,
            info=info,
            device=to_json(device),
            facts=facts,
            ref_count=1,
            users=(user,) if user else (),
        )

    def _sandbox_built(self, name: str) -> Built:
        answers = self._pipeline.sandbox_devices()
        matches = [a for a in answers if name in (a.device.id, a.device.kind)]
        if len(matches) != 1:
            offered = ", ".join(f"{a.device.id} ({a.device.kind})" for a in answers) or "none"
            problem = "is ambiguous" if matches else "is not a sandbox device of this sandbox"
            raise DeviceNotFoundError(f"{problem}; the plugins offer: {offered}", device=name, field="id")
        return matches[0]

    def _register_sandbox(self, built: Built, user: str) -> DeviceRecord:
        registry = self._registry
        device = built.device
        existing = registry.by_key(sandbox_key(device.id))
        if existing is not None:
            return registry.reference(existing, user)
        registry.check_id_free(device.id, device.id)
        facts = self._devices.facts(device, built.host_path, device.id)
        self._devices.keep(device)
        return registry.store(DeviceRecord(
            id=device.id,
            key=sandbox_key(device.id),
            kind=device.kind,
            plugin=built.plugin,
            container_path=None,
            host_path=built.host_path,
            device=to_json(device),
            facts=facts,
            ref_count=1,
            users=(user,) if user else (),
        ))

    def _built(self, record: DeviceRecord) -> Built:
        return Built(device=self._devices.of(record), plugin=record.plugin,
                     container_path=record.container_path, host_path=record.host_path)

    def _check_host(self, device_id: str) -> None:
        found = self.host_changes(device_id)
        if found:
            raise HostChangedError(
                "the host changed since this device was created: "
                + "; ".join(change.describe() for change in found)
                + " (release it, then attach it again to use what the host has now)",
                device=self._registry.get(device_id).name,
                field=found[0].fact,
            )

    # --- internals: references -----------------------------------------------------------------
    def _must_clean_up(self, record: DeviceRecord, user: str) -> bool:
        """Whether dropping ``user``'s reference must first remove the device's remains from the VM."""
        Registry.without_user(record, user)
        if record.ref_count > 1:
            return False
        if record.attach_count > 0:
            raise DeviceAttachedError(
                f"can't remove attached device (attached {record.attach_count} time(s)); detach it first",
                device=record.name,
                field="attach_count",
            )
        return record.attachment is not None and not record.attachment.resident

    def _drop_reference(self, record: DeviceRecord, user: str) -> DeviceRecord | None:
        """Drop one reference (under the lock); the last forgets a device with nothing in the VM."""
        registry = self._registry
        users = registry.without_user(record, user)
        if record.ref_count > 1 or record.attachment is not None:
            if record.ref_count <= 1 and record.attach_count > 0:
                raise DeviceAttachedError(
                    "can't remove attached device; detach it first", device=record.name, field="attach_count"
                )
            return registry.store(attrs.evolve(record, ref_count=max(record.ref_count - 1, 0), users=users))
        registry.forget(record)
        self._devices.forget(record.id)
        return None

    def _attach_or_release(self, record: DeviceRecord, user: str) -> DeviceRecord:
        try:
            return self.attach(record.id)
        except VmdevError:
            registry = self._registry
            with registry.locked():
                current = registry.find(record.id)
                if current is not None:
                    current = registry.idle(record.id)
                    users = registry.without_user(current, user)
                    if current.ref_count > 1 or current.attachment is not None:
                        registry.store(attrs.evolve(current, ref_count=current.ref_count - 1, users=users))
                    else:
                        registry.forget(current)
                        self._devices.forget(current.id)
            raise

    # --- internals: plugging -------------------------------------------------------------------
    def _free_ports(self) -> list[PortRecord]:
        """The VM's free hot-plug ports (the boot plan's spare ones without a VM) that no device of
        the sandbox holds. Called while rendering, without the lock."""
        driver = self.hotplugger
        ports = driver.free_ports() if driver is not None else self._registry.ports
        return self._registry.unheld(ports)

    def _plug(self, device_id: str) -> DeviceRecord:
        """The first attach of a claimed device: render it for the running VM (without the lock; the
        rendering is redone if another device's footprint changed meanwhile), save the attaching
        phase, run the steps without the lock, save the result."""
        registry, driver = self._registry, self.hotplugger
        while True:
            with registry.locked():
                generation = registry.generation
                books = SandboxNotes(seed=registry.seed_notes(besides=device_id))
                record = registry.get(device_id)
            target = self._pipeline.target(RenderContext(notes=books, live_ports=self._free_ports))
            attach = self._pipeline.render(self._built(record), target, hotplug=True).attach
            steps = rendered_steps(attach, device=record.name)
            if steps.hotplug and driver is not None:
                driver.check_ready(attach, device=record.name)
            with registry.locked():
                if registry.generation != generation:
                    continue
                record = registry.get(device_id)
                base = Attachment(phase=AttachPhase.ATTACHED, hotplug=steps.hotplug, unplug=steps.unplug,
                                  buses=target.ports_taken, notes=books.notes,
                                  details=to_json(dict(attach.details)), since=time.time())
                if not steps.hotplug or driver is None:  # nothing reaches the VM, or books only
                    resident = bool(steps.hotplug) and not steps.unplug
                    return registry.store(attrs.evolve(record, attach_count=1,
                                                       attachment=attrs.evolve(base, resident=resident)))
                if self._sharers_busy(record, steps.hotplug):
                    registry.wait()
                    continue
                run, shared = self._creations(device_id, steps.hotplug)
                registry.store(attrs.evolve(record, attachment=attrs.evolve(
                    base, phase=AttachPhase.ATTACHING, hotplug=run, shared=shared, pid=os.getpid())))
                registry.begin_io(device_id)
                break
        try:
            driver.plug(run, device=record.name, progress=self._progress(device_id))
        except HotplugError as exc:
            self._plug_failed(device_id, exc)
            raise
        with registry.locked():
            current = registry.get(device_id)
            assert current.attachment is not None
            attachment = attrs.evolve(current.attachment, phase=AttachPhase.ATTACHED, pid=0,
                                      since=time.time(), steps_done=len(run),
                                      resident=not current.attachment.unplug)
            if attachment.resident:
                _log().info("%s cannot be unplugged: it stays in the VM until it stops", record.name)
            return registry.store(attrs.evolve(current, attach_count=1, attachment=attachment))

    def _progress(self, device_id: str) -> Callable[[int], None]:
        def done(steps: int) -> None:
            with self._registry.locked():
                if self._registry.get(device_id).attachment is not None:
                    self._registry.update_attachment(device_id, steps_done=steps)

        return done

    def _plug_failed(self, device_id: str, exc: HotplugError) -> None:
        registry = self._registry
        with registry.locked():
            current = registry.get(device_id)
            if not exc.leftovers and not exc.uncertain:
                registry.store(attrs.evolve(current, attachment=None))
                return
            registry.update_attachment(device_id, phase=AttachPhase.FAILED, steps_done=exc.steps_done,
                                       leftovers=exc.leftovers, error=exc.message, pid=0, since=time.time())

    def _clean_up(self, device_id: str) -> None:
        """Remove what an interrupted or failed attach (or a stopped detach) left in the VM; the
        device is claimed by the caller."""
        registry, driver = self._registry, self.hotplugger
        with registry.locked():
            while True:
                record = registry.get(device_id)
                attachment = record.attachment
                assert attachment is not None
                if attachment.phase is AttachPhase.ATTACHING and process_alive(attachment.pid) \
                        and attachment.pid != os.getpid():
                    raise ManagerError(
                        f"process {attachment.pid} is attaching this device right now", device=record.name,
                        field="pid",
                    )
                if driver is None:
                    if attachment.phase is not AttachPhase.ATTACHED:
                        raise DeviceAttachedError(
                            f"an earlier {attachment.phase.value} may have left parts of it in the VM; "
                            "connect to the VM to clean them up",
                            device=record.name,
                            field="attachment",
                        )
                    registry.store(attrs.evolve(record, attachment=None))
                    return
                if not self._sharers_busy(record):
                    break
                registry.wait()
            detaching = attachment.phase is AttachPhase.DETACHING
            steps = attachment.unplug if detaching else attachment.hotplug[: attachment.steps_done + 1]
            removal = self._removal(record, steps, undo=not detaching)
            registry.begin_io(device_id)
        try:
            if detaching:
                driver.unplug(removal, device=record.name, progress=lambda _: None)
            else:
                driver.cleanup(removal, device=record.name)
            registry.update(device_id, attachment=None)
        finally:
            registry.end_io(device_id)

    # --- internals: shared objects -------------------------------------------------------------
    # (vmdev.sharing is imported by the first device with VM steps: a generic device, the most
    # common one, has none, and its attach or detach spares the import, ~0.4 ms; issue 13)
    def _sharing(self) -> Sharing:
        from vmdev.sharing import Sharing

        driver = self.hotplugger
        return Sharing(driver.step_objects if isinstance(driver, ObjectAware) else None)

    def _sharers_busy(self, record: DeviceRecord, steps: Sequence[Step] = ()) -> bool:
        """Whether a device of this process that shares a VM object with ``record`` (or with
        ``steps``, its rendering) is being plugged or unplugged right now: sharing is decided once
        that is done (under the lock; only devices doing VM I/O are waited for, and they wait for
        nothing, so waits never form a cycle)."""
        busy = self._registry.in_io_records(besides=record.id)
        return bool(busy) and self._sharing().conflicts(record, steps, busy)

    def _shared_objects(self) -> SharingIndex | None:
        """The shared-object index of the devices in the VM, brought up to date with the devices
        whose attachment changed (under the lock); None without an object-aware driver. Built on
        first use (and for another driver) from every device in the VM."""
        driver, registry = self.hotplugger, self._registry
        if not isinstance(driver, ObjectAware):
            return None
        from vmdev.sharing import SharingIndex

        changed = registry.attachment_changes()
        index = self._shared
        if index is None or index.objects_of != driver.step_objects:
            index = self._shared = SharingIndex(driver.step_objects, registry.order)
            changed = [record.id for record in registry.in_vm(besides="")]
        for device_id in changed:
            index.update(device_id, registry.find(device_id))
        return index

    def _creations(self, device_id: str, hotplug: Sequence[Step]) -> tuple[list[Step], list[str]]:
        index = self._shared_objects()
        return index.creations(device_id, hotplug) if index is not None else (list(hotplug), [])

    def _removal(
        self, record: DeviceRecord, steps: Sequence[Step], *, undo: bool = False
    ) -> tuple[Step, ...]:
        """``record``'s removal steps to run; the removals of objects other devices still use are
        handed to them (stored, under the lock)."""
        from vmdev.sharing import Removal

        registry = self._registry
        index = self._shared_objects()
        removal = index.removal(record, steps, undo=undo) if index else Removal(steps=tuple(steps))
        for heir_id, more in removal.handed.items():
            heir = registry.get(heir_id)
            assert heir.attachment is not None
            registry.update_attachment(heir_id, unplug=(*heir.attachment.unplug, *more))
            _log().info("%s: %s hands the removal of a shared object to %s",
                        record.name, record.id, heir.name)
        return removal.steps


# --- helpers -----------------------------------------------------------------------------------------
def _unique(records: Iterable[DeviceRecord]) -> list[DeviceRecord]:
    seen: set[str] = set()
    out: list[DeviceRecord] = []
    for record in records:
        if record.id not in seen:
            seen.add(record.id)
            out.append(record)
    return out


__all__ = [
    "CountOverflowError",
    "DeviceAttachedError",
    "DeviceIdConflictError",
    "DeviceManager",
    "DeviceNotAttachedError",
    "DeviceNotFoundError",
    "HostChangedError",
    "ManagerError",
    "NotAUserError",
    "SandboxNotes",
    "describe_status",
    "device_key",
]


def _log() -> Any:
    """The manager's logger; :mod:`logging` is imported when something is logged, not by every
    ``vmdev attach`` (start-up time, issue 13)."""
    import logging

    return logging.getLogger("vmdev.manager")
