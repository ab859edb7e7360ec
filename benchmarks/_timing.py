"""Shared by the benchmark scripts (run them as ``python benchmarks/<name>.py``).

Every goal of issue 13 is a ratio of two CPU times measured side by side: the two sides run in
pairs, alternating which goes first, and a figure is the median of the pairs' ratios with their
minimum and maximum (the spread). CPU time, not wall time: a loaded machine makes both sides
slower, not one. Children are timed with ``wait4``'s resource usage (user + system time of that
process alone), in-process work with ``time.process_time``. Nothing here needs pytest.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, best) wall time of ``repeat`` calls of ``fn``, in seconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment for a timed child, with bytecode caching on: an installed vmdev runs from
    ``.pyc`` files, so the warm-up run writes them where a development checkout has none."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra or {})
    return env


def child_cpu(argv: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """CPU seconds (user + system) that the process ``argv`` used until it exited; it must exit 0."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(env) if env is not None else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            message = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {message[0]}")
    return usage.ru_utime + usage.ru_stime


def cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of one call of ``fn`` in this process (garbage collected first, not timed)."""
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


@dataclass
class Paired:
    """The pairs of one comparison: ``base`` and ``subject`` seconds, and each pair's ratio
    ``subject / base`` (scaled by ``scale``, e.g. devices of the base over devices of the subject)."""

    base: list[float] = field(default_factory=list)
    subject: list[float] = field(default_factory=list)
    scale: float = 1.0

    @property
    def ratios(self) -> list[float]:
        return [s / b * self.scale for b, s in zip(self.base, self.subject, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def paired(
    base: Callable[[], float], subject: Callable[[], float], pairs: int, *, scale: float = 1.0
) -> Paired:
    """Run ``base`` and ``subject`` (each returns the seconds it measured) ``pairs`` times, the first
    of each pair alternating."""
    result = Paired(scale=scale)
    for n in range(pairs):
        if n % 2:
            s = subject()
            b = base()
        else:
            b = base()
            s = subject()
        result.base.append(b)
        result.subject.append(s)
    return result


@dataclass
class Report:
    """The figures of one benchmark, printed as they come, and whether every goal held."""

    missed: list[str] = field(default_factory=list)

    def ratio(self, label: str, result: Paired, *, goal: float | None = None, unit: str = "ms",
              per: tuple[float, float] = (1.0, 1.0)) -> None:
        """One line: the median ratio, its spread, the goal (if any) and the two medians (each
        divided by its ``per``: the medians per device)."""
        rs = result.ratios
        factor = {"ms": 1e3, "us": 1e6}[unit]
        medians = (f"{statistics.median(result.base) * factor / per[0]:.2f} vs "
                   f"{statistics.median(result.subject) * factor / per[1]:.2f} {unit}")
        verdict = ""
        if goal is not None:
            ok = result.ratio <= goal
            verdict = f"  goal <= {goal:g}: {'met' if ok else 'MISSED'}"
            if not ok:
                self.missed.append(label)
        print(f"{label}: {result.ratio:.2f}x (min {min(rs):.2f}, max {max(rs):.2f}; {len(rs)} pairs; "
              f"medians {medians}){verdict}", flush=True)

    def done(self) -> int:
        if self.missed:
            print(f"goals missed: {', '.join(self.missed)}")
        else:
            print("every goal met")
        return 0


def arguments(doc: str | None, pairs: int) -> argparse.ArgumentParser:
    """The options every benchmark takes (``--pairs``, ``--quick``)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=pairs, help=f"paired runs per figure (default {pairs})")
    parser.add_argument("--quick", action="store_true",
                        help="a third of the pairs (at least 3): a rough look")
    return parser


def pair_count(args: argparse.Namespace) -> int:
    pairs: int = args.pairs
    return max(3, pairs // 3) if args.quick else pairs


def header() -> None:
    print(f"python {sys.version.split()[0]} ({sys.executable})")
