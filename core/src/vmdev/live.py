"""Changing a running VM: the live-driver protocol the device manager drives, whatever the hypervisor.

A backend that can change its running VM registers a live driver (``Backend.live(connection)``,
with the command-line options it needs as ``Backend.live_options``: QEMU's ``--qmp SOCKET``). The
device manager (:mod:`vmdev.manager`) knows only this module's :class:`HotPlugger` protocol and the
**steps** the backend rendered: the JSON objects of the attach value's ``hotplug`` and ``unplug``
(QMP commands for QEMU, ``{"attach": xml}`` for a libvirt backend), saved as they are in the
sandbox's state. A backend without a live driver still renders steps; the manager then keeps the
books only (the runtime sends the requests itself, as for Cloud Hypervisor and Firecracker).

The driver runs steps in order and rolls back on failure (:meth:`HotPlugger.plug`), waits for the
guest when unplugging (:meth:`HotPlugger.unplug`), removes what an interrupted attach left
(:meth:`HotPlugger.cleanup`), reports the free hot-plug ports and what of a device is present. A
driver that can tell which VM object each step creates, removes or refers to
(:class:`ObjectAware`, ``step_objects``) lets the manager share objects that several devices' steps
create (a controller, an IOMMU backend object, shared memory): created with their first user,
removed with their last.

QEMU's driver is :class:`vmdev.qmp.QmpHotPlugger`; its names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from vmdev.errors import UnsupportedError, VmdevError
from vmdev.lazy import lazy_exports
from vmdev.state import PortRecord, Step, steps_json

if TYPE_CHECKING:
    from vmdev.targets import AttachOptions

#: ``progress(n)``: the n-th step completed
Progress = Callable[[int], None]


# --- errors ------------------------------------------------------------------------------------------
class HotplugError(VmdevError):
    """A hot plug or unplug did not complete.

    ``steps_done`` steps had completed; ``leftovers`` are the undo steps (JSON) that may still have
    something to remove in the VM; ``uncertain`` means the VM's state is unknown (the connection
    broke in the middle of a step).
    """

    def __init__(
        self,
        message: str,
        *,
        device: str = "",
        field: str = "hotplug",
        steps_done: int = 0,
        leftovers: Sequence[Any] = (),
        uncertain: bool = False,
    ) -> None:
        self.steps_done = steps_done
        self.leftovers: tuple[Step, ...] = steps_json(leftovers)
        self.uncertain = uncertain
        super().__init__(message, device=device, field=field)


class DetachTimeoutError(HotplugError):
    """The guest did not release a device in time."""


class VmUnreachableError(HotplugError):
    """The VM could not be reached before the first step: nothing was sent, nothing is uncertain.
    The manager leaves the device as it was (a detach does not become a detach under way), as when
    vmdev connected before it opened the sandbox's state."""


# --- the protocol ------------------------------------------------------------------------------------
class HotPlugger(Protocol):
    """A live driver: what the device manager drives to change a running VM.

    Every method may talk to the hypervisor (and block); the manager never calls one while it holds
    its lock. ``steps`` are JSON objects as the backend rendered them.
    """

    def free_ports(self) -> Sequence[PortRecord]:
        """The hot-plug ports of the VM with no device behind them, in a stable order. Asked of the
        VM itself: ``vmdev status`` calls it to tell whether the VM is reachable."""

    def check_ready(self, attach: AttachOptions, *, device: str) -> None:
        """Raise :class:`~vmdev.errors.UnsupportedError` if the VM lacks what ``attach`` (the
        backend's rendering, hot-plugged) needs from boot."""

    def plug(self, steps: Sequence[Step], *, device: str, progress: Progress) -> None:
        """Run ``steps`` in order; on failure undo what was done (last first) and raise
        :class:`HotplugError` (:class:`VmUnreachableError` when the VM could not be reached before
        the first step, here and in :meth:`unplug` and :meth:`cleanup`). ``progress(n)`` is called
        after the n-th step completed."""

    def unplug(self, steps: Sequence[Step], *, device: str, progress: Progress) -> None:
        """Run unplug ``steps`` in order, waiting for the guest to release devices and skipping
        what is gone already (so a stopped detach can be run again)."""

    def cleanup(self, steps: Sequence[Step], *, device: str) -> None:
        """Undo whatever of ``steps`` (hot-plug steps that may have run) is still in the VM."""

    def presence(self, steps: Sequence[Step]) -> list[tuple[str, bool]]:
        """For each object ``steps`` create: (what, present in the VM now)."""

    def close(self) -> None:
        """Let go of the connection (idempotent)."""


@attrs.frozen(kw_only=True)
class StepObjects:
    """The VM objects one step is about: the one it ``creates`` or ``removes`` (its name, ``""``
    when none), the names it ``refers`` to, and the step that would ``undo`` its creation."""

    creates: str = ""
    removes: str = ""
    refers: frozenset[str] = frozenset()
    undo: Step | None = None


@runtime_checkable
class ObjectAware(Protocol):
    """A live driver that knows which VM objects a step creates, removes and refers to. The device
    manager then shares objects between devices: a step creating what another attached device's
    steps created already is skipped, and a step removing what another attached device still uses
    is left to that device (see :mod:`vmdev.manager`)."""

    def step_objects(self, step: Step) -> StepObjects: ...


#: the protocol under the name the backends use for it
LiveDriver = HotPlugger


# --- what a rendering asks of the VM -----------------------------------------------------------------
@attrs.frozen(kw_only=True)
class LiveSteps:
    """The steps that plug a rendered device into a running VM and unplug it again (both empty
    when nothing reaches the hypervisor, as for a device that stays in the container)."""

    hotplug: tuple[Step, ...] = attrs.field(default=(), converter=steps_json)
    unplug: tuple[Step, ...] = attrs.field(default=(), converter=steps_json)


def rendered_steps(attach: AttachOptions, *, device: str) -> LiveSteps:
    """The live steps of ``attach``, any backend's attach value: its ``hotplug`` and ``unplug``
    (JSON objects, or objects with ``to_json()``) when it was rendered for hot plug. A rendering
    for cold plug only that carries anything for the hypervisor cannot reach a running VM:
    :class:`~vmdev.errors.UnsupportedError`."""
    if attach.hotplugged:
        return LiveSteps(hotplug=getattr(attach, "hotplug", ()), unplug=getattr(attach, "unplug", ()))
    if not _carries_nothing(attach):
        raise UnsupportedError(
            "cannot be hot-plugged into the running VM: its plugin renders it for cold plug only "
            "(put it in the boot plan instead)",
            device=device,
            field="hotplug",
        )
    return LiveSteps()


def _carries_nothing(attach: Any) -> bool:
    """Whether ``attach`` equals its type's empty value, details and the hot-plug flag aside."""
    kind = type(attach)
    try:
        empty = kind()
    except TypeError:
        return False
    if not attrs.has(kind):
        return bool(attach == empty)
    ignored = {"details", "hotplugged"}
    return all(
        getattr(attach, f.name) == getattr(empty, f.name) for f in attrs.fields(kind) if f.name not in ignored
    )


def describe_step(step: Step) -> str:
    """A step in a few words: its top-level strings, then the first value of its first nested object
    (``device_del virtio-x`` for QMP, ``PUT /vm.remove-device dev0`` for an API request)."""
    words = [value for value in step.values() if isinstance(value, str)]
    nested = next((value for value in step.values() if isinstance(value, Mapping) and value), None)
    if nested is not None:
        first = next(iter(nested.values()))
        if isinstance(first, str | int):
            words.append(str(first))
    return " ".join(words) or "(a step)"


# --- QEMU's driver, importable from here as before ---------------------------------------------------
_QMP_NAMES: Final = (
    "PORT_TYPES", "UNDO", "QmpCommandError", "QmpConnectionError", "QmpError", "QmpHotPlugger", "QmpSession",
    "QmpTimeoutError", "QmpTransport", "describe", "undo_command", "undo_steps",
)
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(_QMP_NAMES, "vmdev.qmp"))


__all__ = [
    "DetachTimeoutError",
    "HotPlugger",
    "HotplugError",
    "LiveDriver",
    "LiveSteps",
    "ObjectAware",
    "Progress",
    "StepObjects",
    "VmUnreachableError",
    "describe_step",
    "rendered_steps",
]
