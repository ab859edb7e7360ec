"""The VFIO models, and from a ``/dev/vfio`` request to a typed device.

A request names either a legacy VFIO group ``/dev/vfio/<group>`` (all functions of the IOMMU
group are passed, bridges skipped) or an IOMMUFD device cdev ``/dev/vfio/devices/vfio<N>``
(exactly one function; QEMU then also opens ``/dev/iommu``). ``/dev/vfio/vfio``, the group
API's control node, is no device to pass: it is declined and stays a plain container device.

:class:`VFIODev` is Kata's ``config.VFIODev`` (one function, mediated or AP device, with the
fields Kata persists); :class:`VFIODevice` is one request: the functions it passes and how.
A saved device is rebuilt with :func:`from_state` without looking at the host.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.host import HostContext
from vmdev.models import DeviceInfo, PCIePort, PciPath
from vmdev.pcie import Bar, BarSpace
from vmdev.qemu import make_id
from vmdev.serialize import from_json
from vmdev.targets import RenderTarget
from vmdev_vfio.host import (
    GroupMember,
    PciFunction,
    VFIODeviceType,
    Windows,
    cdev_function,
    cdev_numbers,
    group_members,
    group_numbers,
)
from vmdev_vfio.kinds import (
    CDEV_DIR,
    CONTROL_NODE,
    DEVICE_VFIO,
    IOMMU_NODE,
    MODE_GUEST_KERNEL,
    MODE_VFIO,
    VFIO_DIR,
    claims,
)

if TYPE_CHECKING:
    from vmdev_vfio.config import VfioConfig

ID_PREFIX: Final = "vfio"
BACKEND_NOTE: Final = "vfio.backend"
FUNCTION_NOTE: Final = "vfio.function:"

__all__ = [
    "CDEV_DIR",
    "CONTROL_NODE",
    "DEVICE_VFIO",
    "IOMMU_NODE",
    "VFIO_DIR",
    "SkippedFunction",
    "VFIODev",
    "VFIODevice",
    "VFIODeviceLargeBars",
    "VFIODeviceType",
    "VFIOMode",
    "VfioBackend",
    "build",
    "check_plan_rules",
    "claims",
    "from_state",
]


class VFIOMode(str, enum.Enum):
    """``vfio_mode``: who binds passed-through devices in the guest."""

    VFIO = MODE_VFIO
    GUEST_KERNEL = MODE_GUEST_KERNEL


class VfioBackend(str, enum.Enum):
    """How the hypervisor reaches the devices: the legacy group/container API or IOMMUFD."""

    GROUP = "group"
    IOMMUFD = "iommufd"


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class VFIODev:
    """One PCI function, mediated device or AP matrix device passed through with VFIO
    (Kata's ``config.VFIODev``)."""

    kind: ClassVar[str] = DEVICE_VFIO
    id: str
    type: VFIODeviceType = VFIODeviceType.NORMAL
    bdf: str = ""
    sysfs_dev: str = ""
    devfs_dev: str = ""
    vendor_id: str = ""
    device_id: str = ""
    class_: str = ""
    bus: str = ""
    guest_pci_path: PciPath = attrs.field(factory=PciPath)
    numa_node: int = -1
    is_pcie: bool = False
    ap_devices: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    port: PCIePort = PCIePort.NO_PORT
    host_path: str = ""

    @property
    def iommufd_id(self) -> str:
        """``99`` for ``/dev/vfio/devices/vfio99``, else ``""`` (Kata's ``IOMMUFDID``)."""
        prefix = "/dev/vfio/devices"
        if not self.devfs_dev.startswith(prefix):
            return ""
        base = self.devfs_dev.rsplit("/", 1)[-1]
        return base[len("vfio") :] if base.startswith("vfio") else base


def _funcs(value: Iterable[VFIODev]) -> tuple[VFIODev, ...]:
    return tuple(value)


def _skips(value: Iterable[SkippedFunction]) -> tuple[SkippedFunction, ...]:
    return tuple(value)


def _str_map(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _bars(value: Iterable[Bar]) -> tuple[Bar, ...]:
    return tuple(value)


def _non_empty(inst: Any, attribute: attrs.Attribute[Any], value: tuple[VFIODev, ...]) -> None:
    if not value:
        raise DeviceError("has no function to pass", device=inst.container_path, field=attribute.name)


@attrs.frozen(kw_only=True)
class SkippedFunction:
    """A function of the group that is not passed (a host or PCI-to-PCI bridge)."""

    bdf: str
    class_: str
    reason: str


@attrs.frozen(kw_only=True)
class VFIODevice:
    """One VFIO request (Kata's ``VFIODevice``): the functions it passes and how."""

    kind: ClassVar[str] = DEVICE_VFIO
    id: str
    container_path: str
    host_path: str
    backend: VfioBackend
    iommu_group: str
    functions: tuple[VFIODev, ...] = attrs.field(converter=_funcs, validator=_non_empty)
    skipped: tuple[SkippedFunction, ...] = attrs.field(default=(), converter=_skips)
    #: present at boot whatever the plan's hot-plug choice (``cold_plug_vfio`` or the request)
    cold_plug: bool = False
    port: PCIePort = PCIePort.NO_PORT
    vfio_mode: VFIOMode = VFIOMode.GUEST_KERNEL
    #: BAR space of all functions (sizes the windows of ports that take hot-plugged devices)
    windows: Windows = attrs.field(factory=Windows)
    #: the host driver bound to each passed function (by PCI address; mdevs: their parent's)
    drivers: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)

    @property
    def large_bars(self) -> tuple[Bar, ...]:
        """The functions' BARs larger than the firmware's default 2 MiB window (see
        :class:`VFIODeviceLargeBars`)."""
        return ()

    @property
    def bar_space(self) -> BarSpace:
        """What the functions' BARs need from the windows of the port they sit on."""
        windows = self.windows
        return BarSpace(mem=windows.mem, pref32=windows.pref32, pref64=windows.pref64, large=self.large_bars)

    @property
    def numa_node(self) -> int:
        """The host NUMA node of the request's functions (the first known one), or -1."""
        return next((f.numa_node for f in self.functions if f.numa_node >= 0), -1)

    @property
    def types(self) -> frozenset[VFIODeviceType]:
        return frozenset(f.type for f in self.functions)

    @property
    def is_ap(self) -> bool:
        return VFIODeviceType.AP in self.types

    @property
    def agent_type(self) -> str:
        """The kata-agent device type for this request (what the guest does with it)."""
        if self.is_ap:
            return "vfio-ap-cold" if self.cold_plug and self.vfio_mode is VFIOMode.VFIO else "vfio-ap"
        return "vfio-pci" if self.vfio_mode is VFIOMode.VFIO else "vfio-pci-gk"


@attrs.frozen(kw_only=True)
class VFIODeviceLargeBars(VFIODevice):
    """A request whose functions have BARs larger than the firmware's default 2 MiB window: they
    size its port's reservations and count for the guest's 64-bit PCI window. A class of its own so
    that the saved and planned form of every other request has no field more than it had."""

    large_bars: tuple[Bar, ...] = attrs.field(default=(), converter=_bars)


def _request(large_bars: Sequence[Bar], **fields: Any) -> VFIODevice:
    if large_bars:
        return VFIODeviceLargeBars(large_bars=large_bars, **fields)
    return VFIODevice(**fields)


# --- saved state ----------------------------------------------------------------------------------
def from_state(data: Mapping[str, Any]) -> VFIODevice:
    """A saved :class:`VFIODevice` (``vmdev.serialize.to_json`` of it) rebuilt as it was; the
    host is not looked at (``from_json`` reads JSON names such as ``class`` back at every level)."""
    for key in ("functions", "skipped"):
        if not isinstance(data.get(key, ()), list | tuple):
            raise DeviceError(f"saved {key} is not a list", device=str(data.get("container_path", "")),
                              field=key)
    return from_json(VFIODeviceLargeBars if data.get("large_bars") else VFIODevice, data)


# --- building -------------------------------------------------------------------------------------
def build(info: DeviceInfo, host: HostContext, config: VfioConfig) -> VFIODevice:
    """The device for a claimed request, or a :class:`DeviceError` naming what is wrong."""
    name = info.container_path or info.host_path
    path = posixpath.normpath(info.host_path)
    if info.dev_type not in ("c", "u"):
        raise DeviceError(
            f"{path} is a VFIO node, a character device, not type {info.dev_type!r}",
            device=name,
            field="type",
        )
    if config.confidential and not path.startswith(CDEV_DIR):
        # Kata's words; Kata checks it on q35 and virt when a port kind is set, vmdev whatever the port
        raise DeviceError(f"ConfidentialGuest needs IOMMUFD - cannot use {path}", device=name,
                          field="host_path")
    port = info.port if info.port is not PCIePort.NO_PORT else config.port
    common: dict[str, Any] = {
        "id": make_id(ID_PREFIX, f"{info.container_path}|{path}"),
        "container_path": name,
        "host_path": path,
        "cold_plug": info.cold_plug or config.coldplug_all,
        "port": port,
        "vfio_mode": config.mode,
    }
    if path.startswith(CDEV_DIR):
        return _from_cdev(info, path, host, name, common)
    return _from_group(info, path, host, name, common)


def _from_group(
    info: DeviceInfo, path: str, host: HostContext, name: str, common: dict[str, Any]
) -> VFIODevice:
    group = path[len(VFIO_DIR):]
    if group.startswith("noiommu-"):
        raise DeviceError(
            f"{path} is a no-IOMMU VFIO group: without an IOMMU a VM cannot be given the device",
            device=name,
            field="host_path",
        )
    if not group.isdigit():
        raise DeviceError(
            f"{path} is not a VFIO node (expected /dev/vfio/<group number> or "
            "/dev/vfio/devices/vfio<N>)",
            device=name,
            field="host_path",
        )
    members = group_members(host, group, device=name)
    functions: list[VFIODev] = []
    skipped: list[SkippedFunction] = []
    drivers: dict[str, str] = {}
    windows = Windows()
    large: list[Bar] = []
    for member in members:
        function = member.function
        if member.type is VFIODeviceType.NORMAL and function is not None and function.bridge:
            skipped.append(SkippedFunction(bdf=function.bdf, class_=function.class_, reason=function.bridge))
            continue
        if member.type is VFIODeviceType.NORMAL and function is not None:
            _require_vfio_driver(function, group, name)
        functions.append(_vfio_dev(member, common, path, VfioBackend.GROUP))
        if function is not None:
            windows = windows + function.windows
            drivers[function.bdf] = function.driver
            if member.type is VFIODeviceType.NORMAL:
                large += function.large_bars
    if not functions:
        what = ", ".join(f"{s.bdf} ({s.reason})" for s in skipped) or "nothing"
        raise DeviceError(
            f"IOMMU group {group} holds no function to pass, only {what}", device=name, field="host_path"
        )
    _require_numbers(info, group_numbers(host, group, device=name), f"VFIO group {group}",
                     f"class/vfio/{group}/dev", host, name)
    return _request(large, backend=VfioBackend.GROUP, iommu_group=group, functions=functions, skipped=skipped,
                    windows=windows, drivers=drivers, **common)


def _from_cdev(
    info: DeviceInfo, path: str, host: HostContext, name: str, common: dict[str, Any]
) -> VFIODevice:
    node = path[len(CDEV_DIR):]
    if not (node.startswith("vfio") and node[len("vfio"):].isdigit()):
        raise DeviceError(
            f"unexpected device name format: {node} (expected /dev/vfio/devices/vfio<N>)",
            device=name,
            field="host_path",
        )
    function = cdev_function(host, node, device=name)
    _require_vfio_driver(function, function.iommu_group, name)
    _require_numbers(info, cdev_numbers(host, node, device=name), f"VFIO device cdev {node}",
                     f"class/vfio-dev/{node}/dev", host, name)
    if not host.dev_path(IOMMU_NODE).exists():
        raise DeviceError(
            f"the IOMMUFD cdev {path} needs {IOMMU_NODE}, which this host lacks (CONFIG_IOMMUFD)",
            device=name,
            field="host_path",
        )
    member = GroupMember(index=int(node[len("vfio"):]), name=function.bdf, type=VFIODeviceType.NORMAL,
                         sysfs_dev=function.sysfs_dev, function=function)
    dev = _vfio_dev(member, common, path, VfioBackend.IOMMUFD)
    return _request(function.large_bars, backend=VfioBackend.IOMMUFD, iommu_group=function.iommu_group,
                    functions=[dev], windows=function.windows, drivers={function.bdf: function.driver},
                    **common)


def _require_numbers(
    info: DeviceInfo, found: tuple[int, int], what: str, source: str, host: HostContext, name: str
) -> None:
    """The numbers of the node you attach must be the numbers requested: the group or cdev built
    from a path must be the character device the request names, as the host's sysfs says. The
    core checks the node under ``/dev`` when there is one; this holds when there is none (a
    request whose numbers sysfs does not know keeps its container path, Kata's fallback), so
    ``/dev/vfio/2`` with 999:999 is never group 2. Kata compares nothing here. Checked after the
    group's functions, so an unbound group gets the message saying how to bind it."""
    if found == (info.major, info.minor):
        return
    raise DeviceError(
        f"{what} is character device {found[0]}:{found[1]} ({host.sysfs.file(source)}), not the requested "
        f"{info.dev_type} {info.major}:{info.minor}",
        device=name,
        field="major:minor",
    )


def _require_vfio_driver(function: PciFunction, group: str, name: str) -> None:
    if function.vfio_bound:
        return
    bound = f"bound to {function.driver}" if function.driver else "bound to no driver"
    sysfs = function.sysfs_dev
    raise DeviceError(
        f"IOMMU group {group or '?'}: {function.bdf} ({function.vendor_id}:{function.device_id} class "
        f"{function.class_}) is {bound}, not vfio-pci; QEMU needs every function of the group on "
        f"vfio-pci: echo vfio-pci > {sysfs}/driver_override; "
        + (f"echo {function.bdf} > {sysfs}/driver/unbind; " if function.driver else "")
        + f"echo {function.bdf} > {posixpath.dirname(posixpath.dirname(sysfs))}/drivers_probe",
        device=name,
        field="driver",
    )


def _vfio_dev(
    member: GroupMember, common: Mapping[str, Any], host_path: str, backend: VfioBackend
) -> VFIODev:
    function = member.function
    facts: dict[str, Any] = {}
    if function is not None:
        facts = {
            "bdf": function.bdf,
            "vendor_id": function.vendor_id,
            "device_id": function.device_id,
            "class_": function.class_,
            "numa_node": function.numa_node,
            "is_pcie": function.is_pcie,
        }
    if member.type is VFIODeviceType.AP:
        facts = {"ap_devices": member.ap_devices, "numa_node": -1}
    return VFIODev(
        id=f"{common['id']}-{member.index}",
        type=member.type,
        sysfs_dev=member.sysfs_dev,
        devfs_dev=host_path if backend is VfioBackend.IOMMUFD else "",
        port=common["port"],
        host_path="" if member.type is VFIODeviceType.AP else host_path,
        **facts,
    )


# --- rules across the devices of one plan ---------------------------------------------------------
def check_plan_rules(device: VFIODevice, target: RenderTarget) -> None:
    """One VFIO backend kind per sandbox, and no function passed twice (any hypervisor)."""
    name = device.container_path
    backend = device.backend.value
    notes = target.record(BACKEND_NOTE, name, backend)
    # every earlier device was checked against the first one, so the first is the sandbox's kind:
    # comparing with it alone keeps a plan of thousands of functions linear (issue 13)
    other = next(iter(notes.items()), None)
    if other is not None and other[1] != backend:
        raise UnsupportedError(
            f"{device.host_path} uses the VFIO {device.backend.value} backend but {other[0]} uses the "
            f"{other[1]} backend; one sandbox uses one: only groups (/dev/vfio/<group>) or only "
            "IOMMUFD cdevs (/dev/vfio/devices/vfio<N>)",
            device=name,
            field="host_path",
        )
    for function in device.functions:
        owners = target.record(FUNCTION_NOTE + function.sysfs_dev, name, name)
        first = next(iter(owners))
        if first != name:
            what = function.bdf if function.type is VFIODeviceType.NORMAL else function.sysfs_dev
            raise UnsupportedError(
                f"{what} is passed twice: {first} already passes it", device=name, field="host_path"
            )
