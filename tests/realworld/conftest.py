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


def _needed(items: list[pytest.Item]) -> list[tuple[str, str, bool]]:
    """The combinations the selected tests look at (all of them for the tests that compare)."""
    everything = combo_ids()
    wanted = set()
    for item in items:
        params = getattr(item, "callspec", None)
        if params is not None and "combo_id" in params.params:
            wanted.add(params.params["combo_id"])
        elif item.name.startswith("test_the_fork_server"):
            return everything
    return [c for c in everything if c in wanted]


@pytest.fixture(scope="session")
def rw(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config,
       request: pytest.FixtureRequest) -> Iterator[Session]:
    """The session: engine specs, Kata configs and variants, and the selected combinations' outcomes
    (all run up front, in parallel)."""
    with Session.start(tmp_path_factory.mktemp("realworld")) as session:
        session.run_all(_needed(list(request.session.items)))
        yield session
        target = pytestconfig.getoption("--realworld-report")
        if target:
            write_report(session, Path(target))
