"""What a device is rendered into for libvirt, and the render target that hands out PCIe root ports.

Public API for family plugins that render themselves for libvirt: their ``attach_options``
returns a :class:`LibvirtAttach` when the target is a :class:`LibvirtTarget`::

    from vmdev_libvirt import LibvirtAttach, LibvirtTarget, element

    if isinstance(target, LibvirtTarget):
        address = target.address(device.id)           # its own pcie-root-port on q35
        node = element("watchdog", {"model": "i6300esb", "action": "reset"}, address)
        return LibvirtAttach(devices=[node], hotplugged=hotplug)

Every PCI device gets an explicit guest address on a ``pcie-root-port`` of its own (q35): a
device without one would make libvirt take a free root port at define time, and those are the
ports kept for hot plug. On ``pc`` (i440fx) libvirt places devices on ``pci.0`` itself, where hot
plug works without ports; on s390x devices are on the CCW bus.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs

from vmdev.backends.qemu import ROOT_PORT
from vmdev.errors import UnsupportedError
from vmdev.pcie import MAX_ROOT_PORTS
from vmdev.qemu import MemoryNeeds
from vmdev.state import PortRecord
from vmdev.targets import RenderTarget
from vmdev_libvirt.constants import NAME as NAME
from vmdev_libvirt.xmltree import parse, pci_address, to_xml

#: libvirt names the PCI controller with index N ``pci.N``: a hot-plug port's id in vmdev's books
PORT_PREFIX: Final = "pci."
#: user aliases (libvirt keeps them as given) start with this
ALIAS_PREFIX: Final = "ua-"
_ALIAS_BAD: Final = re.compile(r"[^A-Za-z0-9_-]")


def alias(device_id: str) -> str:
    """The libvirt user alias of a device id (``ua-<id>``; characters libvirt refuses become ``_``)."""
    return ALIAS_PREFIX + _ALIAS_BAD.sub("_", device_id)


def port_id(index: int) -> str:
    return f"{PORT_PREFIX}{index}"


def port_index(port: str) -> int:
    """The controller index of a port id (``pci.3`` -> 3)."""
    if not port.startswith(PORT_PREFIX) or not port[len(PORT_PREFIX):].isdigit():
        raise ValueError(f"{port!r} is not a libvirt PCI controller name (pci.N)")
    return int(port[len(PORT_PREFIX):])


def _elements(value: Iterable[str | ET.Element]) -> tuple[str, ...]:
    out: list[str] = []
    for item in value:
        text = to_xml(item) if isinstance(item, ET.Element) else item
        parse(text)
        out.append(text)
    return tuple(out)


def _keyed(value: Mapping[str, str | ET.Element]) -> dict[str, str]:
    return {key: _elements([item])[0] for key, item in value.items()}


def _any_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class LibvirtAttach:
    """One device rendered for libvirt.

    ``devices`` are its ``<devices>`` children (XML strings; ElementTree elements are accepted and
    serialised), in the order libvirt should get them. Cold-plugged, they go into the domain;
    ``hotplugged``, each is attached to the running domain (``virsh attach-device --live
    --config``) and detached in reverse order. ``controllers`` are elements several devices may
    need once (keyed, like the virtio-scsi controller); ``memory`` the domain-level memory the
    device needs (hot-plug slots, shared guest RAM). ``unpluggable`` is false for a device QEMU
    cannot remove again (nvdimm): it stays in the VM once attached.
    """

    devices: tuple[str, ...] = attrs.field(default=(), converter=_elements)
    controllers: Mapping[str, str] = attrs.field(factory=dict, converter=_keyed)
    hotplugged: bool = False
    unpluggable: bool = True
    memory: MemoryNeeds = attrs.field(factory=MemoryNeeds)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_dict)

    @property
    def hotplug(self) -> tuple[dict[str, str], ...]:
        """The live steps that plug it (``{"attach": xml}``), empty for a cold-plugged device."""
        return tuple({"attach": xml} for xml in self.devices) if self.hotplugged else ()

    @property
    def unplug(self) -> tuple[dict[str, str], ...]:
        """The live steps that unplug it (``{"detach": xml}``, last attached first)."""
        if not (self.hotplugged and self.unpluggable):
            return ()
        return tuple({"detach": xml} for xml in reversed(self.devices))


# --- PCIe root ports ---------------------------------------------------------------------------------
@attrs.define
class RootPorts:
    """The plan's ``pcie-root-port`` controllers (index 1, 2, ...), one device each; for a device
    hot-plugged into a running domain, that domain's free ports (``live``) instead."""

    live: Callable[[], Sequence[PortRecord]] | None = None
    users: dict[int, str] = attrs.Factory(dict)
    taken: list[str] = attrs.Factory(list)
    _free: list[PortRecord] | None = None

    def take(self, device: str, field: str, user: str = "") -> int:
        """A free port for ``device`` (``user``: what the plan's books call its occupant, the
        device by default)."""
        if self.live is None:
            index = len(self.users) + 1
            self._check_room(index, device, field)
            self.users[index] = user or device
            return index
        if self._free is None:
            self._free = [p for p in self.live() if p.kind == ROOT_PORT]
        for port in self._free:
            if port.id not in self.taken:
                self.taken.append(port.id)
                return port_index(port.id)
        raise UnsupportedError(
            f"no free pcie-root-port left in the running domain ({len(self._free)} were free, all taken); "
            "define the domain with spare ports (hotplug_root_ports = N in the [vmdev] settings)",
            device=device,
            field=field,
        )

    def ensure(self, count: int, *, device: str, field: str) -> None:
        """At least ``count`` ports in the plan (unused ones are left for hot plug)."""
        while len(self.users) < count:
            index = len(self.users) + 1
            self._check_room(index, device, field)
            self.users[index] = ""

    @staticmethod
    def _check_room(index: int, device: str, field: str) -> None:
        if index > MAX_ROOT_PORTS:
            raise UnsupportedError(
                f"a plan has at most {MAX_ROOT_PORTS} pcie-root-ports (each reserves a window of the "
                f"64 KiB I/O space); this device would need port {index}",
                device=device,
                field=field,
            )


@attrs.define
class LibvirtTarget(RenderTarget):
    """Rendering for libvirt (``vmdev plan --hypervisor libvirt``).

    :meth:`address` gives a PCI device its guest address: on q35 (a PCIe root complex) slot 0 of
    a ``pcie-root-port`` of its own; for a device hot-plugged into a running domain, one of that
    domain's free ports. :meth:`root_port_elements` renders the plan's ports.
    """

    hypervisor: ClassVar[str] = NAME
    attach_type: ClassVar[type[Any]] = LibvirtAttach
    _ports: RootPorts = attrs.field(init=False, default=attrs.Factory(
        lambda self: RootPorts(live=self.context.live_ports), takes_self=True))
    _shared: dict[str, int | None] = attrs.field(init=False, factory=dict)

    @property
    def live(self) -> bool:
        """Rendering for a running domain (its ports are fixed)."""
        return self._ports.live is not None

    @property
    def pcie(self) -> bool:
        """The machine has a PCIe root complex (q35, virt): devices go on root ports."""
        return self.settings.has_pcie_root

    @property
    def ccw(self) -> bool:
        """s390x: virtio devices are on the channel subsystem, not PCI."""
        return self.settings.is_ccw

    def root_port(self, device: str, *, field: str = "port", user: str = "") -> int | None:
        """The controller index of a root port of the device's own; None on a machine without a
        PCIe root complex (libvirt places the device itself)."""
        if self.settings.is_microvm:
            raise UnsupportedError(
                f"libvirt has no support for machine {self.settings.machine_type}; use q35",
                device=device,
                field="machine_type",
            )
        if not self.pcie or self.ccw:
            return None
        return self._ports.take(device, field, user)

    def address(self, device: str, *, field: str = "port") -> ET.Element | None:
        """``<address type='pci' bus='<port>' slot='0'/>`` on a root port of the device's own
        (None where libvirt places devices itself)."""
        port = self.root_port(device, field=field)
        return None if port is None else pci_address(port)

    def shared_address(self, key: str, device: str, *, field: str = "port") -> ET.Element | None:
        """The address of an element several devices share (``controllers``, such as the
        virtio-scsi controller ``key``): a root port of its own, taken by the first device that
        needs it. None for a running domain, which has the element from boot or not at all (the
        live driver checks), and where libvirt places devices itself."""
        if self.live:
            return None
        if key not in self._shared:
            self._shared[key] = self.root_port(device, field=field, user=f"{key} (shared)")
        port = self._shared[key]
        return None if port is None else pci_address(port)

    def ensure_root_ports(self, count: int, *, device: str, field: str) -> None:
        if self.pcie and not self.ccw and not self.live:
            self._ports.ensure(count, device=device, field=field)

    def root_port_elements(self) -> list[ET.Element]:
        """The ``pcie-root-port`` controllers of the plan (none for a running domain)."""
        if self.live:
            return []
        return [ET.Element("controller", {"type": "pci", "index": str(index), "model": "pcie-root-port"})
                for index in sorted(self._ports.users)]

    @property
    def ports_taken(self) -> tuple[str, ...]:
        return tuple(self._ports.taken)

    def spare_ports(self, hot_devices: set[str]) -> list[tuple[str, str]]:
        if self.live:
            return []
        return [(port_id(index), ROOT_PORT) for index, user in sorted(self._ports.users.items())
                if not user or user in hot_devices]
