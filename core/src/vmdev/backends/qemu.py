"""The QEMU backend (built in): command-line options and QMP hot plug.

Registered through ``register_backends`` like any backend. Its target, :class:`QemuTarget`, gives
plugins the device transport (``pci``, ``mmio`` on microvm, ``ccw`` on s390x), the plan's PCIe
topology, the iothreads (:meth:`QemuTarget.iothread`, :meth:`QemuTarget.independent_iothread`) and
the options Kata adds to virtio devices (:meth:`QemuTarget.virtio_options`); :func:`assemble`
merges the plugins' :class:`~vmdev.qemu.QemuAttach` values into one ``-machine``/``-m`` line, the
guest-RAM backend, Kata's bridges, the vIOMMU and the iothreads, shared objects once, the ports
and bridges, then each device's options, and the QMP commands in plan order (unplug in reverse).
Live hot plug goes through :class:`vmdev.live.QmpHotPlugger` (``vmdev attach --qmp SOCKET``).

Kata's ``[hypervisor.qemu]`` keys this backend owns, and where a plan differs from Kata's command
line (the plan says so in its ``notes`` when it does):

``memory_slots``, ``default_maxmemory``, ``memory_offset``
    Kata: ``-m <default_memory>M,slots=<memory_slots>,maxmem=<M>M``; ``memory_slots = 0`` means 10;
    ``M`` is ``default_maxmemory`` (0: all of the host's memory; more than the host has: the host's)
    plus ``memory_offset`` plus 1024 MiB Kata keeps for its guest image's memory device (none on
    s390x; rounded down to 256 MiB on pseries). vmdev writes the same, with two differences: a plan
    does not read the planning host, so ``default_maxmemory = 0`` counts ``default_memory`` as the
    host's memory (the guest gets no RAM hot plug; a note says so) and a larger value is not
    capped; and when the devices need more slots or room than that (cold-plugged persistent
    memory), the plan has what they need. ``memory_slots`` above 255 is refused (Kata's ``uint8``
    wraps it). With both keys unset (vmdev's own default, as its earlier plans), ``-m`` has slots
    and ``maxmem`` only when devices need them. A layout whose ``maxmem`` is below
    ``default_memory`` is refused (QEMU would refuse it).
``enable_hugepages``, ``file_mem_backend``, ``enable_mem_prealloc``
    Kata backs guest RAM with ``-object memory-backend-file,id=dimm1,size=<mem>M,
    mem-path=/dev/hugepages`` (huge pages), ``mem-path=<file_mem_backend>`` (file-backed, always
    ``share=on``) or ``memory-backend-ram``; ``share=on`` when shared, ``prealloc=on`` with
    ``enable_mem_prealloc`` or with huge pages and shared file-backed RAM. vmdev writes the same
    object (id ``vmdev-ram``) but only when one of these applies, and wires it with ``-machine
    memory-backend=vmdev-ram`` (Kata: ``-numa node,memdev=dimm1`` on x86 and arm, the same memory).
    Devices whose backend process maps guest RAM ask for it shared (``MemoryNeeds.shared``): with no
    key set that is a ``memory-backend-memfd`` with ``share=on`` (Kata: a file in ``/dev/shm``),
    else the one object above with ``share=on``; huge pages then also preallocate, as Kata does
    for its file-system sharing device. Kata stats the path and silently falls back to plain RAM
    if it is missing; a plan cannot (QEMU refuses a missing path). Kata 4.1.0 removed
    ``file_mem_backend`` (the shared case keeps ``/dev/shm``); vmdev keeps the key as Kata 3.x had it.
``enable_iommu``
    ``-device intel-iommu,intremap=on,device-iotlb=on,caching-mode=on`` and ``-machine
    kernel_irqchip=split``, on q35 only; other machines are refused with Kata's words (``Machine
    Type %s does not support vIOMMU``). Kata also adds ``intel_iommu=on iommu=pt`` to the guest
    kernel's command line, which vmdev does not plan (a note says so).
``enable_iommu_platform``
    Kata adds ``iommu_platform=on`` to the CCW (s390x) virtio devices of the network, the console
    (virtio-serial), the SCSI controller, the RNG, vsock and both file-system sharing devices; never
    to disks or the balloon. Family plugins of those devices add :meth:`QemuTarget.virtio_options`
    to their options (before ``devno``).
``default_bridges``
    Kata's hot-plug PCI bridges ``pci-bridge-<i>`` (0 means 1; more than 5 are capped at 5, with a
    note) on q35, virt and pseries, ahead of every other device: ``pci-bridge`` at slot ``2+i``, or
    on q35 with a ``firmware`` a ``pcie-pci-bridge`` behind root port ``rp-pci-bridge-<i>`` (see
    :meth:`vmdev.pcie.PcieTopology.add_kata_bridges`). Devices asking the topology for bridge slots
    get theirs first. Kata's default is 1; vmdev's (the key unset) is none, so that plans made
    without a Kata configuration stay as they were. Machines Kata gives no bridges (pc, microvm;
    s390x's are bookkeeping only) get none, with a note.
``enable_iothreads``, ``indep_iothreads``
    ``-object iothread,id=...``: the SCSI controller's own ``iothread-<hex>`` (Kata draws the hex at
    random; vmdev derives it from the controller's id) when ``enable_iothreads``, then Kata's
    ``indep_iothread_<i>`` for ``i < indep_iothreads`` (always made, as Kata does); Kata puts its
    hot-plugged virtio block disks on ``indep_iothread_0`` when both are set. Family plugins ask
    :meth:`QemuTarget.iothread` and :meth:`QemuTarget.independent_iothread`; the objects are
    written once.
``confidential_guest``
    Kata gives such a guest no memory hot plug (``-m <mem>M``; on s390x ``maxmem=<mem>M``), the
    split IRQ chip on x86 (``kernel_irqchip=split``), and its memory-encryption object (``sev-guest``,
    ``sev-snp-guest``, ``tdx-guest``; ``s390-pv-guest``) with ``confidential-guest-support``. vmdev
    writes the first two, refuses devices that need a memory slot, and leaves the encryption object
    and firmware to whoever starts QEMU (a note says so). Families read the key too (Kata adds no
    RNG to such a guest and passes devices through only one way).

``enable_numa``, ``numa_mapping``
    Kata's guest NUMA: one guest node per ``numa_mapping`` entry (host node sets such as ``"0-1"``),
    or per host node when the mapping is empty (read from sysfs by the :class:`GuestNuma` sandbox
    device this backend builds): ``-object memory-backend-*,id=numa-mem<g>,size=..,host-nodes=..,
    policy=bind`` and ``-numa node,nodeid=<g>,memdev=numa-mem<g>`` each (default_memory split
    evenly: a plan has no vCPUs to split it by, so QEMU maps the vCPUs), then ``-numa dist`` from the
    host's distances. Root ports asked for with a host NUMA node go behind the ``pxb-pcie`` of the
    guest node covering it (:meth:`vmdev.pcie.PcieTopology.bind_numa`); once one exists, PCI devices
    rendered without a bus are pinned to ``pcie.0`` (QEMU would put them on the expander's bus).

Large BARs (no key): the BARs devices placed with ``bars=`` count for the 64-bit PCI window; when it
holds more than the firmware's default windows, :func:`assemble` lays it out as the firmware will
(:func:`vmdev.pcie.mmio64_layout`) after RAM and the memory hot-plug area, adds
``-global x86_64-cpu.phys-bits=N`` when QEMU's default 40 bits do not reach it and, with a UEFI
``firmware``, ``-fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=<MiB>`` when OVMF's classic 32 GiB
aperture cannot hold it, and writes the derivation in the notes. Decisions are also recorded for
``vmdev explain`` (:mod:`vmdev.explain`).

``firmware`` is declared here as well: it decides the form of Kata's bridges (vmdev plans no
``-bios``) and which firmware's layout the large BARs are sized for (set: OVMF; unset: SeaBIOS).
The keys are scoped to this backend (``Setting.backends``), except ``enable_iommu`` and
``confidential_guest``, which Kata has for Cloud Hypervisor too and families read whatever the
backend (with ``settings.value(key, default)``); another backend may declare its own key of the same
name (libvirt's ``enable_hugepages``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from vmdev.backend import Backend, LiveConnection, LiveOption, RenderContext
from vmdev.decisions import MACHINE, decide
from vmdev.declared import BOOLEAN, INTEGER, STRING, STRINGS, Setting
from vmdev.errors import ConfigError, PluginError, UnsupportedError
from vmdev.hookspecs import hookimpl
from vmdev.qemu import MemoryNeeds, OptValue, QemuAttach, QmpCommand, keyvals, make_id, opts, split_opts
from vmdev.settings import MAX_MEMORY_MIB, SandboxSettings
from vmdev.targets import CCW, MMIO, PCI, RenderTarget

if TYPE_CHECKING:
    from vmdev.host import HostContext
    from vmdev.models import Device
    from vmdev.pcie import PcieTopology

NAME: Final = "qemu"
#: id of the guest-RAM backend object (shared, file-backed, huge pages or preallocated RAM)
SHARED_RAM_ID: Final = "vmdev-ram"
RAM_BACKEND_ID: Final = SHARED_RAM_ID
#: vmdev's settings key: the PCIe root ports a QEMU plan has at least, for devices hot-plugged later
SPARE_ROOT_PORTS_KEY: Final = "hotplug_root_ports"
#: the hot-plug port kinds a running VM offers (:data:`vmdev.backends.qemu_pcie.PORT_KINDS`): a root port
#: is named as :class:`vmdev.pcie.NodeKind` names it
ROOT_PORT: Final = "root-port"
SWITCH_PORT: Final = "switch-port"

_TRANSPORT_SUFFIX: Final = {PCI: "-pci", MMIO: "-device", CCW: "-ccw"}

# --- Kata's keys -------------------------------------------------------------------------------------
MEMORY_SLOTS_KEY: Final = "memory_slots"
MAX_MEMORY_KEY: Final = "default_maxmemory"
MEMORY_OFFSET_KEY: Final = "memory_offset"
HUGEPAGES_KEY: Final = "enable_hugepages"
FILE_MEM_BACKEND_KEY: Final = "file_mem_backend"
MEM_PREALLOC_KEY: Final = "enable_mem_prealloc"
IOMMU_KEY: Final = "enable_iommu"
IOMMU_PLATFORM_KEY: Final = "enable_iommu_platform"
BRIDGES_KEY: Final = "default_bridges"
FIRMWARE_KEY: Final = "firmware"
IOTHREADS_KEY: Final = "enable_iothreads"
INDEP_IOTHREADS_KEY: Final = "indep_iothreads"
CONFIDENTIAL_KEY: Final = "confidential_guest"
NUMA_KEY: Final = "enable_numa"
NUMA_MAPPING_KEY: Final = "numa_mapping"

#: Kata's memory slots when ``memory_slots`` is 0 (katautils' defaultMemSlots)
KATA_DEFAULT_SLOTS: Final = 10
#: the most memory slots Kata can express (it keeps them in a uint8)
MAX_MEMORY_SLOTS: Final = 255
#: the room Kata adds to maxmem for its guest image's memory device, in MiB (genericMemoryTopology)
KATA_IMAGE_ROOM_MIB: Final = 1024
#: pseries: Kata rounds the host's memory down to this many MiB
PSERIES_MEMORY_ALIGN_MIB: Final = 256
#: the hugetlbfs mount Kata backs guest RAM with
HUGEPAGES_PATH: Final = "/dev/hugepages"
#: Kata's vIOMMU device
INTEL_IOMMU: Final = "intel-iommu"
IOMMU_PROPS: Final[Mapping[str, OptValue]] = {"intremap": True, "device-iotlb": True, "caching-mode": True}
#: Kata's independent iothreads: indep_iothread_<i>
INDEP_IOTHREAD_PREFIX: Final = "indep_iothread"
DEDICATED_IOTHREAD_PREFIX: Final = "iothread"
#: the base type of QEMU's x86 CPUs: ``-global x86_64-cpu.phys-bits=N`` gives every CPU model but an
#: explicit ``-cpu ...,phys-bits=`` that width
CPU_TYPE: Final = "x86_64-cpu"
#: the fw_cfg file OVMF reads its 64-bit PCI aperture from, in MiB
OVMF_MMIO64_FW_CFG: Final = "opt/ovmf/X-PciMmio64Mb"


def _value(settings: SandboxSettings, key: str) -> Any:
    """A key's typed value, or its declared default when the settings were not prepared (a
    target made directly in a test)."""
    return settings.value(key, _DEFAULTS[key])


def _machine_is(settings: SandboxSettings, *prefixes: str) -> bool:
    return settings.machine_type.startswith(prefixes)


def kata_bridges(settings: SandboxSettings) -> tuple[int, bool, str]:
    """How many of Kata's hot-plug bridges the plan has, whether they are nested behind root ports
    (q35 with a firmware, except a runtime-rs file's confidential guest, as each Kata runtime does),
    and a note when that differs from the value asked for."""
    asked = _value(settings, BRIDGES_KEY)
    if asked is None:
        return 0, False, ""
    from vmdev.pcie import MAX_KATA_BRIDGES

    count = min(asked or 1, MAX_KATA_BRIDGES)
    note = f"{BRIDGES_KEY} = {asked}: Kata makes at most {MAX_KATA_BRIDGES} bridges" if asked > count else ""
    if not _machine_is(settings, "q35", "pc-q35", "virt", "pseries"):
        why = "s390x's are bookkeeping only" if settings.is_ccw else "only q35, virt and pseries get them"
        return 0, False, f"{BRIDGES_KEY}: machine {settings.machine_type} gets no bridges, as in Kata ({why})"
    nested = _machine_is(settings, "q35", "pc-q35") and bool(_value(settings, FIRMWARE_KEY))
    if nested and settings.kata_runtime == "runtime-rs" and _value(settings, CONFIDENTIAL_KEY):
        nested = False  # runtime-rs plugs a confidential guest's bridges into pcie.0 as plain pci-bridges
    return count, nested, note


def uefi(settings: SandboxSettings) -> bool:
    """The guest firmware is UEFI (OVMF): ``firmware`` names one, as Kata decides for its bridges.
    Without it QEMU boots SeaBIOS."""
    return bool(_value(settings, FIRMWARE_KEY))


# --- the target --------------------------------------------------------------------------------------
@attrs.define
class QemuTarget(RenderTarget):
    """Rendering for QEMU. Owns the plan's PCIe topology (root ports, switches, bridges) and its
    iothreads; for a device hot-plugged into a running VM the topology hands out that VM's free
    ports."""

    hypervisor: ClassVar[str] = NAME
    attach_type: ClassVar[type[Any]] = QemuAttach
    #: made on first use (:mod:`vmdev.backends.qemu_pcie`): a device that takes no port never needs it
    _topology: PcieTopology | None = attrs.field(init=False, default=None)
    #: the dedicated iothreads handed out, in order (written once by assemble)
    _iothreads: dict[str, None] = attrs.field(init=False, factory=dict)

    @property
    def topology(self) -> PcieTopology:
        """The ports and bridges of this plan: ask it for a place (``root_port``,
        ``switch_port``, ``bridge_slots``, ``root_bus_slots``); see :mod:`vmdev.pcie`. Made when
        first asked for, from the settings (a running VM's: its free ports)."""
        if self._topology is None:
            from vmdev.backends.qemu_pcie import build_topology

            self._topology = build_topology(self)
        return self._topology

    @property
    def live(self) -> bool:
        """Rendering for a running VM (its topology is fixed: its free ports)."""
        return self.context.live_ports is not None

    @property
    def ports_taken(self) -> tuple[str, ...]:
        """The running VM's ports handed out while rendering (empty for a boot plan)."""
        if self._topology is None:
            return ()
        from vmdev.backends.qemu_live_ports import LiveTopology  # loaded with a running VM's topology

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
        """The device name for this transport: ``virtio-foo`` -> ``virtio-foo-pci`` on PCI."""
        return base + _TRANSPORT_SUFFIX[self.transport]

    def virtio_options(self) -> dict[str, OptValue]:
        """The options Kata adds to a virtio device here: ``{"iommu_platform": True}`` on the CCW
        transport with ``enable_iommu_platform`` set, else nothing.

        Kata gives ``iommu_platform=on`` to the network, console (virtio-serial), SCSI controller,
        RNG, vsock and file-system sharing devices, never to disks or the balloon: the plugins of
        the former merge this into their ``-device`` (and ``device_add``) options, before ``devno``
        as Kata writes them.
        """
        if self.transport == CCW and _value(self.settings, IOMMU_PLATFORM_KEY):
            return {"iommu_platform": True}
        return {}

    def iothread(self, device: str) -> str | None:
        """A dedicated iothread for ``device`` (its QEMU id) when ``enable_iothreads`` is set, else
        None: Kata gives its SCSI controller one, ``iothread-<hex>``. The id is derived from
        ``device`` (the same device gets the same iothread) and the ``-object iothread`` is
        written once by :func:`assemble`."""
        if not _value(self.settings, IOTHREADS_KEY):
            return None
        thread = make_id(DEDICATED_IOTHREAD_PREFIX, device)
        self._iothreads[thread] = None
        return thread

    def independent_iothread(self, index: int = 0) -> str | None:
        """Kata's independent iothread ``indep_iothread_<index>`` when ``enable_iothreads`` is set
        and ``indep_iothreads`` makes more than ``index`` of them, else None. Kata puts its
        hot-plugged virtio block disks on ``indep_iothread_0``. The objects exist from boot."""
        if _value(self.settings, IOTHREADS_KEY) and 0 <= index < _value(self.settings, INDEP_IOTHREADS_KEY):
            return f"{INDEP_IOTHREAD_PREFIX}_{index}"
        return None

    def iothread_ids(self) -> list[str]:
        """Every iothread of the plan in Kata's order: the dedicated ones handed out, then
        ``indep_iothread_0..N-1`` (made whether or not ``enable_iothreads`` is set, as Kata does)."""
        count = _value(self.settings, INDEP_IOTHREADS_KEY)
        return [*self._iothreads, *(f"{INDEP_IOTHREAD_PREFIX}_{i}" for i in range(count))]

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
        return self.topology.root_port(device, field="hotplug")

    def placed(self) -> PcieTopology | None:
        """The topology if anything is in it: a device asked for a place, or the settings give
        Kata's bridges. Otherwise it would write nothing (no port, bridge or 64-bit window), so
        none is built: a plan whose devices take no port, such as a spec of generic devices, does
        not load :mod:`vmdev.pcie` (about 2 ms of ``vmdev plan``; issue 13)."""
        if self._topology is None and kata_bridges(self.settings)[0] == 0:
            return None
        return self.topology

    def topology_args(self, *, fixed: bool | None = None) -> list[str]:
        """The ``-device`` options of every port and bridge handed out so far
        (``pcie-root-port``, switch ports, ``pci-bridge``), parents first; none in a running VM.
        ``fixed`` selects the nodes with a fixed address (Kata's bridges) or the others."""
        topology = None if self.live else self.placed()
        return [] if topology is None else topology.args(fixed=fixed)

    def spare_ports(self, hot_devices: set[str]) -> list[tuple[str, str]]:
        """``(port id, kind)`` of the boot plan's hot-plug ports that no cold-plugged device
        uses (``hot_devices`` name the devices left for hot plug)."""
        topology = self.placed() if self.transport == PCI else None
        if topology is None:
            return []
        from vmdev.backends.qemu_pcie import PORT_KINDS

        out: list[tuple[str, str]] = []
        for port in topology.ports():
            kind = PORT_KINDS.get(port.kind)
            if kind is not None and all(user in hot_devices for user in port.users):
                out.append((port.id, kind))
        return out


# --- the plan ----------------------------------------------------------------------------------------
def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class QemuPlan:
    """QEMU's part of a plan. ``notes`` say where it differs from what Kata would run (shown only
    when there are any)."""

    argv: tuple[str, ...]
    hotplug: tuple[QmpCommand, ...]
    unplug: tuple[QmpCommand, ...]
    notes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "argv": list(self.argv),
            "hotplug": [c.to_json() for c in self.hotplug],
            "unplug": [c.to_json() for c in self.unplug],
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def spare_root_ports(settings: SandboxSettings) -> int:
    """The ``hotplug_root_ports`` setting (``[vmdev]`` table): how many PCIe root ports a QEMU plan
    has at least, the planned devices' ports included, so that devices can be hot-plugged into
    the running VM later (``vmdev attach``). 0 when unset. Kata's ``pcie_root_port`` does the same
    for one device family's root ports and belongs to its plugin; a plan has the larger of the two."""
    value = settings.values.get(SPARE_ROOT_PORTS_KEY, settings.option(SPARE_ROOT_PORTS_KEY, 0))
    if type(value) is int and value == 0:  # none asked for: no limit to check it against
        return 0
    from vmdev.pcie import MAX_ROOT_PORTS

    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROOT_PORTS:
        raise ConfigError(
            f"must be a number of PCIe root ports from 0 to {MAX_ROOT_PORTS}, got {value!r}",
            field=SPARE_ROOT_PORTS_KEY,
        )
    return value


# --- assembling --------------------------------------------------------------------------------------
@attrs.define
class _Machine:
    """The ``-machine`` properties and who asked for each."""

    props: dict[str, OptValue] = attrs.Factory(dict)
    owner: dict[str, str] = attrs.Factory(dict)

    def claim(self, key: str, value: OptValue, who: str) -> None:
        if key in self.props and self.props[key] != value:
            raise UnsupportedError(
                f"needs -machine {key}={value}, but {self.owner[key]} needs {key}={self.props[key]}",
                device=who,
                field="machine",
            )
        self.props[key] = value
        self.owner[key] = who


@attrs.define
class _Merged:
    """What the devices need at machine level, merged."""

    machine: _Machine = attrs.Factory(_Machine)
    shared: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    memory: MemoryNeeds = attrs.Factory(MemoryNeeds)
    #: the first device that needs a memory slot (for errors)
    slot_user: str = ""


def _merge(attaches: Sequence[tuple[Any, QemuAttach]]) -> _Merged:
    merged = _Merged()
    for planned, attach in attaches:
        name = planned.container_path or planned.id
        for key, value in attach.machine.items():
            merged.machine.claim(key, value, name)
        for key, args in attach.shared_args.items():
            merged.shared.setdefault(key, args)
        need, have = attach.memory, merged.memory
        if need.slots and not merged.slot_user:
            merged.slot_user = name
        merged.memory = MemoryNeeds(
            slots=have.slots + need.slots,
            maxmem_extra_mib=have.maxmem_extra_mib + need.maxmem_extra_mib,
            shared=have.shared or need.shared,
        )
    return merged


def assemble(settings: SandboxSettings, target: RenderTarget, devices: Sequence[Any]) -> QemuPlan:
    """Merge the devices' :class:`QemuAttach` values into one command line and QMP sequence."""
    assert isinstance(target, QemuTarget)
    attaches = [(d, d.attach) for d in devices if isinstance(d.attach, QemuAttach)]
    merged = _merge(attaches)
    notes: list[str] = []
    memory, slots, maxmem = _memory_option(settings, merged, notes)
    numa = _guest_numa(devices)
    numa_args = _numa_args(settings, target, numa, merged.memory, notes)
    ram = None if numa_args else _ram_backend(settings, merged.memory)
    for key, value, who in _backend_machine(settings, ram is not None):
        merged.machine.claim(key, value, who)
    argv = ["-machine", opts(settings.machine_type, merged.machine.props), "-m", memory]
    if ram is not None:
        argv += ["-object", ram]
    argv += numa_args
    argv += target.topology_args(fixed=True)
    argv += _iommu_args(settings, notes)
    for thread in target.iothread_ids():
        argv += ["-object", opts("iothread", {"id": thread})]
    for args in merged.shared.values():
        argv += list(args)
    spare = spare_root_ports(settings)
    if spare:
        target.topology.ensure_root_ports(spare, device="sandbox", field=SPARE_ROOT_PORTS_KEY)
    pin = ""
    topology = target.placed()
    if topology is not None:
        from vmdev.backends.qemu_pcie import mmio64_args

        argv += mmio64_args(settings, target, (slots, maxmem), notes)
        argv += topology.args(fixed=False)  # a plan's target: never a running VM's
        pin = topology.root_bus if topology.has_expander_bus else ""
    for _, attach in attaches:
        argv += _pinned(attach.args, pin, notes) if pin else list(attach.args)
    notes += _setting_notes(settings)
    notes += _device_notes(attaches)
    hotplug = [c for _, a in attaches for c in a.hotplug]
    unplug = [c for _, a in reversed(attaches) for c in a.unplug]
    return QemuPlan(argv=tuple(argv), hotplug=tuple(hotplug), unplug=tuple(unplug), notes=tuple(notes))


def _pinned(args: Sequence[str], bus: str, notes: list[str]) -> list[str]:
    """``args`` with ``bus=<root bus>`` on each PCI device (``-device *-pci``) that names no bus. With a
    pxb-pcie in the machine, QEMU would put such a device on the expander's bus, which takes only
    bridges (``PCI: Only PCI/PCIe bridges can be plugged into pxb-pcie``); Kata pins its leaf
    devices to pcie.0 for the same reason."""
    out = list(args)
    for index in range(len(out) - 1):
        if out[index] != "-device":
            continue
        parts = split_opts(out[index + 1])
        if parts[0].endswith("-pci") and not any(p.startswith("bus=") for p in parts[1:]):
            out[index + 1] += f",bus={bus}"
            notes.append(f"{parts[0]}: pinned to bus={bus} (QEMU would place it on a pxb-pcie's bus, which "
                         "takes bridges only)")
    return out


def _device_notes(attaches: Sequence[tuple[Any, QemuAttach]]) -> list[str]:
    """The notes devices give in their details (``details["notes"]``), each after its device's name."""
    out = []
    for planned, attach in attaches:
        for note in attach.details.get("notes", ()):
            out.append(f"{planned.container_path or planned.id}: {note}")
    return out


def _backend_machine(settings: SandboxSettings, ram: bool) -> list[tuple[str, OptValue, str]]:
    """The ``-machine`` properties the settings ask for: Kata's split IRQ chip for a vIOMMU or a
    confidential guest on x86, and the guest-RAM backend."""
    out: list[tuple[str, OptValue, str]] = []
    if _value(settings, IOMMU_KEY):
        out.append(("kernel_irqchip", "split", IOMMU_KEY))
    elif _value(settings, CONFIDENTIAL_KEY) and _machine_is(settings, "q35", "pc", "microvm"):
        out.append(("kernel_irqchip", "split", CONFIDENTIAL_KEY))
    if ram:
        out.append(("memory-backend", RAM_BACKEND_ID, "guest RAM"))
    return out


def _setting_notes(settings: SandboxSettings) -> list[str]:
    notes = []
    bridges_note = kata_bridges(settings)[2]
    if bridges_note:
        notes.append(bridges_note)
    if _value(settings, CONFIDENTIAL_KEY):
        notes.append(
            f"{CONFIDENTIAL_KEY}: Kata also starts QEMU with its memory-encryption object (sev-guest, "
            "sev-snp-guest or tdx-guest; s390-pv-guest on s390x), -machine confidential-guest-support "
            "naming it, and the guest firmware; this plan has none of them"
        )
    return notes


# --- memory ------------------------------------------------------------------------------------------
Memory = tuple[str, int, "int | None"]


def _sized(mem: int, slots: int, maxmem: int | None) -> Memory:
    """The ``-m`` value, its slots and its maxmem in MiB."""
    rest = keyvals({"slots": slots or None, "maxmem": None if maxmem is None else f"{maxmem}M"})
    return f"{mem}M" + ("," + rest if rest else ""), slots, maxmem


def _memory_option(settings: SandboxSettings, merged: _Merged, notes: list[str]) -> Memory:
    """The ``-m`` value: Kata's layout when ``memory_slots`` or ``default_maxmemory`` is set, with
    room for the devices' needs; else only what the devices need."""
    mem, needs = settings.memory_mib, merged.memory
    if _value(settings, CONFIDENTIAL_KEY):
        if needs.slots:
            raise UnsupportedError(
                "needs a memory slot, and a confidential guest has none (Kata gives it no memory hot plug)",
                device=merged.slot_user,
                field=CONFIDENTIAL_KEY,
            )
        return _sized(mem, 0, mem if settings.is_ccw else None)
    slots, maxmem = _value(settings, MEMORY_SLOTS_KEY), _value(settings, MAX_MEMORY_KEY)
    if slots is None and maxmem is None:
        return _sized(mem, needs.slots, mem + max(needs.maxmem_extra_mib, 1) if needs.slots else None)
    kata_max = _kata_maxmem(settings, maxmem or 0, notes)
    floor = mem + max(needs.maxmem_extra_mib, 1) if needs.slots else mem
    top = max(kata_max, floor)
    if top == mem:
        notes.append(f"{MEMORY_SLOTS_KEY}: none, as maxmem leaves no room to plug memory (QEMU refuses "
                     "slots then)")
        return _sized(mem, 0, top)
    return _sized(mem, max(slots or KATA_DEFAULT_SLOTS, needs.slots), top)


def _kata_maxmem(settings: SandboxSettings, host_mib: int, notes: list[str]) -> int:
    """Kata's ``maxmem`` in MiB (its arch's ``memoryTopology``), ``default_memory`` standing in for
    the host's memory when ``default_maxmemory`` is 0."""
    mem = settings.memory_mib
    if host_mib == 0:
        host_mib = mem
        notes.append(
            f"{MAX_MEMORY_KEY} = 0: Kata lets the guest grow to all of the host's memory; a plan does not "
            f"read the planning host, so it counts default_memory ({mem} MiB) instead (set {MAX_MEMORY_KEY} "
            "in MiB for memory hot plug)"
        )
    if settings.is_ccw:
        room = 0
    else:
        if _machine_is(settings, "pseries"):
            host_mib -= host_mib % PSERIES_MEMORY_ALIGN_MIB
        room = _value(settings, MEMORY_OFFSET_KEY) + KATA_IMAGE_ROOM_MIB
    top: int = host_mib + room
    if top < mem:
        raise ConfigError(
            f"gives maxmem {top} MiB ({host_mib} + {room} MiB), below default_memory {mem} MiB; QEMU "
            "refuses a maximum below the initial memory",
            field=MAX_MEMORY_KEY,
        )
    return top


def _ram_kind(settings: SandboxSettings, needs: MemoryNeeds) -> tuple[str, dict[str, OptValue | None]] | None:
    """The guest-RAM backend type and its properties but id and size, or None when plain RAM will do
    (Kata: ``appendMemoryKnobs``)."""
    hugepages, path = _value(settings, HUGEPAGES_KEY), _value(settings, FILE_MEM_BACKEND_KEY)
    shared = needs.shared or bool(path)
    prealloc = _value(settings, MEM_PREALLOC_KEY) or (hugepages and shared)
    mem_path: str | None = None
    if hugepages:
        qom_type, mem_path = "memory-backend-file", HUGEPAGES_PATH
    elif path:
        qom_type, mem_path = "memory-backend-file", path
    elif shared:
        qom_type = "memory-backend-memfd"
    elif prealloc:
        qom_type = "memory-backend-ram"
    else:
        return None
    return qom_type, {"mem-path": mem_path, "share": True if shared else None,
                      "prealloc": True if prealloc else None}


def _ram_backend(settings: SandboxSettings, needs: MemoryNeeds) -> str | None:
    """The guest-RAM backend object, or None when plain RAM will do."""
    kind = _ram_kind(settings, needs)
    if kind is None:
        return None
    qom_type, rest = kind
    props: dict[str, OptValue | None] = {"id": RAM_BACKEND_ID, "size": f"{settings.memory_mib}M", **rest}
    return opts(qom_type, props)


# --- guest NUMA ----------------------------------------------------------------------------------------
#: host NUMA nodes are numbered below this: Linux's MAX_NUMNODES is 1 << CONFIG_NODES_SHIFT, and
#: NODES_SHIFT is at most 10 (mm/Kconfig)
MAX_HOST_NUMA_NODES: Final = 1 << 10


def parse_node_set(text: str) -> tuple[int, ...]:
    """``"0-1,3"`` -> ``(0, 1, 3)`` (a cpuset list, as Kata's ``numa_mapping`` and sysfs write them).
    Node numbers are ASCII digits below :data:`MAX_HOST_NUMA_NODES`, so a range is never larger than
    the nodes a host can have."""
    nodes: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not _decimal(low) or (dash and not _decimal(high)):
            raise ValueError(f"{text!r} is not a list of NUMA nodes such as \"0\", \"0-1\" or \"0,2\"")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"{text!r}: the range {part.strip()!r} runs backwards")
        if last >= MAX_HOST_NUMA_NODES:
            raise ValueError(f"{text!r}: node {last} is past the last NUMA node Linux can have "
                             f"({MAX_HOST_NUMA_NODES - 1})")
        nodes += range(first, last + 1)
    return tuple(sorted(set(nodes)))


def _decimal(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` takes ``"²"``, which ``int`` refuses), at most 4 of them."""
    return text.isascii() and text.isdigit() and len(text) <= 4


def _node_ranges(nodes: Sequence[int]) -> str:
    """``(0, 1, 3)`` -> ``0-1,3``."""
    parts: list[str] = []
    for node in sorted(nodes):
        if parts and parts[-1].split("-")[-1] == str(node - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{node}"
        else:
            parts.append(str(node))
    return ",".join(parts)


def _check_numa_mapping(value: Sequence[str]) -> None:
    seen: dict[int, int] = {}
    for guest, text in enumerate(value):
        for node in parse_node_set(text):
            if node in seen:
                raise ValueError(f"host NUMA node {node} is in guest nodes {seen[node]} and {guest}; "
                                 "each host node goes to one guest node")
            seen[node] = guest


def _int_tuple(value: Sequence[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class GuestNode:
    """One guest NUMA node: the host NUMA nodes it maps to (``"0"``, ``"0-1"``), their CPUs and
    the host's distances from its first host node to the other guest nodes' (for ``-numa dist``)."""

    host_nodes: str
    host_cpus: str = ""
    distances: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)


def _node_tuple(value: Sequence[GuestNode]) -> tuple[GuestNode, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class GuestNuma:
    """The guest's NUMA nodes (``enable_numa``): a sandbox device of the QEMU backend, built from
    ``numa_mapping`` or, when it is empty, one guest node per host node (Kata's 1:1)."""

    kind: ClassVar[str] = "guest-numa"
    id: str = "guest-numa"
    nodes: tuple[GuestNode, ...] = attrs.field(default=(), converter=_node_tuple)
    source: str = NUMA_MAPPING_KEY

    def guest_node_of(self) -> dict[int, int]:
        """host NUMA node -> the guest node that covers it."""
        return {host: guest for guest, node in enumerate(self.nodes)
                for host in parse_node_set(node.host_nodes)}

    def describe(self) -> str:
        covered = ", ".join(f"guest {g} = host {n.host_nodes}" for g, n in enumerate(self.nodes))
        return f"{self.source}: {covered or 'no guest nodes'}"


def guest_numa(settings: SandboxSettings, host: HostContext) -> GuestNuma:
    """The guest NUMA nodes ``enable_numa`` and ``numa_mapping`` ask for, with the host's CPUs and
    distances (read from sysfs: ``devices/system/node``)."""
    mapping: tuple[str, ...] = tuple(_value(settings, NUMA_MAPPING_KEY))
    source = NUMA_MAPPING_KEY
    if not mapping:
        source = "host NUMA nodes (/sys/devices/system/node/online)"
        online = host.sysfs.read_line("devices/system/node/online") or ""
        mapping = tuple(str(n) for n in parse_node_set(online)) if online else ()
    firsts = [parse_node_set(text)[0] for text in mapping]
    nodes = []
    for text in mapping:
        hosts = parse_node_set(text)
        cpus = [host.sysfs.read_line(f"devices/system/node/node{n}/cpulist") or "" for n in hosts]
        row = (host.sysfs.read_line(f"devices/system/node/node{hosts[0]}/distance") or "").split()
        distances = tuple(int(row[n]) if n < len(row) and row[n].isdigit() else 0 for n in firsts)
        nodes.append(GuestNode(host_nodes=text, host_cpus=",".join(c for c in cpus if c),
                               distances=distances if all(distances) else ()))
    return GuestNuma(nodes=tuple(nodes), source=source)


def _guest_numa(devices: Sequence[Any]) -> GuestNuma | None:
    return next((d.device for d in devices if isinstance(d.device, GuestNuma)), None)


def _numa_args(
    settings: SandboxSettings,
    target: QemuTarget,
    numa: GuestNuma | None,
    needs: MemoryNeeds,
    notes: list[str],
) -> list[str]:
    """The guest NUMA nodes as Kata writes them (one memory backend bound to its host nodes and one
    ``-numa node`` each, then ``-numa dist``), and the root ports asked for with a host NUMA node
    moved behind the pxb-pcie of the guest node that covers it."""
    if numa is None:
        return []
    if not numa.nodes:
        notes.append(f"{NUMA_KEY}: this host shows no NUMA nodes (/sys/devices/system/node/online): the "
                     "guest gets none")
        return []
    moved = target.topology.bind_numa(numa.guest_node_of(), mapping=numa.describe())
    sizes = _node_memory(settings, len(numa.nodes))
    kind = _ram_kind(settings, needs) or ("memory-backend-ram", {})
    argv: list[str] = []
    for guest, (node, size) in enumerate(zip(numa.nodes, sizes, strict=True)):
        props: dict[str, OptValue | None] = {"id": f"numa-mem{guest}", "size": f"{size}M", **kind[1],
                                             "host-nodes": _node_ranges(parse_node_set(node.host_nodes)),
                                             "policy": "bind"}
        argv += ["-object", opts(kind[0], props)]
        argv += ["-numa", "node," + keyvals({"nodeid": guest, "memdev": f"numa-mem{guest}"})]
    for src, node in enumerate(numa.nodes):
        for dst, value in enumerate(node.distances):
            if dst != src:
                argv += ["-numa", f"dist,src={src},dst={dst},val={value}"]
    behind = ", ".join(f"{port} -> {pxb}" for port, pxb in moved.items())
    notes.append(
        f"{NUMA_KEY}: {len(numa.nodes)} guest NUMA nodes ({numa.describe()}), {settings.memory_mib} MiB "
        f"split {'/'.join(map(str, sizes))} MiB; vCPUs follow QEMU's default mapping (a plan has no -smp; "
        "Kata spreads them by socket)" + (f"; root ports behind pxb-pcie: {behind}" if moved else ""))
    decide(target, MACHINE, f"-numa: {len(numa.nodes)} guest nodes", numa.describe(),
           settings={NUMA_KEY: True, NUMA_MAPPING_KEY: list(_value(settings, NUMA_MAPPING_KEY))},
           facts={f"host node {n.host_nodes} cpus": n.host_cpus for n in numa.nodes},
           limits=[f"{p} moved behind {x}" for p, x in moved.items()])
    return argv


def _node_memory(settings: SandboxSettings, count: int) -> list[int]:
    """``default_memory`` split evenly across ``count`` nodes (huge pages: in 2 MiB steps), the rest on
    the last node, as Kata splits it for memory-only nodes."""
    mem, align = settings.memory_mib, 2 if _value(settings, HUGEPAGES_KEY) else 1
    each = mem // count // align * align
    if each == 0:
        raise ConfigError(f"default_memory {mem} MiB cannot be split across {count} guest NUMA nodes",
                          field=NUMA_KEY)
    return [each] * (count - 1) + [mem - each * (count - 1)]


# --- vIOMMU ------------------------------------------------------------------------------------------
def _check_iommu_machine(settings: SandboxSettings) -> None:
    if _value(settings, IOMMU_KEY) and not _machine_is(settings, "q35", "pc-q35"):
        raise ConfigError(
            f"Machine Type {settings.machine_type} does not support vIOMMU (Kata's intel-iommu needs q35)",
            field=IOMMU_KEY,
        )


def _iommu_args(settings: SandboxSettings, notes: list[str]) -> list[str]:
    if not _value(settings, IOMMU_KEY):
        return []
    _check_iommu_machine(settings)
    notes.append(f"{IOMMU_KEY}: the guest kernel needs intel_iommu=on iommu=pt on its command line (Kata "
                 "adds them; a plan has no kernel command line)")
    return ["-device", opts(INTEL_IOMMU, IOMMU_PROPS)]


# --- registration ------------------------------------------------------------------------------------
def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return QemuTarget(settings, context)


class _QmpDriver:
    """QEMU's live driver, :class:`vmdev.qmp.QmpHotPlugger` on a :class:`~vmdev.qmp.DeferredSession`,
    made when it is first asked anything. A device that never reaches the VM (a generic one) then
    leaves the QMP client unimported, about 0.4 ms of an ``attach`` (issue 13), and closing a driver
    never made does nothing. Every other attribute is the QmpHotPlugger's, so the driver answers the
    :class:`~vmdev.live.HotPlugger` and :class:`~vmdev.live.ObjectAware` protocols as it does. The
    manager's threads may ask it at once: one driver is made (QEMU's QMP socket takes one client)."""

    __slots__ = ("_connection", "_driver", "_lock")

    def __init__(self, connection: LiveConnection) -> None:
        self._connection = connection
        self._driver: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name in _QmpDriver.__slots__:  # not set yet: no driver to ask
            raise AttributeError(name)
        with self._lock:
            if self._driver is None:
                from vmdev.qmp import DeferredSession, QmpHotPlugger

                timeout = self._connection.timeout
                session = DeferredSession(self._connection.options["qmp"], timeout=min(timeout, 10.0))
                self._driver = QmpHotPlugger(session, command_timeout=timeout, unplug_timeout=timeout)
        return getattr(self._driver, name)

    def close(self) -> None:
        with self._lock:
            driver = self._driver
        if driver is not None:
            driver.close()


def _live(connection: LiveConnection) -> Any:
    return _QmpDriver(connection)


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
    from vmdev.pcie import MAX_ROOT_PORTS

    if not 0 <= value <= MAX_ROOT_PORTS:
        raise ValueError(f"must be a number of PCIe root ports from 0 to {MAX_ROOT_PORTS}, got {value!r}")


def _check_path(value: str) -> None:
    if value and not value.startswith("/"):
        raise ValueError(f'must be an absolute path ("" for none), got {value!r}')


#: Kata keeps these in a uint32
_UINT32: Final = 2**32 - 1
#: more independent iothreads than this would be a mistake (Kata takes any uint32)
MAX_INDEP_IOTHREADS: Final = 1024

#: Kata's [hypervisor.qemu] keys that mean something to this backend only (libvirt's enable_hugepages and
#: firmware are its own keys); enable_iommu and confidential_guest are read for every backend
QEMU_ONLY: Final = (NAME,)

SETTINGS: Final = (
    Setting(
        name=SPARE_ROOT_PORTS_KEY, type=INTEGER, default=0, check=_check_spare_ports,
        description="PCIe root ports a QEMU plan has at least (the devices' own included), so that "
        "devices can be hot-plugged into the running VM later (vmdev attach)",
    ),
    Setting(
        name=MEMORY_SLOTS_KEY, type=INTEGER, default=None, kata_key=MEMORY_SLOTS_KEY, minimum=0,
        backends=QEMU_ONLY,
        maximum=MAX_MEMORY_SLOTS,
        description="QEMU: memory hot-plug slots (-m slots=; 0: Kata's 10). Unset, with default_maxmemory "
        "unset too: only the slots devices need",
    ),
    Setting(
        name=MAX_MEMORY_KEY, type=INTEGER, default=None, kata_key=MAX_MEMORY_KEY, minimum=0,
        maximum=MAX_MEMORY_MIB, backends=QEMU_ONLY,
        description="QEMU: the most memory the guest may have in MiB (-m maxmem=, plus memory_offset and "
        "Kata's 1024 MiB for its image); 0: Kata's all of the host's memory, which a plan counts as "
        "default_memory. Unset, with memory_slots unset too: only the room devices need",
    ),
    Setting(
        name=MEMORY_OFFSET_KEY, type=INTEGER, default=0, kata_key=MEMORY_OFFSET_KEY, minimum=0,
        maximum=MAX_MEMORY_MIB, backends=QEMU_ONLY,
        description="QEMU: MiB added to maxmem when memory_slots or default_maxmemory is set",
    ),
    Setting(
        name=HUGEPAGES_KEY, backends=QEMU_ONLY, type=BOOLEAN, default=False, kata_key=HUGEPAGES_KEY,
        description="QEMU: back guest RAM with huge pages (memory-backend-file on /dev/hugepages)",
    ),
    Setting(
        name=FILE_MEM_BACKEND_KEY, type=STRING, default="", kata_key=FILE_MEM_BACKEND_KEY, check=_check_path,
        backends=QEMU_ONLY,
        description="QEMU: back guest RAM, shared, with a file in this directory (or this file); \"\": none "
        "(Kata 3.x's key; Kata 4.1 removed it)",
    ),
    Setting(
        name=MEM_PREALLOC_KEY, backends=QEMU_ONLY, type=BOOLEAN, default=False, kata_key=MEM_PREALLOC_KEY,
        description="QEMU: preallocate guest RAM (prealloc=on on its memory backend)",
    ),
    Setting(
        name=IOMMU_KEY, type=BOOLEAN, default=False, kata_key=IOMMU_KEY,
        description="a virtual IOMMU for the guest (QEMU: intel-iommu and the split IRQ chip, q35 only)",
    ),
    Setting(
        name=IOMMU_PLATFORM_KEY, backends=QEMU_ONLY, type=BOOLEAN, default=False, kata_key=IOMMU_PLATFORM_KEY,
        description="QEMU on s390x: iommu_platform=on for the CCW virtio devices Kata gives it (not disks, "
        "not the balloon)",
    ),
    Setting(
        name=BRIDGES_KEY, type=INTEGER, default=None, kata_key=BRIDGES_KEY, minimum=0, maximum=_UINT32,
        backends=QEMU_ONLY,
        description="QEMU: Kata's hot-plug PCI bridges pci-bridge-<i> on q35, virt and pseries (0: 1; at "
        "most 5). Unset: none (Kata's default is 1)",
    ),
    Setting(
        name=FIRMWARE_KEY, backends=QEMU_ONLY, type=STRING, default="", kata_key=FIRMWARE_KEY,
        description="the guest firmware; on q35 one makes Kata's bridges pcie-pci-bridges behind root ports "
        "(the QEMU plan has no -bios)",
    ),
    Setting(
        name=IOTHREADS_KEY, backends=QEMU_ONLY, type=BOOLEAN, default=False, kata_key=IOTHREADS_KEY,
        description="QEMU: an iothread for the SCSI controller and, with indep_iothreads, indep_iothread_0 "
        "for virtio block disks",
    ),
    Setting(
        name=INDEP_IOTHREADS_KEY, type=INTEGER, default=0, kata_key=INDEP_IOTHREADS_KEY, minimum=0,
        backends=QEMU_ONLY,
        maximum=MAX_INDEP_IOTHREADS,
        description="QEMU: independent iothreads indep_iothread_<i> made at boot",
    ),
    Setting(
        name=NUMA_KEY, backends=QEMU_ONLY, type=BOOLEAN, default=False, kata_key=NUMA_KEY,
        description="QEMU: guest NUMA nodes mapped to host NUMA nodes (numa_mapping; empty: one per host "
        "node); devices placed with their host node go behind the pxb-pcie of the guest node covering it",
    ),
    Setting(
        name=NUMA_MAPPING_KEY, backends=QEMU_ONLY, type=STRINGS, default=(), kata_key=NUMA_MAPPING_KEY,
        check=_check_numa_mapping,
        description="QEMU with enable_numa: the host NUMA nodes of each guest node, e.g. [\"0\", \"1\"] or "
        "[\"0-1\", \"2-3\"]; empty: guest nodes map 1:1 to the host's",
    ),
    Setting(
        name=CONFIDENTIAL_KEY, type=BOOLEAN, default=False, kata_key=CONFIDENTIAL_KEY,
        description="a confidential (memory-encrypted) guest: QEMU gets no memory hot plug and the split "
        "IRQ chip; device families leave out what Kata leaves out",
    ),
)
_DEFAULTS: Final[Mapping[str, Any]] = {s.name: s.default for s in SETTINGS}
#: keys another plugin declared for every backend before this backend owned them, with the same type
#: (none left: the passthrough family reads enable_iommu with ``settings.value(key, default)`` now)
_DECLARED_ELSEWHERE: Final[frozenset[str]] = frozenset()


@hookimpl(trylast=True)
def register_settings(register: Callable[[Setting], None]) -> None:
    """Declare the backend's keys; runs after the other plugins' declarations, so that a key one
    of them still declares (:data:`_DECLARED_ELSEWHERE`) keeps that declaration."""
    for setting in SETTINGS:
        try:
            register(setting)
        except PluginError:
            if setting.name not in _DECLARED_ELSEWHERE:
                raise


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    """Kata refuses a vIOMMU on machines other than q35 (a rule across two keys)."""
    if settings.hypervisor == NAME:
        _check_iommu_machine(settings)


# --- the guest NUMA nodes: a sandbox device of this backend --------------------------------------------
@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device] | None:
    """The guest's NUMA nodes when ``enable_numa`` is set on a QEMU plan (read from the host when
    ``numa_mapping`` is empty)."""
    if settings.hypervisor != NAME or not _value(settings, NUMA_KEY):
        return None
    return [guest_numa(settings, host)]


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> Any:
    """The guest NUMA nodes have no options of their own: :func:`assemble` writes them with guest RAM."""
    if isinstance(device, GuestNuma) and isinstance(target, QemuTarget):
        return QemuAttach(details={"guest_nodes": [n.host_nodes for n in device.nodes]})
    return None


@hookimpl
def device_from_state(kind: str, data: Mapping[str, Any], plugin: str) -> Device | None:
    if kind != GuestNuma.kind:
        return None
    from vmdev.serialize import from_json

    return from_json(GuestNuma, data)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    """The host NUMA nodes and their CPUs the guest's nodes were made from."""
    if not isinstance(device, GuestNuma):
        return None
    facts = {"devices/system/node/online": host.sysfs.read_line("devices/system/node/online") or ""}
    for node in device.nodes:
        for host_node in parse_node_set(node.host_nodes):
            path = f"devices/system/node/node{host_node}/cpulist"
            facts[path] = host.sysfs.read_line(path) or ""
    return facts
