"""The fuzz suite's fixtures and hypothesis profiles.

``VMDEV_FUZZ_PROFILE`` picks the profile: ``ci`` (the default: derandomized, so a run is
reproducible and the bounded CI run is the same every time; no example database) or ``dev``
(random, with hypothesis' database in ``.hypothesis``). ``VMDEV_FUZZ_EXAMPLES`` sets the examples
per surface property (default 250 in ``ci``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

from vmdev_fuzz.runner import Session

EXAMPLES = int(os.environ.get("VMDEV_FUZZ_EXAMPLES", "250"))
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]

settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=EXAMPLES,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=EXAMPLES, suppress_health_check=_QUIET,
                          print_blob=True)
settings.load_profile(os.environ.get("VMDEV_FUZZ_PROFILE", "ci"))


@pytest.fixture(scope="session")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One fuzzing session for the whole run (plugins loaded once, clean keys shared)."""
    return Session(work=tmp_path_factory.mktemp("fuzz"), timeout=float(os.environ.get("VMDEV_FUZZ_TIMEOUT", "5")))
