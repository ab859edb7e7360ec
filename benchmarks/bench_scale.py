"""How planning scales with the number of devices, as ratios of CPU time per device
(run: python benchmarks/bench_scale.py).

Plans, in this process with every installed plugin, on fake hosts:

* VFIO: 64 and 4,096 PCI functions, each alone in its IOMMU group and bound to vfio-pci, passed as
  ``/dev/vfio/<group>``, planned for Cloud Hypervisor;
* block: 64 and 4,096 disks (``b`` devices with a sysfs uevent and a node), planned for each
  built-in hypervisor.

Each figure is the cost per device of the large plan over that of the small one (goal: at most
1.2x: no step may grow faster than the number of devices). Garbage collection stays on, as in a
runtime, after a collection before each plan.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import Report, arguments, cpu, header, pair_count, paired

from vmdev.fakehost import FakeHost
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import PluginManager
from vmdev.settings import SandboxSettings
from vmdev_vfio.testing import vfio_group

SMALL, LARGE = 64, 4096
VFIO_MAJOR, DISK_MAJOR = 246, 259
HYPERVISORS = ("qemu", "cloud-hypervisor", "firecracker")


def vfio_host(root: Path, count: int) -> tuple[FakeHost, list[dict[str, Any]]]:
    """``count`` functions bound to vfio-pci, one per IOMMU group; their OCI device entries."""
    host = FakeHost(root)
    requests = []
    for n in range(count):
        bdf = f"0000:{1 + n // 32:02x}:{n % 32:02x}.0"
        host.pci_function(bdf, driver="vfio-pci", iommu_group=n, config_size=4096)
        vfio_group(host, n, VFIO_MAJOR, n)
        requests.append({"path": f"/dev/vfio/{n}", "type": "c", "major": VFIO_MAJOR, "minor": n})
    return host, requests


def disk_host(root: Path, count: int) -> tuple[FakeHost, list[dict[str, Any]]]:
    """``count`` disks ``/dev/bench<n>``; their OCI device entries."""
    host = FakeHost(root)
    for n in range(count):
        host.block_device(DISK_MAJOR, n, f"bench{n}")
    requests = [{"path": f"/dev/xvd{n}", "type": "b", "major": DISK_MAJOR, "minor": n} for n in range(count)]
    return host, requests


Builder = Callable[[Path, int], tuple[FakeHost, list[dict[str, Any]]]]


def planner(root: Path, build: Builder, count: int, settings: SandboxSettings,
            pm: PluginManager) -> Callable[[], float]:
    """A function that plans the ``count`` devices ``build`` makes and returns its CPU time."""
    host, requests = build(root, count)
    host.dev_file("urandom")  # the RNG plugin's entropy source
    spec = parse_spec({"linux": {"devices": requests}})
    context = host.context()

    def run() -> float:
        return cpu(lambda: plan(spec, settings, host=context, plugins=pm))

    run()  # the first plan warms caches (and fails early on a wrong setup)
    return run


def main() -> int:
    parser = arguments(__doc__, pairs=7)
    args = parser.parse_args()
    pairs = pair_count(args)
    header()
    report = Report()
    pm = PluginManager().load()
    with tempfile.TemporaryDirectory(prefix="vmdev-bench-") as name:
        tmp = Path(name)
        cases = [("VFIO functions, cloud-hypervisor", vfio_host, "cloud-hypervisor")]
        cases += [(f"disks, {hypervisor}", disk_host, hypervisor) for hypervisor in HYPERVISORS]
        for label, build, hypervisor in cases:
            settings = SandboxSettings(hypervisor=hypervisor)
            small = planner(tmp / f"{label}-{SMALL}", build, SMALL, settings, pm)
            large = planner(tmp / f"{label}-{LARGE}", build, LARGE, settings, pm)
            result = paired(small, large, pairs, scale=SMALL / LARGE)
            report.ratio(f"{SMALL} -> {LARGE} {label}, per device", result, goal=1.2, unit="us",
                         per=(SMALL, LARGE))
    return report.done()


if __name__ == "__main__":
    sys.exit(main())
