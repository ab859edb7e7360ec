"""Host-path resolution against raw Python reads, as a ratio of CPU time
(run: python benchmarks/bench_resolve.py).

10,000 character devices on a fake sysfs tree are resolved in this process through the plugin
manager (``PluginManager.resolve_host_path``, every hook implementation of the loaded plugins, the
core's default last), and compared with the least Python can do for the same answer: ``open().read()``
of each device's ``uevent`` file and the ``DEVNAME`` line cut out of it (goal: at most 1.5x). Both
sides read the same files in the same order; the page cache is warm after the first round.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _timing import Report, arguments, cpu, header, pair_count, paired

from vmdev.fakehost import FakeHost
from vmdev.models import DeviceInfo
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings

MAJOR = 500


def raw(root: Path, count: int) -> list[str]:
    """What a hand-written resolver does: read each uevent, take DEVNAME."""
    sysfs = str(root)
    out = []
    for minor in range(count):
        with open(f"{sysfs}/dev/char/{MAJOR}:{minor}/uevent") as handle:
            text = handle.read()
        for line in text.splitlines():
            if line.startswith("DEVNAME="):
                out.append("/dev/" + line[8:])
                break
    return out


def main() -> int:
    parser = arguments(__doc__, pairs=11)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    pairs, count = pair_count(args), args.devices
    header()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="vmdev-bench-") as name:
        host = FakeHost(Path(name))
        for minor in range(count):
            host.uevent("char", MAJOR, minor, f"MAJOR={MAJOR}\nMINOR={minor}\nDEVNAME=bench/{minor}\n")
        context = host.context()
        infos = [DeviceInfo(container_path=f"/dev/b{m}", dev_type="c", major=MAJOR, minor=m)
                 for m in range(count)]
        expected = raw(host.sysfs, count)
        for label, policy in (("every installed plugin", LoadPolicy()),
                              ("the core's plugins only", LoadPolicy(only=()))):
            pm = PluginManager(policy).load()
            settings = pm.prepare_settings(SandboxSettings())

            def resolve(pm: PluginManager = pm, settings: SandboxSettings = settings) -> list[str]:
                return [pm.resolve_host_path(info, context, settings) for info in infos]

            if resolve() != expected:
                raise SystemExit("the plugin manager resolved other paths than the raw reads")
            result = paired(lambda: cpu(lambda: raw(host.sysfs, count)), lambda: cpu(resolve), pairs)
            report.ratio(f"raw open().read() -> resolve_host_path, {count} devices, {label}", result,
                         goal=1.5 if policy.only is None else None, unit="us", per=(count, count))
    return report.done()


if __name__ == "__main__":
    sys.exit(main())
