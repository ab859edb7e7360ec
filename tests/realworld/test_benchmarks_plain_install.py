"""The benchmarks run from a plain install of vmdev and its plugins: no pytest (issue 13).

This environment installs every distribution, as a runtime's machine would, but it has pytest; each
benchmark is started in a child interpreter in which ``import pytest`` fails, and asked for its
``--help``, which runs every import at the top of the script (a test helper that imports pytest
there, as ``vmdev.testing`` does, broke ``bench_scale`` once without anyone seeing it: the figures
were taken in the development environment).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
#: runs a benchmark as ``python benchmarks/NAME.py --help`` does, with pytest unimportable
NO_PYTEST = (
    "import runpy, sys\n"
    "sys.modules['pytest'] = None  # import pytest raises ImportError\n"
    "script = sys.argv[1]\n"
    "sys.argv = [script, '--help']\n"
    "sys.path.insert(0, str(__import__('pathlib').Path(script).parent))\n"
    "runpy.run_path(script, run_name='__main__')\n"
)


def benchmark_scripts() -> list[Path]:
    return sorted(BENCHMARKS.glob("bench_*.py"))


def test_there_are_benchmarks_to_check() -> None:
    assert {p.name for p in benchmark_scripts()} >= {"bench_startup.py", "bench_resolve.py", "bench_scale.py",
                                                     "bench_manager.py", "bench_plan.py"}


@pytest.mark.parametrize("script", benchmark_scripts(), ids=lambda p: p.name)
def test_each_benchmark_starts_where_pytest_cannot_be_imported(script: Path) -> None:
    done = subprocess.run([sys.executable, "-c", NO_PYTEST, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--quick" in done.stdout, done.stdout
