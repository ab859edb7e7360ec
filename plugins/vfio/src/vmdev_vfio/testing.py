"""Test helpers: VFIO's fake-host builders and hosts copied from real kernels' sysfs.

The builders add what the kernel shows for VFIO to a core :class:`vmdev.testing.FakeHost`
(which builds the generic parts: PCI functions, character devices, files and links):
:func:`iommu_group_member`, :func:`vfio_group`, :func:`mdev_device`, :func:`ap_matrix_device` and
:func:`vfio_cdev`. A group the plugin is to pass needs :func:`vfio_group` (the kernel's
``class/vfio/<g>``, made when a VFIO driver binds a device of the group): the plugin checks a
request's numbers against it.

The L1 machine, as Debian 6.1 and an IOMMUFD 6.12 kernel see it: QEMU q35 with an emulated
VT-d, an e1000e at 00:03.0, virtio-net behind the root port 00:04.0, edu behind the root port
00:05.0, and a conventional pci-bridge 00:06.0 carrying an edu (03:01.0) and a pci-testdev
(03:02.0): one three-device IOMMU group. Every id, class, config-space size, BAR and device
number below was read from that machine's sysfs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vmdev.fakehost import FakeHost
from vmdev.models import Device
from vmdev.oci import parse_spec
from vmdev.planner import Pipeline
from vmdev.resources import Allocator

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


def iommu_group_member(host: FakeHost, group: int, name: str, node: str) -> None:
    """Put the device at sysfs ``node`` into IOMMU group ``group`` under ``name``
    (the group's ``devices/<name>`` link and the device's ``iommu_group`` link)."""
    directory = f"kernel/iommu_groups/{group}"
    (host.sysfs / directory / "devices").mkdir(parents=True, exist_ok=True)
    host.symlink(f"{node}/iommu_group", f"/{directory}")
    host.symlink(f"{directory}/devices/{name}", f"/{node}")


def vfio_group(host: FakeHost, group: int, major: int, minor: int) -> Path:
    """The VFIO group node ``/dev/vfio/<group>`` as the kernel makes it when a VFIO driver binds a
    device of IOMMU group ``group``: ``devices/virtual/vfio/<group>`` with ``dev`` and ``uevent``,
    linked from ``class/vfio/<group>`` and ``dev/char/<major>:<minor>``, and the node under the
    fake /dev (a regular file that ``host.stat`` reports as character device ``major:minor``)."""
    node = f"devices/virtual/vfio/{group}"
    host.write(f"{node}/dev", f"{major}:{minor}\n")
    host.write(f"{node}/uevent", f"MAJOR={major}\nMINOR={minor}\nDEVNAME=vfio/{group}\n")
    host.symlink(f"class/vfio/{group}", f"/{node}")
    host.symlink(f"dev/char/{major}:{minor}", f"/{node}")
    host.dev_file(f"vfio/{group}")
    host.fake_stat(str(host.dev / f"vfio/{group}"), mode=stat.S_IFCHR | 0o600, rdev=(major, minor))
    return host.sysfs / node


def mdev_device(
    host: FakeHost, uuid: str, parent_bdf: str, *, iommu_group: int, driver: str = "vfio_mdev",
    vfio_node: tuple[int, int] | None = None,
) -> Path:
    """A mediated device below PCI function ``parent_bdf`` (create that first), as
    ``/sys/bus/mdev/devices/<uuid>`` with its own IOMMU group and driver link; with ``vfio_node``
    (major, minor) also the group's VFIO node (:func:`vfio_group`), as its VFIO driver makes it."""
    parent = host.sysfs / "bus" / "pci" / "devices" / parent_bdf
    node = os.path.relpath(os.path.realpath(parent), os.path.realpath(host.sysfs)) + f"/{uuid}"
    (host.sysfs / node).mkdir(parents=True, exist_ok=True)
    host.symlink(f"bus/mdev/devices/{uuid}", f"/{node}")
    (host.sysfs / f"bus/mdev/drivers/{driver}").mkdir(parents=True, exist_ok=True)
    host.symlink(f"{node}/driver", f"/bus/mdev/drivers/{driver}")
    iommu_group_member(host, iommu_group, uuid, node)
    if vfio_node is not None:
        vfio_group(host, iommu_group, *vfio_node)
    return host.sysfs / node


def ap_matrix_device(host: FakeHost, uuid: str, queues: Iterable[str], *, iommu_group: int,
                     vfio_node: tuple[int, int] | None = None) -> Path:
    """An s390x AP matrix mdev ``devices/vfio_ap/matrix/<uuid>`` whose ``matrix`` file
    lists ``queues`` (APQNs such as ``05.001f``), in IOMMU group ``iommu_group``; with ``vfio_node``
    (major, minor) also the group's VFIO node (:func:`vfio_group`), as vfio_ap makes it."""
    node = f"devices/vfio_ap/matrix/{uuid}"
    host.write(f"{node}/matrix", "".join(f"{queue}\n" for queue in queues))
    host.symlink(f"bus/mdev/devices/{uuid}", f"/{node}")
    iommu_group_member(host, iommu_group, uuid, node)
    if vfio_node is not None:
        vfio_group(host, iommu_group, *vfio_node)
    return host.sysfs / node


def vfio_cdev(host: FakeHost, number: int, bdf: str, *, major: int | None = 249) -> Path:
    """``class/vfio-dev/vfio<number>`` for PCI function ``bdf`` (create it first), as the
    kernel makes it when the function is bound to vfio-pci. With ``major`` (IOMMUFD
    kernels) it has ``dev`` and a uevent naming ``vfio/devices/vfio<number>``; with None
    it has neither (kernels without ``CONFIG_VFIO_DEVICE_CDEV``)."""
    function = os.path.relpath(os.path.realpath(host.sysfs / "bus" / "pci" / "devices" / bdf),
                               os.path.realpath(host.sysfs))
    node = f"{function}/vfio-dev/vfio{number}"
    uevent = ""
    if major is not None:
        host.write(f"{node}/dev", f"{major}:{number}\n")
        uevent = f"MAJOR={major}\nMINOR={number}\nDEVNAME=vfio/devices/vfio{number}\n"
        host.symlink(f"dev/char/{major}:{number}", f"/{node}")
    host.write(f"{node}/uevent", uevent)
    host.symlink(f"{node}/device", f"/{function}")
    host.symlink(f"class/vfio-dev/vfio{number}", f"/{node}")
    return host.sysfs / node


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
        vfio_group(host, group, major, minor)
    host.char_device(10, 196, "vfio/vfio")
    host.fake_stat(str(host.dev / "vfio/vfio"), mode=stat.S_IFCHR | 0o666, rdev=(10, 196))
    for number, bdf in L1_CDEVS.items():
        vfio_cdev(host, number, bdf, major=249 if iommufd else None)
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


def build_all(pipeline: Pipeline, *requests: dict[str, Any]) -> list[Device]:
    """The devices ``pipeline`` builds for the OCI device entries ``requests``, then the
    sandbox's own (as a plan builds them, without rendering)."""
    alloc = Allocator()
    infos = parse_spec({"linux": {"devices": list(requests)}}).devices
    built = [pipeline.build(pipeline.resolve(info), alloc) for info in infos] + pipeline.sandbox_devices()
    return [b.device for b in built]


# --- a GPU host: NVIDIA H200, as its sysfs and /dev read (facts from a real host, read-only) ---------
H200_BDF = "0000:41:00.0"
H200_GROUP = 42
#: the H200's ``resource`` file: BAR0 16 MiB, BAR2 256 GiB and BAR4 32 MiB, all 64-bit prefetchable
#: (lines 1, 3 and 5 are the upper halves of the 64-bit BARs)
H200_BARS: list[tuple[int, int, int]] = [
    (0x0000104002000000, 0x0000104002FFFFFF, PREF64), (0, 0, 0),
    (0x0000100000000000, 0x0000103FFFFFFFFF, PREF64), (0, 0, 0),
    (0x0000104000000000, 0x0000104001FFFFFF, PREF64), (0, 0, 0),
]
#: the driver's character devices: (path, major, minor). nvidia-cap1's major 241 is the number Kata
#: uses for vhost-user-blk *block* devices; this is a character device
NVIDIA_NODES: list[tuple[str, int, int]] = [
    ("/dev/nvidia0", 195, 0),
    ("/dev/nvidiactl", 195, 255),
    ("/dev/nvidia-uvm", 238, 0),
    ("/dev/nvidia-caps/nvidia-cap1", 241, 1),
]


def build_h200_host(host: FakeHost, *, numa_node: int = 1, bdf: str = H200_BDF, group: int = H200_GROUP,
                    vfio_major: int = 246, vfio_minor: int = 0) -> FakeHost:
    """An H200 (10de:2335, class 0x030200, 4 KiB config space, PCIe 32.0 GT/s x16) bound to
    vfio-pci on host NUMA node ``numa_node`` of a two-node host (CPUs 0-47 and 48-95), its IOMMU
    group ``/dev/vfio/<group>``, and the NVIDIA driver's character devices."""
    node = host.pci_function(bdf, vendor="0x10de", device="0x2335", class_code="0x030200", driver="vfio-pci",
                             iommu_group=group, config_size=4096, numa_node=numa_node,
                             parent="pci0000:40/0000:40:01.1")
    (node / "resource").write_text(resource_text(H200_BARS))
    (node / "current_link_speed").write_text("32.0 GT/s PCIe\n")
    (node / "current_link_width").write_text("16\n")
    vfio_group(host, group, vfio_major, vfio_minor)
    for path, major, minor in NVIDIA_NODES:
        host.char_device(major, minor, path.removeprefix("/dev/"))
    host.write("devices/system/node/online", "0-1\n")
    for number, cpus, distances in ((0, "0-47", "10 21"), (1, "48-95", "21 10")):
        host.write(f"devices/system/node/node{number}/cpulist", cpus + "\n")
        host.write(f"devices/system/node/node{number}/distance", distances + "\n")
    return host


def h200_requests(
    group: int = H200_GROUP, vfio_major: int = 246, vfio_minor: int = 0
) -> list[dict[str, Any]]:
    """The OCI devices of a GPU container: the VFIO group and the NVIDIA driver's nodes."""
    nodes = [{"path": path, "type": "c", "major": major, "minor": minor} for path, major, minor in
             NVIDIA_NODES]
    return [{"path": f"/dev/vfio/{group}", "type": "c", "major": vfio_major, "minor": vfio_minor}, *nodes]
