"""Speed of vmdev's hot paths, printed as figures (run: python benchmarks/bench_plan.py).

Measures, with the plugins installed in the running environment:
* ``import vmdev`` in a fresh interpreter (plugin-free by design),
* loading the plugins (entry points, every installed distribution, vs a named list),
* planning specs of 1, 10, 100 and 1000 character devices on a fake sysfs tree, per hypervisor.

Absolute figures (medians of repeated runs), no goals: ``--quick`` repeats each a quarter as often.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from _timing import timed

from vmdev.fakehost import FakeHost
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings


def import_time(repeat: int = 5) -> float:
    code = "import time; t = time.perf_counter(); import vmdev; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeat)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="repeat each figure a quarter as often")
    share = 4 if parser.parse_args().quick else 1
    print(f"python {sys.version.split()[0]}")
    print(f"import vmdev (fresh interpreter, median of 5): {import_time() * 1000:.1f} ms")
    med, best = timed(lambda: PluginManager(LoadPolicy()).load(), 20 // share)
    print(f"load all installed plugins: median {med * 1000:.2f} ms, best {best * 1000:.2f} ms")
    med, best = timed(lambda: PluginManager(LoadPolicy(only=("vmdev-rng",))).load(), 20 // share)
    print(f"load VMDEV_PLUGINS=vmdev-rng: median {med * 1000:.2f} ms, best {best * 1000:.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        host = FakeHost(Path(tmp))
        for minor in range(1000):
            host.char_device(500, minor, f"bench{minor}")
        host.dev_file("urandom")
        context = host.context()
        pm = PluginManager(LoadPolicy()).load()
        for count in (1, 10, 100, 1000):
            spec = parse_spec(
                {"linux": {"devices": [
                    {"path": f"/dev/b{m}", "type": "c", "major": 500, "minor": m} for m in range(count)
                ]}}
            )
            for hypervisor in ("qemu", "cloud-hypervisor", "firecracker"):
                settings = SandboxSettings(hypervisor=hypervisor)
                repeat = max(1, (20 if count < 1000 else 5) // share)
                med, _ = timed(partial(plan, spec, settings, host=context, plugins=pm), repeat)
                print(f"plan {count:5d} devices for {hypervisor:17s}: {med * 1000:8.2f} ms "
                      f"({med / count * 1e6:7.1f} us/device)")


if __name__ == "__main__":
    main()
