"""Running cases: a per-case time limit, a session with one plugin manager, counts per surface.

The time limit is ``SIGALRM`` (``setitimer``): the handler raises :class:`~vmdev_fuzz.oracles.Hang`,
a ``BaseException``, so no plugin's ``except Exception`` swallows it and a blocking ``open()`` of
a FIFO is interrupted (PEP 475 retries only when the handler returns). It needs the main thread,
where pytest and the long run call it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import tempfile
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import attrs

from vmdev.plugins import PluginManager
from vmdev_fuzz import strategies
from vmdev_fuzz.known import KNOWN_BUGS, KnownBug, known
from vmdev_fuzz.oracles import (
    CRASH,
    HANG,
    INJECTION,
    MULTI_LINE,
    PATH_CHANGE,
    WRONG_DEVICE,
    CleanKeys,
    Hang,
    Violation,
    innermost,
    line_problem,
    stack,
)
from vmdev_fuzz.surfaces import SURFACES, Outcome

#: seconds one case may take (a plan on a fake host takes milliseconds)
DEFAULT_TIMEOUT: Final = 5.0
COLUMNS: Final = ("inputs", "accepted", "refused", "crashes", "hangs", "multi-line", "injections",
                  "wrong devices", "path changes")
_ORACLE_COLUMN: Final = {CRASH: "crashes", HANG: "hangs", MULTI_LINE: "multi-line", INJECTION: "injections",
                         WRONG_DEVICE: "wrong devices", PATH_CHANGE: "path changes"}


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class LogLines(logging.Handler):
    """Collects what vmdev logs during a case: a log line is as forgeable as an error line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.problems: list[Violation] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # noqa: BLE001 - a record that cannot be formatted is the finding
            self.problems.append(Violation(MULTI_LINE, f"log: {record.name} record cannot be formatted: {exc!r}",
                                           f"{record.pathname.rsplit('/', 2)[-2:]}:{record.lineno}"))
            return
        problem = line_problem(message)
        if problem is not None:
            where = "/".join(record.pathname.split("/")[-2:]) + f":{record.lineno} in {record.funcName}"
            self.problems.append(Violation(MULTI_LINE, f"log: {record.name} {problem}: {message[:200]!r}", where))


@contextlib.contextmanager
def captured_logs() -> Iterator[LogLines]:
    logger = logging.getLogger("vmdev")
    handler = LogLines()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@attrs.define
class Finding:
    surface: str
    case: Any
    violation: Violation
    bug: KnownBug | None


class Session:
    """One fuzzing session: the plugins, the clean keys learned so far, counts and findings."""

    def __init__(self, work: Path | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 pm: PluginManager | None = None, keep: int = 50) -> None:
        self.work = work or Path(tempfile.mkdtemp(prefix="vmdev-fuzz-"))
        self.timeout = timeout
        self.pm = pm or strategies.plugins()
        self.clean = CleanKeys()
        self.counts: dict[str, collections.Counter[str]] = {}
        self.known_hits: collections.Counter[str] = collections.Counter()
        self.findings: list[Finding] = []
        self.keep = keep

    def __repr__(self) -> str:
        return f"Session(work={str(self.work)!r})"

    def run(self, surface: str, case: Any) -> Outcome:
        """Run one case of ``surface`` within the time limit and count what it gave."""
        with captured_logs() as logs:
            try:
                with time_limit(self.timeout):
                    outcome = SURFACES[surface].run(case, self)
            except Hang as exc:
                if any(frame.filename.endswith("vmdev_fuzz/hosts.py") for frame in traceback.extract_tb(exc.__traceback__)):
                    raise RuntimeError(f"the fuzz kit hung building a fake host for {case!r}") from exc
                outcome = Outcome("hang", [Violation(HANG, str(exc), innermost(exc), stack(exc))], str(exc))
        outcome.violations += logs.problems
        self.record(surface, case, outcome)
        return outcome

    def record(self, surface: str, case: Any, outcome: Outcome) -> None:
        counts = self.counts.setdefault(surface, collections.Counter())
        counts["inputs"] += 1
        if outcome.status in ("accepted", "refused"):
            counts[outcome.status] += 1
        for column in sorted({_ORACLE_COLUMN[v.oracle] for v in outcome.violations}):
            counts[column] += 1
        for violation in outcome.violations:
            bug = known(violation)
            if bug is not None:
                self.known_hits[bug.key] += 1
            if len(self.findings) < self.keep and (bug is None or self.known_hits[bug.key] <= 2):
                self.findings.append(Finding(surface, case, violation, bug))

    def new_violations(self, outcome: Outcome) -> list[Violation]:
        """The violations no known bug explains."""
        return [v for v in outcome.violations if known(v) is None]


def table(session: Session) -> str:
    """The counts per surface, as a text table (the long run prints it)."""
    rows: list[tuple[str, ...]] = [("surface", *COLUMNS)]
    total: collections.Counter[str] = collections.Counter()
    for surface in SURFACES:
        counts = session.counts.get(surface, collections.Counter())
        total.update(counts)
        rows.append((surface, *(str(counts[c]) for c in COLUMNS)))
    rows.append(("total", *(str(total[c]) for c in COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                         strict=True)))
                     for row in rows)


def known_table(session: Session) -> str:
    lines = []
    for bug in KNOWN_BUGS:
        lines.append(f"{session.known_hits[bug.key]:8d}  {bug.key}  [{bug.owner}] {bug.title}")
    return "\n".join(lines)
