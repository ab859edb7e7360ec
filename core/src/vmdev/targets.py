"""Render targets: what ``attach_options`` renders for, and what it returns.

One target object exists per plan. Its class belongs to the backend (``QemuTarget`` in
:mod:`vmdev.backends.qemu`, ...): it carries the sandbox settings and the services a plugin needs
while rendering (for QEMU the device transport and the PCIe topology). The plugin returns an
immutable attach value of the target's ``attach_type``; the backend assembles them into its part
of the plan. The core knows only this base class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import attrs

from vmdev.backend import Attachment, RenderContext
from vmdev.settings import SandboxSettings

#: the virtio transports of QEMU-like machines (``QemuTarget.transport``)
PCI: Final = "pci"
MMIO: Final = "mmio"
CCW: Final = "ccw"

#: what a target's attach value is, whatever the backend
AttachOptions = Attachment


@attrs.frozen
class ApiRequest:
    """One REST request to a hypervisor API (Cloud Hypervisor, Firecracker)."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.body is not None:
            out["body"] = dict(self.body)
        return out


def request_tuple(value: Iterable[ApiRequest]) -> tuple[ApiRequest, ...]:
    return tuple(value)


@attrs.define
class RenderTarget:
    """Base of the per-plan render targets; each backend has its own subclass.

    ``hypervisor`` is the backend's name and ``attach_type`` the type ``attach_options`` must
    return for it. ``context`` holds the plan's services (:class:`vmdev.backend.RenderContext`).
    """

    hypervisor: ClassVar[str] = ""
    attach_type: ClassVar[type[Any]] = object
    settings: SandboxSettings
    context: RenderContext = attrs.field(factory=RenderContext)

    def record(self, key: str, device: str, value: str) -> Mapping[str, str]:
        """Note ``value`` for ``device`` under ``key``; every note under ``key`` so far.

        ``attach_options`` sees one device at a time. Notes let a plugin apply a rule
        across the devices of one plan (one backend kind per sandbox, a host resource
        passed twice) without global state: the result maps each device that recorded
        under ``key`` to its value, in plan order, this one included. The notes live
        and die with this target (the device manager keeps a sandbox's notes).
        """
        return self.context.notes.record(key, device, value)

    @property
    def ports_taken(self) -> tuple[str, ...]:
        """The running VM's hot-plug ports handed out while rendering (none by default)."""
        return ()

    def spare_ports(self, hot_devices: set[str]) -> list[tuple[str, str]]:
        """``(port id, kind)`` of the boot plan's hot-plug ports that no cold-plugged device uses
        (``hot_devices`` name the devices left for hot plug); none by default."""
        return []
