"""Test helpers: fake hosts copied from real kernels' VFIO sysfs (Debian 6.1, IOMMUFD 6.12).

The machine: QEMU q35 with an emulated VT-d, an e1000e at 00:03.0, virtio-net behind the root
port 00:04.0, edu behind the root port 00:05.0, and a conventional pci-bridge 00:06.0 carrying
an edu (03:01.0) and a pci-testdev (03:02.0): one three-device IOMMU group. Every id, class,
config-space size, BAR and device number below was read from that machine's sysfs.
"""

from __future__ import annotations

import stat
from typing import Any

from vmdev.testing import FakeHost

MEM = 0x40200
IO = 0x40101
PREF64 = 0x14220C

# bdf, vendor, device, class, driver, group, config size, parent, BARs (start, end, flags)
L1_FUNCTIONS: list[tuple[Any, ...]] = [
    ("0000:00:00.0", "0x8086", "0x29c0", "0x060000", None, 0, 256, "pci0000:00", []),
    ("0000:00:01.0", "0x1af4", "0x1009", "0x000200", "virtio-pci", 1, 256, "pci0000:00", []),
    ("0000:00:03.0", "0x8086", "0x10d3", "0x020000", "vfio-pci", 2, 4096, "pci0000:00",
     [(0xFE240000, 0xFE25FFFF, MEM), (0xFE260000, 0xFE27FFFF, MEM), (0xD080, 0xD09F, IO),
      (0xFE280000, 0xFE283FFF, MEM)]),
    ("0000:00:04.0", "0x1b36", "0x000c", "0x060400", "pcieport", 3, 4096, "pci0000:00", []),
    ("0000:00:05.0", "0x1b36", "0x000c", "0x060400", "pcieport", 4, 4096, "pci0000:00", []),
    ("0000:00:06.0", "0x1b36", "0x0001", "0x060400", None, 5, 256, "pci0000:00", []),
    ("0000:00:1f.0", "0x8086", "0x2918", "0x060100", None, 6, 256, "pci0000:00", []),
    ("0000:00:1f.2", "0x8086", "0x2922", "0x010601", None, 6, 256, "pci0000:00", []),
    ("0000:00:1f.3", "0x8086", "0x2930", "0x0c0500", None, 6, 256, "pci0000:00", []),
    ("0000:01:00.0", "0x1af4", "0x1041", "0x020000", "vfio-pci", 7, 4096, "pci0000:00/0000:00:04.0",
     [(0, 0, 0), (0xFE040000, 0xFE040FFF, MEM), (0, 0, 0), (0, 0, 0), (0xFE800000, 0xFE803FFF, PREF64)]),
    ("0000:02:00.0", "0x1234", "0x11e8", "0x00ff00", "vfio-pci", 8, 256, "pci0000:00/0000:00:05.0",
     [(0xFDE00000, 0xFDEFFFFF, MEM)]),
    ("0000:03:01.0", "0x1234", "0x11e8", "0x00ff00", "vfio-pci", 5, 256, "pci0000:00/0000:00:06.0",
     [(0xFDC00000, 0xFDCFFFFF, MEM)]),
    ("0000:03:02.0", "0x1b36", "0x0005", "0x00ff00", "vfio-pci", 5, 256, "pci0000:00/0000:00:06.0",
     [(0xFDD00000, 0xFDD00FFF, MEM), (0xC000, 0xC0FF, IO)]),
]
#: /dev/vfio/<group> -> (major, minor) on Debian 6.1 (minors follow bind order)
L1_GROUP_NODES = {2: (246, 0), 5: (246, 2), 7: (246, 3), 8: (246, 1)}
#: vfio-dev/vfioN in bind order (new_id for virtio-net ran last)
L1_CDEVS = {0: "0000:00:03.0", 1: "0000:02:00.0", 2: "0000:03:01.0", 3: "0000:03:02.0", 4: "0000:01:00.0"}


def resource_text(bars: list[tuple[int, int, int]]) -> str:
    rows = list(bars) + [(0, 0, 0)] * (13 - len(bars))
    return "".join(f"0x{s:016x} 0x{e:016x} 0x{f:016x}\n" for s, e, f in rows)


def build_l1_host(host: FakeHost, *, iommufd: bool = False) -> FakeHost:
    """The L1 guest's sysfs and /dev after binding (6.1, or the IOMMUFD 6.12 kernel)."""
    for bdf, vendor, device, class_code, driver, group, config, parent, bars in L1_FUNCTIONS:
        node = host.pci_function(bdf, vendor=vendor, device=device, class_code=class_code, driver=driver,
                                 iommu_group=group, config_size=config, parent=parent)
        (node / "resource").write_text(resource_text(bars))
    host.write("class/iommu/dmar0/uevent")
    major = 250 if iommufd else 246
    for group, (_, minor) in L1_GROUP_NODES.items():
        host.char_device(major, minor, f"vfio/{group}")
        host.fake_stat(str(host.dev / f"vfio/{group}"), mode=stat.S_IFCHR | 0o600, rdev=(major, minor))
    host.char_device(10, 196, "vfio/vfio")
    host.fake_stat(str(host.dev / "vfio/vfio"), mode=stat.S_IFCHR | 0o666, rdev=(10, 196))
    for number, bdf in L1_CDEVS.items():
        host.vfio_cdev(number, bdf, major=249 if iommufd else None)
        if iommufd:
            host.dev_file(f"vfio/devices/vfio{number}")
            host.fake_stat(str(host.dev / f"vfio/devices/vfio{number}"), mode=stat.S_IFCHR | 0o600,
                           rdev=(249, number))
    if iommufd:
        host.dev_file("iommu")
        host.fake_stat(str(host.dev / "iommu"), mode=stat.S_IFCHR | 0o660, rdev=(10, 257))
    return host


def group_request(group: int, path: str | None = None, major: int = 246) -> dict[str, Any]:
    """The OCI device entry for ``/dev/vfio/<group>`` of the L1 machine."""
    return {"path": path or f"/dev/vfio/{group}", "type": "c", "major": major,
            "minor": L1_GROUP_NODES[group][1]}


def cdev_request(number: int, path: str | None = None) -> dict[str, Any]:
    """The OCI device entry for ``/dev/vfio/devices/vfio<number>`` (IOMMUFD kernel)."""
    return {"path": path or f"/dev/vfio/devices/vfio{number}", "type": "c", "major": 249, "minor": number}
