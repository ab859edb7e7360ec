"""The QEMU backend (built in): command-line options and QMP hot plug.

Registered through ``register_backends`` like any backend. Its target, :class:`QemuTarget`, gives
plugins the device transport (``pci``, ``mmio`` on microvm, ``ccw`` on s390x) and the plan's PCIe
topology; :func:`assemble` merges the plugins' :class:`~vmdev.qemu.QemuAttach` values into one
``-machine``/``-m`` line, shared objects once, the ports and bridges, then each device's options,
and the QMP commands in plan order (unplug in reverse). Live hot plug goes through
:class:`vmdev.live.QmpHotPlugger` (``vmdev attach --qmp SOCKET``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs

from vmdev.backend import Backend, LiveConnection, LiveOption, RenderContext
from vmdev.declared import INTEGER, Setting
from vmdev.errors import ConfigError, UnsupportedError
from vmdev.hookspecs import hookimpl
from vmdev.pcie import MAX_ROOT_PORTS, NodeKind, PcieTopology
from vmdev.qemu import MemoryNeeds, OptValue, QemuAttach, QmpCommand, keyvals, opts
from vmdev.settings import SandboxSettings
from vmdev.targets import CCW, MMIO, PCI, RenderTarget

NAME: Final = "qemu"
#: id of the shared guest-RAM backend created when a device needs shared memory
SHARED_RAM_ID: Final = "vmdev-ram"
#: vmdev's settings key: the PCIe root ports a QEMU plan has at least, for devices hot-plugged later
SPARE_ROOT_PORTS_KEY: Final = "hotplug_root_ports"
ROOT_PORT: Final = NodeKind.ROOT_PORT.value
SWITCH_PORT: Final = "switch-port"
#: the hot-plug port kinds a running VM offers, by the topology's node kind
PORT_KINDS: Final = {NodeKind.ROOT_PORT: ROOT_PORT, NodeKind.SWITCH_DOWNSTREAM: SWITCH_PORT}

_TRANSPORT_SUFFIX: Final = {PCI: "-pci", MMIO: "-device", CCW: "-ccw"}


# --- a running VM's ports ----------------------------------------------------------------------------
@attrs.define
class PortPool:
    """The free hot-plug ports of a running VM, handed out one device per port."""

    source: Callable[[], Sequence[Any]]
    taken: list[str] = attrs.Factory(list)
    _free: list[Any] | None = None

    def take(self, kind: str, device: str, field: str) -> str:
        if self._free is None:
            self._free = list(self.source())
        for port in self._free:
            if port.kind == kind and port.id not in self.taken:
                self.taken.append(port.id)
                return str(port.id)
        have = len([p for p in self._free if p.kind == kind])
        raise UnsupportedError(
            f"no free PCIe {kind} left in the running VM ({have} were free, all taken); boot the VM "
            f"with spare ports for hot plug ({SPARE_ROOT_PORTS_KEY} = N in the [vmdev] settings)",
            device=device,
            field=field,
        )


@attrs.define
class LiveTopology(PcieTopology):
    """A running VM's topology: places are its free ports; nothing can be added any more."""

    pool: PortPool = attrs.field(kw_only=True)

    def _fixed(self, device: str, field: str, what: str) -> UnsupportedError:
        return UnsupportedError(
            f"{what} cannot be added to a running VM: its PCI topology is fixed at boot",
            device=device,
            field=field,
        )

    def _check_pcie(self, device: str, field: str) -> None:
        if not self.pcie:
            raise UnsupportedError(
                f"machine {self.machine} has no PCIe root complex for hot-plug ports",
                device=device,
                field=field,
            )

    def root_port(self, device: str, *, field: str = "port", reserve: Mapping[str, int] | None = None) -> str:
        # window reservations are boot-time properties: a running VM's ports have what they have
        self._check_pcie(device, field)
        return self.pool.take(ROOT_PORT, device, field)

    def switch_port(self, device: str, *, field: str = "port") -> str:
        self._check_pcie(device, field)
        return self.pool.take(SWITCH_PORT, device, field)

    def bridge_slots(
        self, device: str, count: int = 1, *, field: str = "port", reserve: Mapping[str, int] | None = None
    ) -> tuple[str, tuple[int, ...]]:
        raise self._fixed(device, field, "PCI bridge slots (not supported for hot plug yet)")

    def root_bus_slots(self, device: str, count: int = 1, *, field: str = "port") -> str:
        raise self._fixed(device, field, f"devices on {self.root_bus}")

    def ensure_root_ports(self, count: int, *, device: str, field: str) -> tuple[str, ...]:
        raise self._fixed(device, field, "root ports")

    def ensure_switch_ports(self, count: int, *, device: str, field: str) -> tuple[str, ...]:
        raise self._fixed(device, field, "switch ports")


def _topology(target: QemuTarget) -> PcieTopology:
    base = PcieTopology.for_settings(target.settings)
    if target.context.live_ports is None:
        return base
    return LiveTopology(
        machine=base.machine, pcie=base.pcie, pci=base.pci, pool=PortPool(target.context.live_ports)
    )


# --- the target --------------------------------------------------------------------------------------
@attrs.define
class QemuTarget(RenderTarget):
    """Rendering for QEMU. Owns the plan's PCIe topology (root ports, switches, bridges); for a
    device hot-plugged into a running VM the topology hands out that VM's free ports."""

    hypervisor: ClassVar[str] = NAME
    attach_type: ClassVar[type[Any]] = QemuAttach
    _topology: PcieTopology = attrs.field(init=False, default=attrs.Factory(_topology, takes_self=True))

    @property
    def topology(self) -> PcieTopology:
        """The ports and bridges of this plan: ask it for a place (``root_port``,
        ``switch_port``, ``bridge_slots``, ``root_bus_slots``); see :mod:`vmdev.pcie`."""
        return self._topology

    @property
    def live(self) -> bool:
        """Rendering for a running VM (its topology is fixed)."""
        return isinstance(self._topology, LiveTopology)

    @property
    def ports_taken(self) -> tuple[str, ...]:
        """The running VM's ports handed out while rendering (empty for a boot plan)."""
        return tuple(self._topology.pool.taken) if isinstance(self._topology, LiveTopology) else ()

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
        (``pcie-root-port``, switch ports, ``pci-bridge``), parents first; none in a running VM."""
        return [] if self.live else self._topology.args()

    def spare_ports(self, hot_devices: set[str]) -> list[tuple[str, str]]:
        """``(port id, kind)`` of the boot plan's hot-plug ports that no cold-plugged device
        uses (``hot_devices`` name the devices left for hot plug)."""
        if self.transport != PCI:
            return []
        out: list[tuple[str, str]] = []
        for port in self._topology.ports():
            kind = PORT_KINDS.get(port.kind)
            if kind is not None and all(user in hot_devices for user in port.users):
                out.append((port.id, kind))
        return out


# --- the plan ----------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class QemuPlan:
    argv: tuple[str, ...]
    hotplug: tuple[QmpCommand, ...]
    unplug: tuple[QmpCommand, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "hotplug": [c.to_json() for c in self.hotplug],
            "unplug": [c.to_json() for c in self.unplug],
        }


def spare_root_ports(settings: SandboxSettings) -> int:
    """The ``hotplug_root_ports`` setting (``[vmdev]`` table): how many PCIe root ports a QEMU plan
    has at least, the planned devices' ports included, so that devices can be hot-plugged into
    the running VM later (``vmdev attach``). 0 when unset. Kata's ``pcie_root_port`` does the same
    for one device family's root ports and belongs to its plugin; a plan has the larger of the two."""
    value = settings.values.get(SPARE_ROOT_PORTS_KEY, settings.option(SPARE_ROOT_PORTS_KEY, 0))
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROOT_PORTS:
        raise ConfigError(
            f"must be a number of PCIe root ports from 0 to {MAX_ROOT_PORTS}, got {value!r}",
            field=SPARE_ROOT_PORTS_KEY,
        )
    return value


def assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> QemuPlan:
    """Merge the devices' :class:`QemuAttach` values into one command line and QMP sequence."""
    assert isinstance(target, QemuTarget)
    attaches = [(d, d.attach) for d in devices if isinstance(d.attach, QemuAttach)]
    machine: dict[str, Any] = {}
    owner: dict[str, str] = {}
    shared: dict[str, tuple[str, ...]] = {}
    memory = MemoryNeeds()
    for planned, attach in attaches:
        for key, value in attach.machine.items():
            if key in machine and machine[key] != value:
                raise UnsupportedError(
                    f"needs -machine {key}={value}, but {owner[key]} needs {key}={machine[key]}",
                    device=planned.container_path or planned.id,
                    field="machine",
                )
            machine[key] = value
            owner[key] = planned.container_path or planned.id
        for key, args in attach.shared_args.items():
            shared.setdefault(key, args)
        memory = MemoryNeeds(
            slots=memory.slots + attach.memory.slots,
            maxmem_extra_mib=memory.maxmem_extra_mib + attach.memory.maxmem_extra_mib,
            shared=memory.shared or attach.memory.shared,
        )
    argv = _machine_args(settings, machine, memory)
    for args in shared.values():
        argv += list(args)
    spare = spare_root_ports(settings)
    if spare:
        target.topology.ensure_root_ports(spare, device="sandbox", field=SPARE_ROOT_PORTS_KEY)
    argv += target.topology_args()
    for _, attach in attaches:
        argv += list(attach.args)
    hotplug = [c for _, a in attaches for c in a.hotplug]
    unplug = [c for _, a in reversed(attaches) for c in a.unplug]
    return QemuPlan(argv=tuple(argv), hotplug=tuple(hotplug), unplug=tuple(unplug))


def _machine_args(settings: SandboxSettings, machine: dict[str, Any], memory: MemoryNeeds) -> list[str]:
    mem = settings.memory_mib
    argv: list[str] = []
    if memory.shared:
        machine["memory-backend"] = SHARED_RAM_ID
    argv += ["-machine", opts(settings.machine_type, machine)]
    size: dict[str, Any] = {}
    if memory.slots:
        size = {"slots": memory.slots, "maxmem": f"{mem + max(memory.maxmem_extra_mib, 1)}M"}
    argv += ["-m", f"{mem}M" + ("," + keyvals(size) if size else "")]
    if memory.shared:
        backend: dict[str, OptValue | None] = {"id": SHARED_RAM_ID, "size": f"{mem}M", "share": True}
        argv += ["-object", opts("memory-backend-memfd", backend)]
    return argv


# --- registration ------------------------------------------------------------------------------------
def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return QemuTarget(settings, context)


def _live(connection: LiveConnection) -> Any:
    from vmdev.live import QmpHotPlugger, QmpSession

    session = QmpSession.connect(connection.options["qmp"], timeout=min(connection.timeout, 10.0))
    return QmpHotPlugger(session, command_timeout=connection.timeout, unplug_timeout=connection.timeout)


BACKEND: Final = Backend(
    name=NAME,
    description="QEMU: command-line options and QMP hot plug",
    kata_sections=("qemu",),
    target=_target,
    assemble=assemble,
    live=_live,
    live_options=(LiveOption(name="qmp", flag="--qmp", metavar="SOCKET",
                             help="A QMP socket of the running QEMU that no other client uses."),),
)


@hookimpl
def register_backends(register: Callable[[Backend], None]) -> None:
    register(BACKEND)


def _check_spare_ports(value: int) -> None:
    if not 0 <= value <= MAX_ROOT_PORTS:
        raise ValueError(f"must be a number of PCIe root ports from 0 to {MAX_ROOT_PORTS}, got {value!r}")


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    register(Setting(
        name=SPARE_ROOT_PORTS_KEY, type=INTEGER, default=0, check=_check_spare_ports,
        description="PCIe root ports a QEMU plan has at least (the devices' own included), so that "
        "devices can be hot-plugged into the running VM later (vmdev attach)",
    ))
