"""Guest PCI paths of a QEMU plan, from its command line: what the guest will see.

A guest PCI path is the list of slots from the root bus to the device (Kata's ``PciPath``,
``02/00``: slot 2 of the root bus, a root port, then slot 0 behind it). vmdev's QEMU plans give
ports and bridges no ``addr``, so QEMU picks their slots: devices are created in command-line
order and each takes the lowest free slot of its bus; the root bus has slot 0 taken by the host
bridge (and ``pc`` slot 1 by the PIIX3, ``q35`` slot 31 by the ICH9 functions). This module
replays that, for the ``-nodefaults`` machines vmdev plans for (``q35`` and ``pc``).

A ``-device`` without ``bus=`` lands on the root bus only if it is a PCI device. The drivers
whose kind is not known make the replay uncertain: then :func:`guest_pci_paths` answers None
rather than a path that might be wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

#: drivers that are PCI devices although their names do not end in -pci
PCI_DRIVERS: Final = frozenset({
    "pcie-root-port", "pci-bridge", "pcie-pci-bridge", "x3130-upstream", "xio3130-downstream",
    "vfio-pci", "vfio-pci-nohotplug", "e1000", "e1000e", "igb", "rtl8139", "i6300esb", "ivshmem-plain",
    "ivshmem-doorbell", "nvme", "pvscsi", "megasas", "lsi53c895a", "qxl", "VGA", "bochs-display",
    "intel-hda", "ich9-intel-hda", "qemu-xhci", "nec-usb-xhci", "usb-ehci", "ich9-usb-ehci1", "pci-testdev",
    "edu", "ioh3420",
})
#: root-bus slots the machine itself holds
RESERVED_SLOTS: Final = {"q35": (0, 31), "pc": (0, 1)}


def _is_pci(driver: str) -> bool | None:
    if driver in PCI_DRIVERS or driver.endswith(("-pci", "-pci-transitional", "-pci-non-transitional")):
        return True
    if driver.endswith(("-device", "-ccw")) or driver.startswith(("scsi-", "usb-", "virtserial")) \
            or driver in ("nvdimm", "pc-dimm", "virtconsole", "virtserialport", "isa-serial"):
        return False
    return None


def _props(text: str) -> tuple[str, dict[str, str]]:
    """``driver,key=value,...`` split as QEMU does (a doubled comma is a comma in a value)."""
    parts: list[str] = []
    current = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "," and text[index + 1:index + 2] == ",":
            current += ","
            index += 2
            continue
        if char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    props = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        props[key] = value
    return parts[0], props


@attrs.frozen
class Placed:
    bus: str
    slot: int


def machine_root(machine_type: str) -> str | None:
    """The root bus name of a machine vmdev can replay (None for others)."""
    if machine_type.startswith("q35"):
        return "pcie.0"
    if machine_type == "pc" or machine_type.startswith(("pc-i440fx", "pc-")):
        return "pci.0"
    return None


def _slot(addr: str) -> int:
    return int(addr.partition(".")[0], 16)


def place_devices(argv: Sequence[str], machine_type: str) -> dict[str, Placed] | None:
    """Each ``-device`` id -> its bus and slot, or None when the replay is uncertain."""
    root = machine_root(machine_type)
    if root is None:
        return None
    kind = "q35" if root == "pcie.0" else "pc"
    taken: dict[str, set[int]] = {root: set(RESERVED_SLOTS[kind])}
    placed: dict[str, Placed] = {}
    for index, arg in enumerate(argv[:-1]):
        if arg != "-device":
            continue
        driver, props = _props(argv[index + 1])
        bus = props.get("bus", "")
        if not bus:
            pci = _is_pci(driver)
            if pci is None:
                return None
            if not pci:
                continue
            bus = root
        used = taken.setdefault(bus, set())
        slot = _slot(props["addr"]) if "addr" in props else next(s for s in range(32) if s not in used)
        used.add(slot)
        if "id" in props:
            placed[props["id"]] = Placed(bus, slot)
    return placed


def bus_path(bus: str, placed: Mapping[str, Placed], root: str) -> tuple[int, ...] | None:
    """The slots leading to the secondary bus ``bus`` (a port's or bridge's id); () for the root."""
    path: list[int] = []
    while bus != root:
        parent = placed.get(bus)
        if parent is None:
            return None
        path.insert(0, parent.slot)
        bus = parent.bus
    return tuple(path)


def format_path(slots: Sequence[int]) -> str:
    return "/".join(f"{slot:02x}" for slot in slots)


def guest_pci_paths(
    argv: Sequence[str], machine_type: str, placements: Sequence[Mapping[str, str]]
) -> list[str] | None:
    """The guest PCI path of each placed function (``{"id", "bus", "addr"}``, as vmdev-vfio
    reports its placement), or None when the machine's layout cannot be replayed.

    A function on a port or bridge (cold or hot plugged) sits at ``addr`` (slot 0 when absent)
    behind that port; a function on the root bus is found in ``argv`` by its id.
    """
    root = machine_root(machine_type)
    placed = place_devices(argv, machine_type)
    if root is None or placed is None:
        return None
    out = []
    for place in placements:
        bus = place.get("bus") or ""
        if bus and bus != root:
            prefix = bus_path(bus, placed, root)
            if prefix is None:
                return None
            slots = (*prefix, _slot(place["addr"]) if place.get("addr") else 0)
        else:
            found = placed.get(place.get("id", ""))
            if found is None:
                return None
            slots = (found.slot,)
        out.append(format_path(slots))
    return out
