"""The QEMU backend's PCIe topology: a plan's ports and bridges (a running VM's free ports are
:mod:`vmdev.backends.qemu_live_ports`), and the 64-bit PCI window the large BARs need.

Split from :mod:`vmdev.backends.qemu` so that :mod:`vmdev.pcie`, about 1.6 ms of classes, is imported
only when a device asks its target for a place or a plan is assembled
(:attr:`~vmdev.backends.qemu.QemuTarget.topology`). A device that takes no port, such as a generic
character device attached with ``vmdev attach``, never does (issue 13: ``attach`` no slower than
``plan``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from vmdev.backends.qemu import (
    CPU_TYPE,
    FIRMWARE_KEY,
    NUMA_KEY,
    OVMF_MMIO64_FW_CFG,
    ROOT_PORT,
    SWITCH_PORT,
    _machine_is,
    _value,
    kata_bridges,
    uefi,
)
from vmdev.decisions import MACHINE, decide
from vmdev.errors import UnsupportedError
from vmdev.pcie import (
    DEFAULT_PHYS_BITS,
    DEFAULT_WINDOW,
    MAX_PHYS_BITS,
    OTHER_BARS_ROOM,
    OVMF_DEFAULT_MMIO64,
    OVMF_MAX_PHYS_BITS,
    GiB,
    MiB,
    MmioRange,
    NodeKind,
    PcieTopology,
    mmio64_layout,
    size_text,
)
from vmdev.qemu import keyvals
from vmdev.settings import SandboxSettings

if TYPE_CHECKING:
    from vmdev.backends.qemu import QemuTarget

#: the hot-plug port kinds a running VM offers, by the topology's node kind
PORT_KINDS: Final = {NodeKind.ROOT_PORT: ROOT_PORT, NodeKind.SWITCH_DOWNSTREAM: SWITCH_PORT}


def build_topology(target: QemuTarget) -> PcieTopology:
    settings = target.settings
    base = PcieTopology.for_settings(settings, uefi=uefi(settings), numa=bool(_value(settings, NUMA_KEY)))
    if target.context.live_ports is None:
        count, nested, _ = kata_bridges(target.settings)
        base.add_kata_bridges(count, nested=nested)
        return base
    from vmdev.backends.qemu_live_ports import LiveTopology, PortPool

    return LiveTopology(
        machine=base.machine, pcie=base.pcie, pci=base.pci, pool=PortPool(target.context.live_ports)
    )


# --- the 64-bit PCI window: large BARs -----------------------------------------------------------------
def first_free_address(settings: SandboxSettings, slots: int, maxmem_mib: int | None) -> int:
    """The first guest physical address above RAM and the memory hot-plug area on x86: where the
    firmware starts the 64-bit PCI window (QEMU's ``pc``/``q35`` layout: RAM above the 32-bit
    limit starts at 4 GiB; the hot-plug area at the next GiB, ``maxmem - mem`` plus 1 GiB a slot)."""
    ram = settings.memory_mib * MiB
    if _machine_is(settings, "q35", "pc-q35"):
        lowmem = 0x8000_0000 if ram >= 0xB000_0000 else 0xB000_0000
    else:
        lowmem = 0xC000_0000 if ram >= 0xE000_0000 else 0xE000_0000
    end = 4 * GiB + max(ram - lowmem, 0)
    if maxmem_mib is not None and maxmem_mib > settings.memory_mib:
        end = -(-end // GiB) * GiB + (maxmem_mib - settings.memory_mib) * MiB + slots * GiB
    return end


def mmio64_args(
    settings: SandboxSettings, target: QemuTarget, memory: tuple[int, int | None], notes: list[str]
) -> list[str]:
    """What the firmware and the CPU need for the large BARs placed in the topology: the guest's
    physical address width when QEMU's default (40 bits) does not reach the 64-bit PCI window
    (``-global x86_64-cpu.phys-bits=N``; an explicit ``-cpu ...,phys-bits=`` wins) and, with a UEFI
    firmware, OVMF's aperture when its classic 32 GiB cannot hold the window
    (``-fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=<MiB>``). The derivation goes in the notes; a window
    beyond what the firmware or QEMU can address is an error naming the largest BAR."""
    ranges = target.topology.mmio64_ranges()
    if not any(r.size > DEFAULT_WINDOW for r in ranges) or not _machine_is(settings, "q35", "pc"):
        return []
    firmware = "OVMF" if uefi(settings) else "SeaBIOS"
    first = first_free_address(settings, *memory)
    layout = mmio64_layout(ranges, first_free=first, uefi=uefi(settings))
    limit = OVMF_MAX_PHYS_BITS if layout.uefi else MAX_PHYS_BITS
    biggest = max(ranges, key=lambda r: r.size)
    if layout.bits > limit:
        what = biggest.largest.describe() if biggest.largest else f"{biggest.owner}'s window"
        raise UnsupportedError(
            f"{what} does not fit: the 64-bit PCI window {firmware} lays out ends at "
            f"{size_text(layout.end)}, which needs {layout.bits} physical address bits, and {firmware} and "
            f"QEMU's x86 guests reach {limit}",
            device=biggest.devices[0] if biggest.devices else biggest.owner,
            field="bar",
        )
    argv: list[str] = []
    held = "; ".join(_range_text(r) for r in sorted(ranges, key=lambda r: -r.size) if r.size > DEFAULT_WINDOW)
    text = (f"64-bit PCI window ({firmware}): {held}; packed they need {size_text(layout.need)}, and "
            f"{size_text(OTHER_BARS_ROOM)} is kept for the other devices' 64-bit BARs; guest RAM and memory "
            f"hot-plug end at {size_text(first)}")
    if layout.uefi:
        text += (f"; OVMF's aperture of {size_text(layout.aperture)} is aligned to "
                 f"{size_text(1 << (layout.aperture.bit_length() - 1))}")
        if layout.aperture > OVMF_DEFAULT_MMIO64:
            value = str(layout.aperture // MiB)
            argv += ["-fw_cfg", keyvals({"name": OVMF_MMIO64_FW_CFG, "string": value})]
            text += f" (-fw_cfg name={OVMF_MMIO64_FW_CFG},string={value}: its classic default is 32 GiB)"
    text += f"; the window spans {_hex(layout.start)}-{_hex(layout.end)}, so the guest needs {layout.bits} " \
            "physical address bits"
    if layout.bits > DEFAULT_PHYS_BITS and _machine_is(settings, "q35", "pc"):
        argv += ["-global", f"{CPU_TYPE}.phys-bits={layout.bits}"]
        text += (f" (QEMU's default is {DEFAULT_PHYS_BITS}: -global {CPU_TYPE}.phys-bits={layout.bits}; "
                 f"with -cpu host, host-phys-bits=on, the host's CPU needs at least {layout.bits})")
    else:
        text += (f" (QEMU's default {DEFAULT_PHYS_BITS} reaches it; with -cpu host the host's CPU needs at "
                 f"least {layout.bits})")
    notes.append(text)
    decide(target, MACHINE, " ".join(argv[1::2]) or f"no option: {layout.bits} address bits suffice", text,
           settings={FIRMWARE_KEY: _value(settings, FIRMWARE_KEY), "default_memory": settings.memory_mib},
           limits=[f"at most {limit} physical address bits ({firmware} and QEMU)",
                   f"QEMU's default phys-bits: {DEFAULT_PHYS_BITS}"])
    return argv


def _hex(value: int) -> str:
    return f"0x{value:x}"


def _range_text(r: MmioRange) -> str:
    what = "a reserved window for hot plug" if r.hot else "holds " + ", ".join(r.devices)
    bar = f" (largest: {r.largest.describe()})" if r.largest else ""
    return f"{r.owner} {size_text(r.size)}, {what}{bar}"
