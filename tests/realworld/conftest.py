"""The real-world session: inputs generated on this machine, every plan run once up front.

Run with ``tests/realworld`` and ``tests/e2e`` (the rig) on the Python path::

    pytest -o pythonpath="tests/realworld tests/e2e" tests/realworld

``--realworld-report FILE`` writes the outcome tables (the data of README.md's failure table).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from rwinputs.report import write_report
    from rwinputs.session import Session, combo_ids
except ImportError as exc:  # pragma: no cover - a setup problem, reported as such
    raise pytest.UsageError(
        f"tests/realworld needs its support package on the Python path ({exc}): run pytest with "
        '-o pythonpath="tests/realworld tests/e2e"'
    ) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--realworld-report", default=None, metavar="FILE",
                     help="write the real-world outcome tables (markdown) to FILE")


@pytest.fixture(scope="session")
def rw(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Session]:
    """The session: engine specs, Kata configs and variants, and every combination's outcome."""
    with Session.start(tmp_path_factory.mktemp("realworld")) as session:
        session.run_all(combo_ids())
        yield session
        target = pytestconfig.getoption("--realworld-report")
        if target:
            write_report(session, Path(target))
