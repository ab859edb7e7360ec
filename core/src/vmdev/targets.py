"""Hypervisor render targets: what ``attach_options`` renders for, and what it returns.

One target object exists per plan and hypervisor. It carries the sandbox
settings and the services a plugin needs while rendering (the device
transport, a hot-plug port). The plugin returns an immutable attach value of
the target's type (:class:`~vmdev.qemu.QemuAttach`, :class:`ClhAttach`,
:class:`FirecrackerAttach`); the core merges them into the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import attrs

from vmdev._convert import any_dict
from vmdev.errors import UnsupportedError
from vmdev.pcie import MAX_ROOT_PORTS as MAX_ROOT_PORTS
from vmdev.pcie import PcieTopology
from vmdev.qemu import QemuAttach
from vmdev.settings import CLOUD_HYPERVISOR, FIRECRACKER, QEMU, SandboxSettings

PCI: Final = "pci"
MMIO: Final = "mmio"
CCW: Final = "ccw"

_TRANSPORT_SUFFIX: Final = {PCI: "-pci", MMIO: "-device", CCW: "-ccw"}


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


def _req_tuple(value: Iterable[ApiRequest]) -> tuple[ApiRequest, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ClhAttach:
    """Cloud Hypervisor: ``VmConfig`` fragments (list keys are appended) and API bodies."""

    vm_config: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)
    hotplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=_req_tuple)
    unplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=_req_tuple)
    hotplugged: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)


@attrs.frozen(kw_only=True)
class FirecrackerAttach:
    """Firecracker: the API requests that configure the device before boot, or hot-plug it."""

    requests: tuple[ApiRequest, ...] = attrs.field(default=(), converter=_req_tuple)
    hotplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=_req_tuple)
    unplug: tuple[ApiRequest, ...] = attrs.field(default=(), converter=_req_tuple)
    hotplugged: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=any_dict)


AttachOptions = QemuAttach | ClhAttach | FirecrackerAttach


@attrs.define
class RenderTarget:
    """Base of the per-plan render targets."""

    hypervisor: ClassVar[str] = ""
    attach_type: ClassVar[type[Any]] = object
    settings: SandboxSettings
    _notes: dict[str, dict[str, str]] = attrs.field(factory=dict, init=False)

    def record(self, key: str, device: str, value: str) -> Mapping[str, str]:
        """Note ``value`` for ``device`` under ``key``; every note under ``key`` so far.

        ``attach_options`` sees one device at a time. Notes let a plugin apply a rule
        across the devices of one plan (one backend kind per sandbox, a host resource
        passed twice) without global state: the result maps each device that recorded
        under ``key`` to its value, in plan order, this one included. The notes live
        and die with this target.
        """
        notes = self._notes.setdefault(key, {})
        notes[device] = value
        return dict(notes)


@attrs.define
class QemuTarget(RenderTarget):
    """Rendering for QEMU. Owns the plan's PCIe topology (root ports, switches, bridges)."""

    hypervisor: ClassVar[str] = QEMU
    attach_type: ClassVar[type[Any]] = QemuAttach
    _topology: PcieTopology = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: PcieTopology.for_settings(self.settings), takes_self=True),
    )

    @property
    def topology(self) -> PcieTopology:
        """The ports and bridges of this plan: ask it for a place (``root_port``,
        ``switch_port``, ``bridge_slots``, ``root_bus_slots``); see :mod:`vmdev.pcie`."""
        return self._topology

    @property
    def transport(self) -> str:
        """``pci``, ``mmio`` (microvm) or ``ccw`` (s390x), as Kata's govmm picks it."""
        if self.settings.is_microvm:
            return MMIO
        if self.settings.is_ccw:
            return CCW
        return PCI

    def virtio_driver(self, base: str) -> str:
        """The device name for this transport: ``virtio-rng`` -> ``virtio-rng-pci``."""
        return base + _TRANSPORT_SUFFIX[self.transport]

    def hotplug_bus(self, device: str) -> str | None:
        """A bus to hot-plug one PCI device onto, or None for the machine's default bus.

        On a PCIe machine (q35, virt) ``pcie.0`` cannot take hot-plugged
        devices, so each one gets its own ``pcie-root-port`` (Linux scans only
        device 0 behind a port). Machines without hot plug raise.
        """
        if self.transport == MMIO:
            raise UnsupportedError(
                f"machine {self.settings.machine_type} has no hot plug (virtio-mmio); "
                "cold-plug the device instead",
                device=device,
                field="hotplug",
            )
        if not self.settings.has_pcie_root or self.transport != PCI:
            return None
        return self._topology.root_port(device, field="hotplug")

    def topology_args(self) -> list[str]:
        """The ``-device`` options of every port and bridge handed out so far
        (``pcie-root-port``, switch ports, ``pci-bridge``), parents first."""
        return self._topology.args()


@attrs.define
class ClhTarget(RenderTarget):
    hypervisor: ClassVar[str] = CLOUD_HYPERVISOR
    attach_type: ClassVar[type[Any]] = ClhAttach


@attrs.define
class FirecrackerTarget(RenderTarget):
    hypervisor: ClassVar[str] = FIRECRACKER
    attach_type: ClassVar[type[Any]] = FirecrackerAttach


TARGETS: Final[Mapping[str, type[RenderTarget]]] = {
    QEMU: QemuTarget,
    CLOUD_HYPERVISOR: ClhTarget,
    FIRECRACKER: FirecrackerTarget,
}


def make_target(settings: SandboxSettings) -> RenderTarget:
    return TARGETS[settings.hypervisor](settings)
