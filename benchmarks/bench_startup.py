"""Cold start of the vmdev command line, as ratios of CPU time (run: python benchmarks/bench_startup.py).

A runtime runs ``vmdev`` on every container start, so its start-up cost adds to every sandbox.
Measured with the plugins installed in this interpreter's environment (``--plugins`` sets
``VMDEV_PLUGINS`` to compare with a subset), each command a fresh process of this interpreter:

* ``vmdev plan --format json`` of a one-device spec against the import floor of vmdev's own stack,
  ``python -c "import pluggy, attrs, json, pathlib"`` (goal: at most 1.5x);
* ``vmdev --help``, ``plugins``, ``resolve``, ``attach`` and ``detach`` against ``plan`` (goal: no
  slower, at most 1.0x); ``attach``/``detach`` of the generic device are given a fake QEMU
  (``vmdev.fakeqmp``) on a socket, which they need not talk to; for scale, the same of the RNG
  sandbox device, hot-plugged through it;
* for scale, where ``attach`` and ``detach`` spend what ``plan`` does not: their own modules, and
  their run with every module loaded, each against ``plan`` with the modules both load loaded
  (:func:`own_part`);
* for scale, the floor and ``plan`` against a bare ``python -c pass``, and the modules each loads.

Every host fact comes from a fake sysfs tree in a temporary directory (the device is ``/dev/null``,
1:3, whose node every Linux host has). Bytecode caching is switched on for the children and each
command runs twice before timing, so the figures are those of an installed vmdev.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from _timing import Paired, Report, arguments, child_cpu, child_env, header, pair_count, paired

FLOOR = "import pluggy, attrs, json, pathlib"
#: modules ``vmdev plan`` without ``--config`` has no use for (issue 13)
UNWANTED = ("email", "zipp", "tempfile", "shutil", "tomllib", "asyncio", "qemu", "importlib_metadata",
            "cattrs", "logging", "hashlib")
#: prints the modules a command loaded, after running it (as the console script does)
PROBE = (
    "import sys\n"
    "from vmdev.cli import main\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
)


def vmdev_argv() -> list[str]:
    """How a runtime starts vmdev: the console script, run by this interpreter."""
    script = Path(sys.executable).with_name("vmdev")
    return [sys.executable, str(script)] if script.exists() else [sys.executable, "-m", "vmdev"]


def fake_host(tmp: Path) -> Path:
    """A sysfs tree with ``/dev/null``'s uevent (the node itself is the host's)."""
    sysfs = tmp / "sys"
    (sysfs / "dev/char/1:3").mkdir(parents=True)
    (sysfs / "dev/char/1:3/uevent").write_text("MAJOR=1\nMINOR=3\nDEVNAME=null\n")
    return sysfs


def loaded_modules(args: list[str], env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True,
                         check=False)
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("MODULES ")]
    return line[-1].split()[1:] if line else []


def floor_modules(env: dict[str, str]) -> list[str]:
    code = f"{FLOOR}; import sys; print(' '.join(sorted(sys.modules)))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def main() -> int:
    parser = arguments(__doc__, pairs=15)
    parser.add_argument("--plugins", help="VMDEV_PLUGINS for the vmdev commands (default: every installed "
                        "plugin)")
    args = parser.parse_args()
    pairs = pair_count(args)
    header()
    env = child_env({"VMDEV_PLUGINS": args.plugins} if args.plugins is not None else {})
    report = Report()
    with tempfile.TemporaryDirectory(prefix="vmdev-bench-") as name:
        tmp = Path(name)
        sysfs = fake_host(tmp)
        spec = tmp / "config.json"
        spec.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {"devices": [
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}))
        vmdev = vmdev_argv()
        plan_args = ["plan", "--format", "json", "--sysfs-root", str(sysfs), str(spec)]
        device = ["--sysfs-root", str(sysfs), "--type", "c", "--major", "1", "--minor", "3", "/dev/null"]
        commands: dict[str, list[str]] = {
            "bare": [sys.executable, "-c", "pass"],
            "floor": [sys.executable, "-c", FLOOR],
            "plan": [*vmdev, *plan_args],
            "--help": [*vmdev, "--help"],
            "plugins": [*vmdev, "plugins"],
            "resolve": [*vmdev, "resolve", *device],
        }
        run: dict[str, Callable[[], float]] = {k: partial(child_cpu, v, env) for k, v in commands.items()}
        for fn in run.values():  # warm-up: bytecode written, files cached
            fn()
            fn()
        print(f"plugins: {args.plugins if args.plugins is not None else 'every installed one'}; "
              f"{pairs} pairs per figure; CPU time of each process")
        report.ratio("python -c pass -> import floor (for scale)", paired(run["bare"], run["floor"], pairs))
        report.ratio("python -c pass -> vmdev plan (for scale)", paired(run["bare"], run["plan"], pairs))
        report.ratio("import floor -> vmdev plan", paired(run["floor"], run["plan"], pairs), goal=1.5)
        for command in ("--help", "plugins", "resolve"):
            report.ratio(f"vmdev plan -> vmdev {command}", paired(run["plan"], run[command], pairs), goal=1.0)
        attach_detach(report, vmdev, device, tmp, env, (plan_args, run["plan"]), pairs)
        modules(plan_args, env)
    return report.done()


def attach_detach(report: Report, vmdev: list[str], device: list[str], tmp: Path, env: dict[str, str],
                  plan: tuple[list[str], Callable[[], float]], pairs: int) -> None:
    """``vmdev attach`` and ``vmdev detach`` of the device against ``plan`` (its arguments and its
    timer), on a fake QEMU."""
    from vmdev.fakeqmp import FakeQemu, FakeQmpServer

    state, sock = tmp / "state.json", tmp / "qmp.sock"
    attach = ["attach", "--state", str(state), "--qmp", str(sock), *device]
    detach = ["detach", "--state", str(state), "--qmp", str(sock), *device]
    attach_once, detach_once = cycle([*vmdev, *attach], [*vmdev, *detach], env)
    with FakeQmpServer(FakeQemu().add_port("rp0"), sock):
        attach_once()
        detach_once()
        report.ratio("vmdev plan -> vmdev attach", paired(plan[1], attach_once, pairs), goal=1.0)
        report.ratio("vmdev plan -> vmdev detach", paired(plan[1], detach_once, pairs), goal=1.0)
        own_part(report, (plan[0], attach, detach), [*vmdev, *attach], [*vmdev, *detach], env, pairs)
        hot_plug(report, vmdev, state, sock, env, plan[1], pairs)


#: runs ``vmdev ARGS...`` in-process: first loads the modules its first argument names, then (timed)
#: those its second names (comma-separated lists), then runs the command (timed); prints the CPU
#: seconds of the second imports and of the command, and the command's exit status. The modules are
#: loaded with attrs's methods from vmdev's method cache, as the command loads them
OWN_WORK = (
    "import importlib, sys, time\n"
    "from vmdev.cli import main\n"
    "from vmdev.methodcache import compiled_methods\n"
    "loaded, timed = (sys.argv.pop(1).split(',') for _ in range(2))\n"
    "with compiled_methods():\n"
    "    for name in filter(None, loaded):\n"
    "        importlib.import_module(name)\n"
    "    start = time.process_time()\n"
    "    for name in filter(None, timed):\n"
    "        importlib.import_module(name)\n"
    "    imported, status = time.process_time(), 0\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    status = exc.code or 0\n"
    "sys.stderr.write(f'\\nOWN {imported - start} {time.process_time() - imported} {status}\\n')\n"
)


def own_work(args: list[str], loaded: set[str], timed: set[str], env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds of loading the modules ``timed`` once those of ``loaded`` are, and of the command
    ``vmdev ARGS`` after that, in one process (see :data:`OWN_WORK`)."""
    names = [",".join(sorted(group - {"__main__"})) for group in (loaded, timed)]
    done = subprocess.run([sys.executable, "-c", OWN_WORK, *names, *args], env=env, capture_output=True,
                          text=True, check=False)
    line = [ln.split() for ln in done.stderr.splitlines() if ln.startswith("OWN ")]
    if not line or line[-1][3] != "0":
        raise RuntimeError(f"vmdev {' '.join(args)} in-process failed: {done.stderr.strip()[-300:]}")
    return float(line[-1][1]), float(line[-1][2])


def own_part(report: Report, args: tuple[list[str], list[str], list[str]], attach: list[str],
             detach: list[str], env: dict[str, str], pairs: int) -> None:
    """For scale, where ``attach`` and ``detach`` spend what ``plan`` does not, each against ``plan``
    run in-process with the modules both load already loaded (plan's part: the work both share,
    plan's own modules, plan's own work):

    * the command's own modules (those ``plan`` does not load: the state, the manager), loaded after
      the shared ones;
    * the command run in-process with every module it loads already loaded (the work both share,
      and its own work).

    The two add up to the command against ``plan`` once the shared modules are loaded: it can match
    ``plan`` only if they add up to 1x at most, and if the second alone is 1x or more, it cannot
    even were its own modules free to load. ``args`` are the three commands' arguments;
    ``attach``/``detach`` the full command lines, to undo each other."""
    plan_args, attach_args, detach_args = args
    plan_loads = set(loaded_modules(plan_args, env))
    nothing: list[str] = []
    steps = (("attach", attach_args, nothing, detach), ("detach", detach_args, attach, nothing))
    for command, own_args, before, after in steps:
        loads = set(sandbox_step(loaded_modules, own_args, before, after, env))
        shared = plan_loads & loads
        plan_part = partial(own_work, plan_args, shared, set(), env)
        own = partial(sandbox_step, own_work, own_args, before, after, env, shared, loads - shared)
        imports, work = Paired(), Paired()
        for n in range(pairs):
            if n % 2 == 0:
                base, mine = plan_part(), own()
            else:
                mine, base = own(), plan_part()
            for result, spent in ((imports, mine[0]), (work, mine[1])):
                result.base.append(base[1])
                result.subject.append(spent)
        label = f"vmdev plan, shared modules loaded -> vmdev {command}"
        report.ratio(f"{label}'s own modules (for scale)", imports)
        report.ratio(f"{label}, every module loaded (for scale)", work)


def sandbox_step(run: Callable[..., Any], args: list[str], before: list[str], after: list[str],
                 env: dict[str, str], *more: Any) -> Any:
    """``run(args, *more, env)`` of an attach or detach, between the command lines that put the sandbox
    in the state it needs (``before``) and back as it was (``after``)."""
    if before:
        child_cpu(before, env)
    done = run(args, *more, env)
    if after:
        child_cpu(after, env)
    return done


def hot_plug(report: Report, vmdev: list[str], state: Path, sock: Path, env: dict[str, str],
             plan: Callable[[], float], pairs: int) -> None:
    """For scale: ``attach``/``detach`` of a device that reaches the VM, the sandbox's RNG device
    (vmdev-rng), hot-plugged and unplugged through the fake QEMU. The generic device above stays in
    the container and needs no word with QEMU; this one connects, negotiates and sends two commands
    each way. Not a goal of its own: the QMP conversation is the command's work, not its start."""
    live = ["--state", str(state), "--qmp", str(sock), "--sandbox-device", "rng"]
    attach, detach = [*vmdev, "attach", *live], [*vmdev, "detach", *live]
    probe = subprocess.run(attach, env=env, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        print(f"vmdev plan -> vmdev attach with hot plug (for scale): not measured, the sandbox has no RNG "
              f"device to hot-plug ({probe.stderr.strip()}); install vmdev-rng", flush=True)
        return
    child_cpu(detach, env)
    attach_once, detach_once = cycle(attach, detach, env)
    report.ratio("vmdev plan -> vmdev attach with hot plug (for scale)", paired(plan, attach_once, pairs))
    report.ratio("vmdev plan -> vmdev detach with hot unplug (for scale)", paired(plan, detach_once, pairs))


def cycle(attach: list[str], detach: list[str], env: dict[str, str]) -> tuple[Callable[[], float],
                                                                              Callable[[], float]]:
    """Two timers over one attach + detach cycle: the CPU time of the attach, and of the detach
    (each command runs every time, so the sandbox ends as it began)."""

    def attach_once() -> float:
        spent = child_cpu(attach, env)
        child_cpu(detach, env)
        return spent

    def detach_once() -> float:
        child_cpu(attach, env)
        return child_cpu(detach, env)

    return attach_once, detach_once


def modules(plan_args: list[str], env: dict[str, str]) -> None:
    floor = floor_modules(env)
    plan = loaded_modules(plan_args, env)
    unwanted = sorted({m.split(".")[0] for m in plan} & set(UNWANTED))
    print(f"modules loaded: import floor {len(floor)}, vmdev plan {len(plan)}; of those vmdev plan has no "
          f"use for: {', '.join(unwanted) or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
