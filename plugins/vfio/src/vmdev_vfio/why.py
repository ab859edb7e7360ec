"""Why a VFIO request got its QEMU options, for ``vmdev explain`` (:mod:`vmdev.explain`).

Each decision names the settings keys and the host facts (the sysfs files and the values read when
the device was built) behind it. Nothing is recorded, nor built, unless the plan is made by
``vmdev explain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vmdev.backends.qemu import NUMA_KEY, NUMA_MAPPING_KEY, QemuTarget, uefi
from vmdev.decisions import decide, explaining
from vmdev.models import PCIePort
from vmdev.pcie import DEFAULT_WINDOW, SEABIOS_WINDOW_ALIGN, BarKind, size_text
from vmdev_vfio.device import VfioBackend, VFIODevice
from vmdev_vfio.settings import COLD_PLUG_KEY, HOT_PLUG_KEY, MODE_KEY

Places = Sequence[tuple[str | None, str | None, bool]]

_PORT_WHY = {
    PCIePort.ROOT_PORT: "a pcie-root-port of its own (Linux scans only device 0 behind a PCIe port, so a "
    "request gets a port; ports rp<N> are numbered in plan order across every plugin's devices)",
    PCIePort.SWITCH_PORT: "a switch downstream port of its own, behind the switch swup0 on root port swrp0",
    PCIePort.BRIDGE_PORT: "consecutive slots of one pci-bridge (a conventional bus: no PCIe capabilities)",
    PCIePort.NO_PORT: "straight onto the root bus, where QEMU picks the slots (no hot plug there on q35)",
}


def record(device: VFIODevice, target: QemuTarget, *, hotplug: bool, hot: bool, places: Places) -> None:
    """Record why ``device`` is cold or hot, on its bus, with its reservations and object."""
    if not explaining(target):
        return
    name = device.container_path
    for option, because, settings, facts, limits in _decisions(device, target, hotplug, hot, places):
        decide(target, name, option, because, settings=settings, facts=facts, limits=limits)


Row = tuple[str, str, dict[str, Any], dict[str, str], list[str]]


def _decisions(device: VFIODevice, target: QemuTarget, hotplug: bool, hot: bool, places: Places) -> list[Row]:
    rows = [_plug(device, target, hotplug, hot), _port(device, target, places)]
    rows += _bars(device, target, hot)
    rows += _numa(device, target)
    rows += _backend(device)
    rows.append((f"kata-agent device type {device.agent_type}",
                 "vfio_mode says who drives the devices in the guest: its own drivers (guest-kernel) or the "
                 "container through VFIO (vfio)", {MODE_KEY: device.vfio_mode.value}, {}, []))
    for skipped in device.skipped:
        rows.append((f"{skipped.bdf} not passed", f"a {skipped.reason} in IOMMU group {device.iommu_group} "
                     "(Kata skips bridges: the guest gets the functions behind them)",
                     {}, {f"{skipped.bdf} class": skipped.class_}, []))
    return rows


def _plug(device: VFIODevice, target: QemuTarget, hotplug: bool, hot: bool) -> Row:
    settings = target.settings
    cold_key, hot_key = settings.value(COLD_PLUG_KEY, "no-port"), settings.value(HOT_PLUG_KEY, "no-port")
    keys = {"hotplug": settings.hotplug, COLD_PLUG_KEY: cold_key, HOT_PLUG_KEY: hot_key}
    if hot:
        return ("hot plug: QMP device_add after boot", f"the plan is for hot plug (hotplug = true) and "
                f'{COLD_PLUG_KEY} = "{cold_key}" names no port', keys, {}, [])
    if device.cold_plug and cold_key != PCIePort.NO_PORT.value:
        why = f'{COLD_PLUG_KEY} = "{cold_key}" names a port: every VFIO device is present at boot, where ' \
            "the firmware sizes the windows for its BARs"
        why += ", even in a plan for hot plug" if hotplug else ""
    elif device.cold_plug:
        why = "the request asks for cold plug (its cold_plug flag, from the input that made it)"
    else:
        why = "the plan is for boot: hotplug = false (vmdev plan --hotplug, or hotplug = true in [vmdev], " \
            "plans hot plug)"
    return "cold plug: -device on the command line, present at boot", why, keys, {}, []


def _port(device: VFIODevice, target: QemuTarget, places: Places) -> Row:
    buses = sorted({bus or "the root bus" for bus, _, _ in places})
    settings = target.settings
    cold = settings.value(COLD_PLUG_KEY, "no-port") != "no-port"
    config_key = COLD_PLUG_KEY if cold else HOT_PLUG_KEY
    from_settings = settings.value(config_key, "no-port") == device.port.value
    source = f'{config_key} = "{device.port.value}"' if from_settings else \
        f"the request's port ({device.port.value})"
    because = f"{source}: {_PORT_WHY[device.port]}"
    count = len(device.functions)
    if count > 1 and device.port in (PCIePort.ROOT_PORT, PCIePort.SWITCH_PORT):
        because += f"; IOMMU group {device.iommu_group}'s {count} functions stay together as one " \
            f"multi-function device 00.0-00.{count - 1} (a port slot holds 8)"
    facts = {f"{f.sysfs_dev}/config": "PCIe (config space larger than 256 bytes)" if f.is_pcie
             else "conventional PCI (256 bytes of config space)" for f in device.functions if f.sysfs_dev}
    members = sorted([f.bdf for f in device.functions if f.bdf] + [s.bdf for s in device.skipped])
    if device.iommu_group and members:
        facts[f"{_sysfs_root(device)}/kernel/iommu_groups/{device.iommu_group}/devices"] = " ".join(members)
    return f"bus={', '.join(buses)}", because, {config_key: device.port.value}, facts, []


def _bars(device: VFIODevice, target: QemuTarget, hot: bool) -> list[Row]:
    space = device.bar_space
    facts = {f"{_sysfs(device, bar.function)}/resource (BAR {bar.index})": bar.describe()
             for bar in space.large}
    if not space.large and space.mem + space.pref <= DEFAULT_WINDOW:
        return []
    firmware = "OVMF" if uefi(target.settings) else "SeaBIOS"
    keys = {"firmware": target.settings.value("firmware", "")}
    if not hot:
        return [("BARs mapped by the firmware at boot",
                 f"cold-plugged, its BARs ({size_text(space.mem + space.pref)}) are sized by {firmware} at "
                 "boot; they count for the 64-bit PCI window the machine section derives the address width "
                 "from",
                 keys, facts, [])]
    reserve = space.hot_reserve(uefi=uefi(target.settings))
    if not reserve:
        return []
    largest = space.largest(BarKind.PREF) or space.largest(BarKind.MEM)
    big = size_text(largest.size) if largest else "-"
    how = "OVMF rounds a reservation up to a power of two and aligns it to that" if uefi(target.settings) \
        else f"SeaBIOS aligns a reserved window to {size_text(SEABIOS_WINDOW_ALIGN)} only, so the " \
        f"reservation adds the largest BAR ({big}) less 2 MiB to reach an address aligned to it"
    option = ", ".join(f"{key}={value} ({size_text(value)})" for key, value in reserve.items())
    because = (f"hot-plugged later, its BARs need windows the firmware reserves at boot: non-prefetchable "
               f"{size_text(space.mem)}, prefetchable {size_text(space.pref)}; {how}")
    return [(option, because, keys, facts,
             [f"the firmware's default window: {size_text(DEFAULT_WINDOW)}",
              "switch downstream ports cannot reserve windows in QEMU"])]


def _numa(device: VFIODevice, target: QemuTarget) -> list[Row]:
    node = device.numa_node
    function = next((f for f in device.functions if f.numa_node == node), None)
    facts = {f"{function.sysfs_dev}/numa_node": str(node)} if function is not None else {}
    keys = {NUMA_KEY: bool(target.settings.value(NUMA_KEY, False)),
            NUMA_MAPPING_KEY: list(target.settings.value(NUMA_MAPPING_KEY, ()))}
    if not target.topology.numa:
        if node < 0:
            return []
        return [("no NUMA placement", f"the function sits on host NUMA node {node}, and the guest has "
                 "no NUMA nodes", keys, facts, [])]
    if device.port is not PCIePort.ROOT_PORT:
        return [("no NUMA placement", "only root-port devices go behind a pxb-pcie (as in Kata); this one "
                 f"is on a {device.port.value}", keys, facts, [])]
    if node < 0:
        return [("a root port on the root bus",
                 "the host does not say the function's NUMA node (numa_node = -1)", keys, facts, [])]
    return [(f"a root port for host NUMA node {node}", "guest NUMA is on: the port goes behind the "
             f"pxb-pcie of the guest node that covers host node {node} (see the places)", keys, facts,
             ["Kata's pxb-pcie bus numbers: 0x20 * (guest node + 1), at most 0xff"])]


def _backend(device: VFIODevice) -> list[Row]:
    if device.backend is not VfioBackend.IOMMUFD:
        return [("VFIO group backend", f"{device.host_path} is a VFIO group: QEMU opens the group and every "
                 "function of it goes to the guest", {}, {}, [])]
    cdev = device.host_path.rsplit("/", 1)[-1]
    facts = {f"/sys/class/vfio-dev/{cdev}/device": device.functions[0].bdf}
    return [("iommufd=iommufd0", f"{device.host_path} is an IOMMUFD cdev: one shared -object iommufd for the "
             "sandbox (QEMU >= 9.0 and /dev/iommu)", {}, facts, [])]


def _sysfs(device: VFIODevice, bdf: str) -> str:
    found = next((f.sysfs_dev for f in device.functions if f.bdf == bdf), "")
    return found or f"{_sysfs_root(device)}/bus/pci/devices/{bdf}"


def _sysfs_root(device: VFIODevice) -> str:
    """The sysfs root the device was read from (``/sys``, or a fake host's)."""
    marker = "/bus/pci/devices/"
    return next((f.sysfs_dev.split(marker)[0] for f in device.functions if marker in f.sysfs_dev), "/sys")
