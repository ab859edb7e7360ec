"""QEMU: ``-device vfio-pci`` (``vfio-ap`` for AP) on the planned port, or QMP hot plug.

Placement of one request's functions (they always stay together):

* ``root-port`` / ``switch-port``: one port of their own, the functions as ``00.0``, ``00.1``...
  of its only slot (Linux scans only device 0 behind a PCIe port). Several functions make a
  multi-function device: cold plug renders function 0 first with ``multifunction=on``; hot plug
  adds the other functions first and function 0 last (that is what makes the guest see the
  slot), and unplugs the whole slot with one ``device_del`` of function 0.
* ``bridge-port``: consecutive slots of one ``pci-bridge``, one function each.
* ``no-port``: straight onto the root bus (QEMU picks the slots): cold plug only on q35,
  where ``pcie.0`` cannot take hot-plugged devices.

IOMMUFD cdev requests share one ``iommufd`` object, ``iommufd0``, per sandbox. Cold plug: each
request gives it as a shared option (``-object iommufd,id=iommufd0``, once on the command line).
Hot plug: the object is a shared hot-plug object, rendered the same way wherever it appears:
``object-add {"qom-type": "iommufd", "id": "iommufd0"}`` first in ``hotplug`` and
``object-del {"id": "iommufd0"}`` last in ``unplug``. In a boot plan (all hot plugs run in
order, all unplugs in reverse) only the first cdev request carries the pair; a request
hot-plugged into a running VM always carries it, and the device manager, which knows which
attached devices use ``iommufd0``, adds it only when it is missing and deletes it only with its
last user (the object cannot be deleted while a device uses it).

Large BARs: the request's BAR space (:attr:`VFIODevice.bar_space`) goes to the topology with its
place. Hot-plugged, it becomes its port's window reservations (sized for the firmware: see
:meth:`vmdev.pcie.BarSpace.hot_reserve`); cold-plugged, it counts for the 64-bit PCI window the QEMU
backend sizes the guest's address width and OVMF's aperture from. NUMA: with guest NUMA on, a
request on root ports asks for a port by its functions' host NUMA node (the backend puts it behind
the pxb-pcie of the guest node covering it); without, the plan's notes say the host node.
Why each option was chosen is recorded for ``vmdev explain`` (:mod:`vmdev_vfio.why`).

``pcie_root_port`` / ``pcie_switch_port`` spares (:mod:`vmdev_vfio.ports`) are rendered here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.models import PCIePort
from vmdev.pcie import SLOT_FUNCTIONS
from vmdev.qemu import OptValue, QemuAttach, QmpCommand, opts
from vmdev.targets import CCW, MMIO
from vmdev_vfio import why
from vmdev_vfio.device import VfioBackend, VFIODev, VFIODevice, VFIODeviceType
from vmdev_vfio.ports import PortReservation
from vmdev_vfio.settings import ROOT_PORTS_KEY, SWITCH_PORTS_KEY

IOMMUFD_ID: Final = "iommufd0"
IOMMUFD_NOTE: Final = "vfio.iommufd-object"
#: the shared object's hot-plug pair (see the module documentation)
IOMMUFD_ADD: Final = QmpCommand("object-add", {"qom-type": "iommufd", "id": IOMMUFD_ID})
IOMMUFD_DEL: Final = QmpCommand("object-del", {"id": IOMMUFD_ID})


def render(device: VFIODevice, target: QemuTarget, hotplug: bool) -> QemuAttach:
    name = device.container_path
    if target.transport == MMIO:
        raise UnsupportedError(
            f"machine {target.settings.machine_type} has no PCI bus for VFIO passthrough; use q35",
            device=name,
            field="machine_type",
        )
    if device.is_ap or target.transport == CCW:
        return _render_ccw(device, target, hotplug)
    hot = hotplug and not device.cold_plug
    places = _place(device, target, hot)
    why.record(device, target, hotplug=hotplug, hot=hot, places=places)
    notes = _numa_notes(device, target)
    if hot:
        return _hotplug(device, target, places, notes)
    return _coldplug(device, places, notes)


def render_ports(device: PortReservation, target: QemuTarget) -> QemuAttach:
    """The spare ports: pad the topology to the configured count and list the unused ones."""
    topology = target.topology
    if device.port is PCIePort.ROOT_PORT:
        spare = topology.ensure_root_ports(device.count, device=device.id, field=ROOT_PORTS_KEY)
    else:
        spare = topology.ensure_switch_ports(device.count, device=device.id, field=SWITCH_PORTS_KEY)
    return QemuAttach(details={"spare": list(spare)})


# --- placement -----------------------------------------------------------------------------
Place = tuple[str | None, str | None, bool]  # bus, addr, multifunction


def _place(device: VFIODevice, target: QemuTarget, hot: bool) -> list[Place]:
    topology = target.topology
    name, count = device.container_path, len(device.functions)
    field = "hot_plug_vfio" if hot else "cold_plug_vfio"
    port, bars = device.port, device.bar_space
    if port in (PCIePort.ROOT_PORT, PCIePort.SWITCH_PORT):
        if count > SLOT_FUNCTIONS:
            raise UnsupportedError(
                f"IOMMU group {device.iommu_group} has {count} functions; a {port.value} takes one "
                f"slot of {SLOT_FUNCTIONS} functions: use bridge-port",
                device=name,
                field=field,
            )
        if port is PCIePort.ROOT_PORT:
            bus = topology.root_port(name, field=field, bars=bars, hotplug=hot, numa_node=device.numa_node)
        else:
            bus = topology.switch_port(name, field=field, bars=bars, hotplug=hot)
        if count == 1:
            return [(bus, None, False)]
        return [(bus, f"00.{i}", i == 0) for i in range(count)]
    if port is PCIePort.BRIDGE_PORT:
        bus, slots = topology.bridge_slots(name, count, field=field, bars=bars, hotplug=hot)
        return [(bus, f"{slot:02x}.0", False) for slot in slots]
    if hot:
        try:
            topology.check_hotplug_bus(None, name, field="hot_plug_vfio")
        except UnsupportedError as exc:
            raise UnsupportedError(
                f'{exc.message}: set hot_plug_vfio = "root-port" (or "switch-port", "bridge-port")',
                device=name,
                field="hot_plug_vfio",
            ) from None
    else:
        topology.root_bus_slots(name, count, field=field, bars=bars)
    return [(None, None, False)] * count


def _numa_notes(device: VFIODevice, target: QemuTarget) -> list[str]:
    """What the plan says about the functions' host NUMA nodes when the guest cannot follow them."""
    node = device.numa_node
    if node < 0:
        return []
    bdfs = ", ".join(f.bdf for f in device.functions if f.numa_node == node)
    if not target.topology.numa:
        return [f"{bdfs} sits on host NUMA node {node} (sysfs numa_node); the guest has no NUMA nodes "
                "(enable_numa = false), so it cannot place it near that node's memory and CPUs"]
    if device.port is not PCIePort.ROOT_PORT:
        return [f"{bdfs} sits on host NUMA node {node}; only root-port devices go behind a guest node's "
                f"pxb-pcie (as in Kata), and this one is on a {device.port.value}"]
    return []


# --- rendering -----------------------------------------------------------------------------
def _props(function: VFIODev, device: VFIODevice, place: Place) -> dict[str, OptValue | None]:
    bus, addr, multifunction = place
    props: dict[str, OptValue | None] = {}
    if function.type is VFIODeviceType.MEDIATED:
        props["sysfsdev"] = function.sysfs_dev
    else:
        props["host"] = function.bdf
    props.update({"id": function.id, "bus": bus, "addr": addr})
    if multifunction:
        props["multifunction"] = True
    if device.backend is VfioBackend.IOMMUFD:
        props["iommufd"] = IOMMUFD_ID
    return props


def _coldplug(device: VFIODevice, places: list[Place], notes: list[str]) -> QemuAttach:
    args: list[str] = []
    for function, place in zip(device.functions, places, strict=True):
        args += ["-device", opts("vfio-pci", _props(function, device, place))]
    shared = {IOMMUFD_ID: ("-object", opts("iommufd", {"id": IOMMUFD_ID}))} \
        if device.backend is VfioBackend.IOMMUFD else {}
    return QemuAttach(args=args, shared_args=shared, details=_details(device, places, notes))


def _hotplug(device: VFIODevice, target: QemuTarget, places: list[Place], notes: list[str]) -> QemuAttach:
    pairs = list(zip(device.functions, places, strict=True))
    multifunction = any(place[2] for _, place in pairs)
    # function 0 of a multi-function slot goes last: adding it makes the guest scan the slot
    order = sorted(pairs, key=lambda pair: pair[1][2]) if multifunction else pairs
    adds = [QmpCommand("device_add", _qmp(function, device, place)) for function, place in order]
    if multifunction:
        dels = [QmpCommand("device_del", {"id": device.functions[0].id})]  # removes the whole slot
    else:
        dels = [QmpCommand("device_del", {"id": f.id}) for f in reversed(device.functions)]
    if _adds_iommufd_object(device, target):
        adds.insert(0, IOMMUFD_ADD)
        dels.append(IOMMUFD_DEL)
    details = _details(device, places, notes)
    details["unplug_removes"] = [f.id for f in device.functions]
    return QemuAttach(hotplug=adds, unplug=dels, hotplugged=True, details=details)


def _adds_iommufd_object(device: VFIODevice, target: QemuTarget) -> bool:
    """A cdev request carries the shared object's pair: always in a running VM, else when it is
    the plan's first cdev request."""
    if device.backend is not VfioBackend.IOMMUFD:
        return False
    first = len(target.record(IOMMUFD_NOTE, device.container_path, "")) == 1
    return first or target.live


def _qmp(function: VFIODev, device: VFIODevice, place: Place) -> dict[str, Any]:
    args: dict[str, Any] = {"driver": "vfio-pci"}
    args.update({k: v for k, v in _props(function, device, place).items() if v is not None})
    return args


def _render_ccw(device: VFIODevice, target: QemuTarget, hotplug: bool) -> QemuAttach:
    """s390x: AP matrix devices as ``vfio-ap``, channel-I/O mdevs as ``vfio-ccw``, PCI as zPCI."""
    name = device.container_path
    if target.transport != CCW:
        raise UnsupportedError(
            "AP (s390x crypto) devices need an s390x machine (s390-ccw-virtio), "
            f"not {target.settings.machine_type}",
            device=name,
            field="machine_type",
        )
    hot = hotplug and not device.cold_plug
    rendered: list[tuple[str, dict[str, OptValue | None]]] = []
    for function in device.functions:
        driver, props = _ccw_device(function)
        rendered.append((driver, {**props, "id": function.id}))
    places: list[Place] = [(None, None, False)] * len(rendered)
    if hot:
        return QemuAttach(
            hotplug=[QmpCommand("device_add", {"driver": d, **{k: v for k, v in p.items() if v is not None}})
                     for d, p in rendered],
            unplug=[QmpCommand("device_del", {"id": f.id}) for f in reversed(device.functions)],
            hotplugged=True,
            details=_details(device, places),
        )
    args: list[str] = []
    for driver, props in rendered:
        args += ["-device", opts(driver, props)]
    return QemuAttach(args=args, details=_details(device, places))


def _ccw_device(function: VFIODev) -> tuple[str, dict[str, OptValue | None]]:
    if function.type is VFIODeviceType.AP:
        return "vfio-ap", {"sysfsdev": function.sysfs_dev}
    if function.type is VFIODeviceType.MEDIATED and not function.bdf:
        return "vfio-ccw", {"sysfsdev": function.sysfs_dev}
    if function.type is VFIODeviceType.MEDIATED:
        return "vfio-pci", {"sysfsdev": function.sysfs_dev}
    return "vfio-pci", {"host": function.bdf}


def _details(device: VFIODevice, places: list[Place], notes: Sequence[str] = ()) -> dict[str, Any]:
    placement: list[Mapping[str, Any]] = [
        {"id": f.id, "bdf": f.bdf, "bus": bus or "", "addr": addr or ""}
        for f, (bus, addr, _) in zip(device.functions, places, strict=True)
    ]
    details: dict[str, Any] = {"placement": placement, "agent_type": device.agent_type}
    if device.backend is VfioBackend.IOMMUFD:
        details["requires"] = "QEMU >= 9.0 (-object iommufd) and /dev/iommu"
    if notes:
        details["notes"] = list(notes)
    return details
