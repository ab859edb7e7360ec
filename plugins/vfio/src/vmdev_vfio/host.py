"""What the host's sysfs says about VFIO devices: groups, cdevs, functions, mdevs, AP queues.

Everything is read through :class:`vmdev.host.HostContext`, so tests point it at a fake tree.
:func:`host_facts` re-reads what decided a built device's options, for the device manager to
compare later (host drift).
Layout (Linux 6.1 to 6.12, see the plugin's README):

* ``kernel/iommu_groups/<g>/devices/<name>``: links to every device of group ``g``; the name
  is a PCI address (``0000:03:01.0``) or, for a mediated or AP device, a UUID;
* ``bus/pci/devices/<bdf>/{vendor,device,class,numa_node,config,resource,driver}``;
* ``class/vfio/<g>/dev``: ``MAJOR:MINOR`` of the group node ``/dev/vfio/<g>``; the kernel makes
  it when a VFIO driver (vfio-pci, vfio_mdev, vfio_ap...) binds a device of group ``g``;
* ``class/vfio-dev/vfio<N>/device``: the function behind the IOMMUFD cdev
  ``/dev/vfio/devices/vfio<N>``; ``class/vfio-dev/vfio<N>/dev`` exists only when the kernel
  has the cdev (``CONFIG_VFIO_DEVICE_CDEV``);
* mediated devices resolve below their parent function, AP devices below
  ``devices/vfio_ap/matrix``, whose ``matrix`` file lists the AP queues (``05.001f``).
"""

from __future__ import annotations

import enum
import json
import re
from typing import TYPE_CHECKING, Final

import attrs

from vmdev.errors import DeviceError
from vmdev.host import HostContext
from vmdev.models import PCI_DOMAIN
from vmdev.pcie import DEFAULT_WINDOW, Bar, BarKind

if TYPE_CHECKING:
    from vmdev_vfio.device import VFIODevice

BDF_RE: Final = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
SHORT_BDF_RE: Final = re.compile(r"[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
APQN_RE: Final = re.compile(r"[0-9a-fA-F]{2}\.[0-9a-fA-F]{4}")
#: classes Kata skips in a group (``class >> 8``): host bridge, PCI-to-PCI bridge. 0x0680
#: ("other bridge", e.g. NVSwitch) is a device to pass, not a bridge.
BRIDGE_CLASSES: Final = {0x0600: "host bridge", 0x0604: "PCI-to-PCI bridge"}
VFIO_PCI: Final = "vfio-pci"
AP_ROOT: Final = "/devices/vfio_ap/"

# struct resource flags (include/linux/ioport.h)
_IORESOURCE_IO: Final = 0x100
_IORESOURCE_MEM: Final = 0x200
_IORESOURCE_PREFETCH: Final = 0x2000
_IORESOURCE_MEM_64: Final = 0x100000
_BAR_LINES: Final = 6
#: a conventional PCI function's config space; a PCIe function's (4 KiB) is larger
PCI_CONFIG_SPACE_SIZE: Final = 256


class VFIODeviceType(enum.IntEnum):
    """What an IOMMU group entry is (Kata's ``GetVFIODeviceType``; numbers as Kata persists them)."""

    ERROR = 0
    NORMAL = 1
    MEDIATED = 2
    AP = 3


@attrs.frozen(kw_only=True)
class Windows:
    """Bytes of BAR space a function needs, by kind of bridge window."""

    io: int = 0
    mem: int = 0
    pref32: int = 0
    pref64: int = 0

    def __add__(self, other: Windows) -> Windows:
        return Windows(
            io=self.io + other.io,
            mem=self.mem + other.mem,
            pref32=self.pref32 + other.pref32,
            pref64=self.pref64 + other.pref64,
        )


@attrs.frozen(kw_only=True)
class PciFunction:
    """One PCI function as sysfs describes it."""

    bdf: str
    sysfs_dev: str
    vendor_id: str
    device_id: str
    class_: str
    numa_node: int
    is_pcie: bool
    driver: str
    iommu_group: str
    windows: Windows
    has_vfio_dev: bool
    #: the BARs larger than the firmware's default window (they decide alignments and limits)
    large_bars: tuple[Bar, ...] = ()

    @property
    def bridge(self) -> str:
        """``host bridge`` / ``PCI-to-PCI bridge`` for the classes a group may carry, else ``""``."""
        return bridge_kind(self.class_)

    @property
    def vfio_bound(self) -> bool:
        """Bound to vfio-pci or one of its variant drivers (``mlx5_vfio_pci``...)."""
        return is_vfio_driver(self.driver) or (bool(self.driver) and self.has_vfio_dev)


@attrs.frozen(kw_only=True)
class GroupMember:
    """One entry of ``iommu_groups/<g>/devices``, classified as Kata's ``GetVFIODetails`` does."""

    index: int
    name: str
    type: VFIODeviceType
    #: the device's own sysfs directory (resolved), as an absolute host path
    sysfs_dev: str
    #: the PCI function: itself (normal) or the parent (mediated); None for AP devices
    function: PciFunction | None
    ap_devices: tuple[str, ...] = ()


def is_vfio_driver(driver: str) -> bool:
    return driver == VFIO_PCI or driver.endswith(("_vfio_pci", "-vfio-pci"))


def full_bdf(bdf: str) -> str:
    """``02:00.0`` -> ``0000:02:00.0`` (Kata adds the domain to short addresses)."""
    return f"{PCI_DOMAIN}:{bdf}" if SHORT_BDF_RE.fullmatch(bdf) else bdf


def bridge_kind(class_code: str, *, device: str = "", source: str = "") -> str:
    """Kata's ``checkIgnorePCIClass``: the bridge kind for 0x0600xx / 0x0604xx, else ``""``."""
    if not class_code:
        return ""
    try:
        value = int(class_code, 16) if class_code.lower().startswith("0x") else int(class_code, 10)
    except ValueError:
        raise DeviceError(
            f"{source or 'class'} holds {class_code!r}, not a PCI class code", device=device, field="class"
        ) from None
    return BRIDGE_CLASSES.get(value >> 8, "")


def read_function(host: HostContext, bdf: str, *, device: str) -> PciFunction:
    """Read ``bus/pci/devices/<bdf>``; an error naming the function when it does not exist."""
    bdf = full_bdf(bdf)
    base = f"bus/pci/devices/{bdf}"
    sysfs = host.sysfs
    if not sysfs.exists(base):
        raise DeviceError(
            f"PCI function {bdf} does not exist ({sysfs.path(base)} is missing)", device=device, field="bdf"
        )
    class_code = sysfs.read_line(f"{base}/class") or ""
    bridge_kind(class_code, device=device, source=str(sysfs.path(f"{base}/class")))
    config_size = sysfs.size(f"{base}/config")
    resource, source = sysfs.read_text(f"{base}/resource") or "", str(sysfs.path(f"{base}/resource"))
    return PciFunction(
        bdf=bdf,
        sysfs_dev=str(sysfs.path(base)),
        vendor_id=sysfs.read_line(f"{base}/vendor") or "",
        device_id=sysfs.read_line(f"{base}/device") or "",
        class_=class_code,
        numa_node=_numa_node(sysfs.read_line(f"{base}/numa_node")),
        is_pcie=config_size is not None and config_size > PCI_CONFIG_SPACE_SIZE,
        driver=sysfs.link_name(f"{base}/driver") or "",
        iommu_group=sysfs.link_name(f"{base}/iommu_group") or "",
        windows=parse_resources(resource, device=device, source=source),
        has_vfio_dev=bool(sysfs.list_dir(f"{base}/vfio-dev")),
        large_bars=tuple(bar for bar in parse_bars(resource, bdf, device=device, source=source)
                         if bar.size > DEFAULT_WINDOW),
    )


def _numa_node(text: str | None) -> int:
    """Kata's ``GetPCIDeviceNUMANode``: empty or unparsable gives -1."""
    try:
        return int(text or "")
    except ValueError:
        return -1


#: one field of a ``resource`` line as the kernel writes it (``0x%016llx``)
_HEX_FIELD: Final = re.compile(r"0x[0-9a-fA-F]{1,16}")


def parse_resources(text: str, *, device: str = "", source: str = "resource") -> Windows:
    """Sum the sizes of a function's BARs (the first six lines of its ``resource`` file).

    Each line is ``start end flags`` in the kernel's ``0x%016llx``; a line of another shape is a
    :class:`DeviceError` naming ``source`` and the line (``int()`` would take ``0x1_0``, ``-0x1``
    or ``²`` and the windows sized from them would be wrong; Kata ignores the file)."""
    total = Windows()
    for _, start, end, flags in _bar_lines(text, device=device, source=source):
        total = total + _window(end - start + 1, flags)
    return total


def parse_bars(text: str, function: str, *, device: str = "", source: str = "resource") -> list[Bar]:
    """The I/O and memory BARs of ``function``'s ``resource`` file (lines 0-5 are BARs 0-5; an
    unused BAR, and the upper half of a 64-bit one, reads as zeros)."""
    bars = []
    for index, start, end, flags in _bar_lines(text, device=device, source=source):
        if flags & _IORESOURCE_IO:
            kind = BarKind.IO
        elif flags & _IORESOURCE_MEM:
            kind = BarKind.PREF if flags & _IORESOURCE_PREFETCH else BarKind.MEM
        else:
            continue
        bars.append(Bar(function=function, index=index, size=end - start + 1, kind=kind,
                        is64=bool(flags & _IORESOURCE_MEM_64)))
    return bars


def _bar_lines(text: str, *, device: str, source: str) -> list[tuple[int, int, int, int]]:
    """``(BAR index, start, end, flags)`` of each used BAR line; a malformed line is an error."""
    out = []
    for index, line in enumerate(text.splitlines()[:_BAR_LINES]):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not all(_HEX_FIELD.fullmatch(part) for part in parts):
            raise DeviceError(
                f"{json.dumps(source)} line {index + 1} is {json.dumps(line[:80])}, not 'start end flags' "
                "in hexadecimal",
                device=device,
                field="resource",
            )
        start, end, flags = (int(part, 16) for part in parts)
        if end > start:
            out.append((index, start, end, flags))
    return out


def _window(size: int, flags: int) -> Windows:
    if flags & _IORESOURCE_IO:
        return Windows(io=size)
    if not flags & _IORESOURCE_MEM:
        return Windows()
    if not flags & _IORESOURCE_PREFETCH:
        return Windows(mem=size)
    return Windows(pref64=size) if flags & _IORESOURCE_MEM_64 else Windows(pref32=size)


# --- IOMMU groups ------------------------------------------------------------------------------
def group_members(host: HostContext, group: str, *, device: str) -> list[GroupMember]:
    """Every entry of IOMMU group ``group``, sorted by name, classified (Kata's
    ``GetAllVFIODevicesFromIOMMUGroup`` minus the bridge filter)."""
    groups = "kernel/iommu_groups"
    if not host.sysfs.exists(f"{groups}/{group}"):
        present = len(host.sysfs.list_dir(groups))
        hint = (
            "this host has no IOMMU groups: enable the IOMMU (intel_iommu=on or amd_iommu=on) "
            "and bind the devices to vfio-pci"
            if not present
            else f"the host has {present} IOMMU groups"
        )
        raise DeviceError(
            f"IOMMU group {group} does not exist ({host.sysfs.path(groups)}/{group} is missing; {hint})",
            device=device,
            field="iommu_group",
        )
    names = host.sysfs.list_dir(f"{groups}/{group}/devices")
    return [classify(host, f"{groups}/{group}/devices", name, index, device=device)
            for index, name in enumerate(names)]


def classify(host: HostContext, directory: str, name: str, index: int, *, device: str) -> GroupMember:
    """Kata's ``GetVFIODeviceType`` + ``GetVFIODetails`` for one group entry."""
    if BDF_RE.fullmatch(name):
        function = read_function(host, name, device=device)
        return GroupMember(index=index, name=name, type=VFIODeviceType.NORMAL,
                           sysfs_dev=function.sysfs_dev, function=function)
    if not UUID_RE.fullmatch(name):
        raise DeviceError(
            f"{host.sysfs.path(directory)}/{name} is neither a PCI address (DDDD:BB:DD.F) nor a "
            "mediated device UUID",
            device=device,
            field="iommu_group",
        )
    resolved = host.sysfs.resolve(f"{directory}/{name}")
    if resolved is None:
        raise DeviceError(
            f"{host.sysfs.path(directory)}/{name} does not resolve to a device", device=device,
            field="iommu_group",
        )
    sysfs_dev = str(host.sysfs.path(resolved))
    if resolved.startswith(AP_ROOT):
        return GroupMember(index=index, name=name, type=VFIODeviceType.AP, sysfs_dev=sysfs_dev,
                           function=None, ap_devices=ap_queues(host, resolved, device=device))
    parent = resolved.rstrip("/").split("/")[-2] if resolved.count("/") >= 3 else ""
    parent_function = read_function(host, parent, device=device) if BDF_RE.fullmatch(parent) else None
    return GroupMember(index=index, name=name, type=VFIODeviceType.MEDIATED, sysfs_dev=sysfs_dev,
                       function=parent_function)


def ap_queues(host: HostContext, resolved: str, *, device: str) -> tuple[str, ...]:
    """The APQNs of an AP matrix device (its ``matrix`` file, one ``AA.DDDD`` a line)."""
    path = f"{resolved}/matrix"
    text = host.sysfs.read_text(path)
    if text is None:
        raise DeviceError(f"AP device has no {host.sysfs.path(path)}", device=device, field="ap_devices")
    queues = tuple(line.strip() for line in text.splitlines() if line.strip())
    bad = [q for q in queues if not APQN_RE.fullmatch(q)]
    if bad or not queues:
        problem = f"holds {bad[0]!r}, not an AP queue (AA.DDDD)" if bad else "is empty: assign AP queues"
        raise DeviceError(f"{host.sysfs.path(path)} {problem}", device=device, field="ap_devices")
    return queues


# --- device numbers ------------------------------------------------------------------------------
#: a ``dev`` attribute as the kernel prints it (``print_dev_t``: decimal ``MAJOR:MINOR``)
_DEV_RE: Final = re.compile(r"([0-9]{1,10}):([0-9]{1,10})")


def char_numbers(host: HostContext, relative: str, *, device: str) -> tuple[int, int] | None:
    """``(major, minor)`` from the sysfs ``dev`` attribute ``relative`` (``246:0``); None when it
    does not exist, a :class:`DeviceError` naming the file when it holds anything else."""
    text = host.sysfs.read_line(relative)
    if text is None:
        return None
    match = _DEV_RE.fullmatch(text)
    if match is None:
        raise DeviceError(
            f"{json.dumps(host.sysfs.file(relative))} holds {json.dumps(text[:40])}, not MAJOR:MINOR",
            device=device,
            field="major:minor",
        )
    return int(match[1]), int(match[2])


def group_numbers(host: HostContext, group: str, *, device: str) -> tuple[int, int]:
    """The numbers of the group node ``/dev/vfio/<group>`` (``class/vfio/<group>/dev``). Without
    that entry no VFIO driver holds a device of the group: it is no VFIO group of this host."""
    relative = f"class/vfio/{group}/dev"
    numbers = char_numbers(host, relative, device=device)
    if numbers is None:
        raise DeviceError(
            f"IOMMU group {group} is not a VFIO group this host exposes ({host.sysfs.file(relative)} is "
            "missing: is the device bound to vfio-pci?)",
            device=device,
            field="host_path",
        )
    return numbers


def cdev_numbers(host: HostContext, name: str, *, device: str) -> tuple[int, int]:
    """The numbers of the IOMMUFD cdev ``/dev/vfio/devices/<name>`` (``class/vfio-dev/<name>/dev``)."""
    relative = f"class/vfio-dev/{name}/dev"
    numbers = char_numbers(host, relative, device=device)
    if numbers is None:
        raise DeviceError(
            f"{name} is not a VFIO device cdev this host exposes ({host.sysfs.file(relative)} is missing: "
            "is the function bound to vfio-pci, and the kernel built with CONFIG_VFIO_DEVICE_CDEV?)",
            device=device,
            field="host_path",
        )
    return numbers


# --- IOMMUFD cdevs -----------------------------------------------------------------------------
def cdev_function(host: HostContext, name: str, *, device: str) -> PciFunction:
    """The one function behind ``/dev/vfio/devices/<name>`` (``class/vfio-dev/<name>/device``)."""
    base = f"class/vfio-dev/{name}"
    if not host.sysfs.exists(base):
        raise DeviceError(
            f"no VFIO device {name}: {host.sysfs.path(base)} is missing (is the function bound to vfio-pci?)",
            device=device,
            field="host_path",
        )
    if not host.sysfs.exists(f"{base}/dev"):
        raise DeviceError(
            f"this kernel has no VFIO device cdevs ({host.sysfs.path(base)}/dev is missing: "
            "CONFIG_VFIO_DEVICE_CDEV and CONFIG_IOMMUFD are off); pass the group /dev/vfio/<group> instead",
            device=device,
            field="host_path",
        )
    resolved = host.sysfs.resolve(f"{base}/device") or ""
    bdfs = BDF_RE.findall(resolved)
    if not bdfs:
        raise DeviceError(
            f"{host.sysfs.path(base)}/device resolves to {resolved or 'nothing'}, "
            "which names no PCI function",
            device=device,
            field="host_path",
        )
    return read_function(host, bdfs[-1], device=device)



# --- host facts (drift) ------------------------------------------------------------------------
def host_facts(device: VFIODevice, host: HostContext) -> dict[str, str]:
    """What decided ``device``'s options, read again: the members of its IOMMU group, the
    function behind a cdev, where a mediated or AP device resolves and an AP device's queues,
    and each PCI function's (a mediated device's parent's) driver, IOMMU group, vendor:device,
    class and NUMA node. Never raises: what is gone reads as ``""``, which the device manager
    reports as drift."""
    group = device.iommu_group
    facts: dict[str, str] = {}
    if group:
        members = host.sysfs.list_dir(f"kernel/iommu_groups/{group}/devices")
        facts[f"iommu_group {group} devices"] = " ".join(members)
    for function in device.functions:
        if function.devfs_dev:
            facts.update(_cdev_facts(host, function.devfs_dev.rsplit("/", 1)[-1]))
        if function.type is not VFIODeviceType.NORMAL:
            facts.update(_mdev_facts(host, group, function.sysfs_dev.rstrip("/").rsplit("/", 1)[-1],
                                     ap=function.type is VFIODeviceType.AP))
        if function.bdf:
            facts.update(_function_facts(host, function.bdf))
    return facts


def _cdev_facts(host: HostContext, node: str) -> dict[str, str]:
    resolved = host.sysfs.resolve(f"class/vfio-dev/{node}/device") or ""
    return {f"{node} function": (BDF_RE.findall(resolved) or [""])[-1]}


def _mdev_facts(host: HostContext, group: str, name: str, *, ap: bool) -> dict[str, str]:
    resolved = host.sysfs.resolve(f"kernel/iommu_groups/{group}/devices/{name}") or ""
    facts = {f"{name} device": resolved}
    if ap:
        queues = host.sysfs.read_text(f"{resolved}/matrix") if resolved else None
        facts[f"{name} matrix"] = " ".join((queues or "").split())
    return facts


def _function_facts(host: HostContext, bdf: str) -> dict[str, str]:
    base = f"bus/pci/devices/{bdf}"
    sysfs = host.sysfs
    vendor, device = sysfs.read_line(f"{base}/vendor") or "", sysfs.read_line(f"{base}/device") or ""
    numa = sysfs.read_line(f"{base}/numa_node")
    return {
        f"{bdf} driver": sysfs.link_name(f"{base}/driver") or "",
        f"{bdf} iommu_group": sysfs.link_name(f"{base}/iommu_group") or "",
        f"{bdf} vendor:device": f"{vendor}:{device}" if vendor or device else "",
        f"{bdf} class": sysfs.read_line(f"{base}/class") or "",
        f"{bdf} numa_node": "" if numa is None else str(_numa_node(numa)),
    }
