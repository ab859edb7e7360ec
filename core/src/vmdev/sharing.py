"""Hot-plug objects several devices share: created with their first user, removed with their last.

Some objects a device's hot plug creates are needed by other devices too: a SCSI controller, an
IOMMU backend object, shared guest memory. A family renders them as steps of the device that
needs them (of the first one in the sandbox's notes, or of every one); removing such an object
while another device still uses it fails in the VM (QEMU refuses, or the device is stuck
detaching). The device manager counts their users with :class:`Sharing`, decided from the steps
alone, with the live driver telling what each step creates, removes and refers to
(:class:`vmdev.live.ObjectAware`):

* **plugging**: a step creating an object that an attached device's steps created is skipped
  (the device records the object as ``shared``);
* **removing** (unplug, or undoing an interrupted attach): a step removing an object another
  device in the VM still uses (creates, refers to, removes or shares it) is skipped and handed to
  one of those devices (unless one of them removes it already), whose own removal runs it: the
  object goes with its last user.

Without an object-aware driver (or without a driver: books only) steps run as rendered.

:class:`SharingIndex` makes the same decisions as :class:`Sharing` over every device in the VM
without walking them per change: it keeps what each device's steps create, use and remove, and
which devices use each object, up to date from the devices whose attachment changed (issue 13).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import attrs

from vmdev.live import StepObjects
from vmdev.state import AttachPhase, DeviceRecord, Step

ObjectsOf = Callable[[Step], StepObjects]


@attrs.frozen
class Removal:
    """The removal steps to run, and the ones handed to devices that still use their objects
    (device id -> steps to append to its unplug steps)."""

    steps: tuple[Step, ...]
    handed: Mapping[str, tuple[Step, ...]] = attrs.Factory(dict)


@attrs.frozen
class Sharing:
    """Shared-object decisions over steps; ``objects_of`` is the driver's ``step_objects``
    (None: nothing is shared)."""

    objects_of: ObjectsOf | None

    def uses(self, record: DeviceRecord) -> set[str]:
        """The VM objects ``record``'s steps create, refer to, remove or share."""
        attachment = record.attachment
        if attachment is None or self.objects_of is None:
            return set()
        return self._mentioned(attachment.hotplug, attachment.unplug) | set(attachment.shared)

    def owns(self, record: DeviceRecord) -> set[str]:
        """The objects ``record``'s steps create or remove, and those it shares."""
        attachment = record.attachment
        if attachment is None or self.objects_of is None:
            return set()
        owned = {self._of(step).creates for step in attachment.hotplug}
        owned |= {self._of(step).removes for step in attachment.unplug} | set(attachment.shared)
        owned.discard("")
        return owned

    def conflicts(self, record: DeviceRecord, steps: Sequence[Step], others: Iterable[DeviceRecord]) -> bool:
        """Whether ``record`` (or ``steps``, its new rendering) shares an object with one of
        ``others``: one's steps create or remove what the other's use."""
        if self.objects_of is None:
            return False
        uses = self.uses(record) | self._mentioned(steps, ())
        owns = self.owns(record) | ({self._of(step).creates for step in steps} - {""})
        return any(self.owns(other) & uses or self.uses(other) & owns for other in others)

    def creations(
        self, hotplug: Sequence[Step], others: Iterable[DeviceRecord]
    ) -> tuple[list[Step], list[str]]:
        """The hot-plug steps to run (without those creating what an attached device of ``others``
        created) and the names of the objects the device shares with them."""
        if self.objects_of is None:
            return list(hotplug), []
        present = set().union(*(_analyse(self.objects_of, other).present for other in others))
        return _creations(self.objects_of, hotplug, present.__contains__)

    def removal(
        self, record: DeviceRecord, steps: Sequence[Step], others: Sequence[DeviceRecord], *,
        undo: bool = False,
    ) -> Removal:
        """``record``'s removal ``steps`` (unplug steps; with ``undo``, hot-plug steps to undo)
        without those removing objects a device of ``others`` still uses; each of those removals
        is handed to one of the users (an attached one first) unless a user removes it already."""
        if self.objects_of is None:
            return Removal(steps=tuple(steps))
        devices = {other.id: _analyse(self.objects_of, other) for other in others}
        users: dict[str, list[str]] = {}
        for device_id, objects in devices.items():
            for name in objects.uses:
                users.setdefault(name, []).append(device_id)
        return _removal(self.objects_of, steps, undo, lambda name: users.get(name, []), devices)

    # --- internals -----------------------------------------------------------------------------
    def _of(self, step: Step) -> StepObjects:
        assert self.objects_of is not None
        return self.objects_of(step)

    def _mentioned(self, hotplug: Iterable[Step], unplug: Iterable[Step]) -> set[str]:
        names: set[str] = set()
        for step in hotplug:
            found = self._of(step)
            names |= found.refers | {found.creates}
        names |= {self._of(step).removes for step in unplug}
        names.discard("")
        return names


@attrs.frozen
class _Objects:
    """What one device in the VM does with VM objects."""

    #: the objects its steps create, refer to, remove or share (:meth:`Sharing.uses`)
    uses: frozenset[str]
    #: the objects an attached device's steps created, or that it shares (what others may share)
    present: frozenset[str]
    #: the objects its unplug steps remove
    removes: frozenset[str]
    attached: bool


_NOTHING: Final = _Objects(frozenset(), frozenset(), frozenset(), attached=False)


class SharingIndex:
    """:meth:`Sharing.creations` and :meth:`Sharing.removal` over every device in the VM, from
    indexes updated per changed device (:meth:`update`) instead of a walk over the sandbox. The
    caller serialises its use (the registry's lock) and reports every device whose attachment
    changed; ``order`` gives the devices' creation order (as the walk would meet them)."""

    def __init__(self, objects_of: ObjectsOf, order: Callable[[str], int]) -> None:
        self.objects_of = objects_of
        self._order = order
        self._devices: dict[str, _Objects] = {}
        self._users: dict[str, dict[str, None]] = {}
        self._present: dict[str, dict[str, None]] = {}

    def update(self, device_id: str, record: DeviceRecord | None) -> None:
        """The device's attachment changed (``record``: None when the device is gone)."""
        before = self._devices.pop(device_id, _NOTHING)
        after = _analyse(self.objects_of, record)
        if after is not _NOTHING:
            self._devices[device_id] = after
        for index, old, new in ((self._users, before.uses, after.uses),
                                (self._present, before.present, after.present)):
            for name in old - new:
                holders = index[name]
                del holders[device_id]
                if not holders:
                    del index[name]
            for name in new - old:
                index.setdefault(name, {})[device_id] = None

    def creations(self, device_id: str, hotplug: Sequence[Step]) -> tuple[list[Step], list[str]]:
        """:meth:`Sharing.creations` of ``hotplug`` against every other device in the VM."""
        return _creations(self.objects_of, hotplug,
                          lambda name: bool(self._others(self._present, name, device_id)))

    def removal(self, record: DeviceRecord, steps: Sequence[Step], *, undo: bool = False) -> Removal:
        """:meth:`Sharing.removal` of ``record``'s ``steps`` against every other device in the VM."""
        return _removal(self.objects_of, steps, undo, lambda name: self._others(self._users, name, record.id),
                        self._devices)

    def _others(self, index: Mapping[str, Mapping[str, None]], name: str, besides: str) -> list[str]:
        """The devices in ``index`` under ``name`` but ``besides``, in creation order."""
        return sorted((d for d in index.get(name, ()) if d != besides), key=self._order)


def _analyse(objects_of: ObjectsOf, record: DeviceRecord | None) -> _Objects:
    """What ``record``'s steps do with VM objects (nothing for a device not in the VM)."""
    attachment = record.attachment if record is not None else None
    if record is None or attachment is None:
        return _NOTHING
    attached = attachment.phase is AttachPhase.ATTACHED
    present: set[str] = set()
    if attached:
        present = {objects_of(step).creates for step in attachment.hotplug} | set(attachment.shared)
        present.discard("")
    removes = {objects_of(step).removes for step in attachment.unplug} - {""}
    return _Objects(frozenset(Sharing(objects_of).uses(record)), frozenset(present), frozenset(removes),
                    attached=attached)


def _creations(
    objects_of: ObjectsOf, hotplug: Sequence[Step], present: Callable[[str], bool]
) -> tuple[list[Step], list[str]]:
    """The steps to run (not those creating an object already ``present`` in the VM) and the
    objects shared: the one decision of :meth:`Sharing.creations` and :meth:`SharingIndex.creations`."""
    run: list[Step] = []
    shared: list[str] = []
    for step in hotplug:
        found = objects_of(step)
        if found.creates and present(found.creates):
            shared.append(found.creates)
            continue
        run.append(step)
        shared += sorted(name for name in found.refers if name and present(name))
    return run, list(dict.fromkeys(shared))


def _removal(
    objects_of: ObjectsOf, steps: Sequence[Step], undo: bool, holders_of: Callable[[str], Sequence[str]],
    devices: Mapping[str, _Objects],
) -> Removal:
    """The one decision of :meth:`Sharing.removal` and :meth:`SharingIndex.removal`: a step
    removing an object other devices (``holders_of``, in creation order) use is handed to one of
    them (an attached one first) unless one of them removes it already."""
    keep: list[Step] = []
    handed: dict[str, list[Step]] = {}
    for step in steps:
        found = objects_of(step)
        name = found.creates if undo else found.removes
        holders = holders_of(name) if name else []
        if not holders:
            keep.append(step)
            continue
        removing = found.undo if undo else step
        if removing is not None and not any(name in devices[h].removes for h in holders):
            heir = next((h for h in holders if devices[h].attached), holders[0])
            handed.setdefault(heir, []).append(removing)
    return Removal(steps=tuple(keep), handed={key: tuple(value) for key, value in handed.items()})


__all__ = ["ObjectsOf", "Removal", "Sharing", "SharingIndex"]
