"""Issue 11's real-QEMU oracle: a few hundred hostile plans vmdev accepts, each started in a stopped
QEMU (TCG, -S, -nodefaults), and what QEMU really opened (block nodes' files and read-only flags,
memory backends' mem-path, the RNG's filename, vhost-user chardevs' sockets) equal to the plan.

Hypothesis draws the shapes (derandomized: the same shapes every run); two QEMUs run at a time.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from qemu_oracle_support import QEMU, Shape, Tried, shapes, summary, try_shape

SHAPES = int(os.environ.get("VMDEV_QEMU_ORACLE_SHAPES", "300"))


def drawn_shapes(count: int) -> list[Shape]:
    found: list[Shape] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(shape=shapes())
    def collect(shape: Shape) -> None:
        found.append(shape)

    collect()
    return found


@pytest.fixture(scope="module")
def tried() -> list[Tried]:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} is missing: apt-get install qemu-system-x86", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the QEMU oracle makes block nodes for its vhost-user store (mknod): run it as root",
                    pytrace=False)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [t for t in pool.map(try_shape, drawn_shapes(SHAPES)) if t is not None]


def test_qemu_opens_exactly_what_hostile_plans_say(tried: list[Tried]) -> None:
    counts = summary(tried)
    print("QEMU oracle:", counts)
    mismatches = [f"{t.shape}: {p}" for t in tried for p in t.problems]
    assert mismatches == [], "\n".join(mismatches[:30])
    assert [t.crash for t in tried if t.crash] == []
    assert counts["started in QEMU"] >= SHAPES // 2, counts
    assert counts["hostile names among them"] >= SHAPES // 3, counts
    assert counts["facts compared"] >= counts["started in QEMU"], counts


def test_what_vmdev_refuses_it_refuses_in_one_line(tried: list[Tried]) -> None:
    refusals = [t.refusal for t in tried if t.refusal]
    assert all(len(r.splitlines()) == 1 and r.isprintable() for r in refusals), [r for r in refusals if
                                                                                 not r.isprintable()][:5]
