"""What the fuzz properties assert (shared by the test modules)."""

from __future__ import annotations

from typing import Any

from vmdev_fuzz.oracles import dumps
from vmdev_fuzz.runner import Session


def meets_every_oracle(session: Session, surface: str, case: Any) -> None:
    """Run ``case``; fail with the case and every violation no known bug explains."""
    outcome = session.run(surface, case)
    new = session.new_violations(outcome)
    assert not new, "\n".join(f"{v.oracle}: {v.detail} [{v.where}]" for v in new) + f"\ncase: {dumps(repr(case))}"


def violations_of(session: Session, surface: str, case: Any) -> list[str]:
    """The violations of ``case`` no known bug explains, each as one line with the case."""
    outcome = session.run(surface, case)
    return [f"{v.oracle}: {v.detail} [{v.where}] case: {dumps(repr(case), 600)}" for v in session.new_violations(outcome)]
