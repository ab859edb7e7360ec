"""The nested-VFIO L1 run as a pytest fixture body, shared by the VFIO, CDI and GPU e2e modules.

(vfio_support.py itself also runs inside the L1 guest, without pytest, so this lives apart.)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from vfio_support import L1Run
from vmdev_rig import RigSetupError, ensure_kernel
from vmdev_rig.initramfs import busybox_applets

INSTALL = "sudo scripts/install-test-deps"


def l1_or_fail(what: str, run: Callable[[], L1Run], *, kernels: Sequence[str] = ("generic",)) -> L1Run:
    """Check the prerequisites (a missing one fails with the command that fixes it), run the L1
    scenario, and fail with its serial and QEMU output when it did not complete."""
    problems = [f"{tool} is not on PATH" for tool in ("qemu-system-x86_64",) if shutil.which(tool) is None]
    try:
        busybox_applets()
        for flavour in kernels:
            ensure_kernel(None, flavour)
    except RigSetupError as exc:
        problems.append(str(exc))
    if problems:
        pytest.fail(f"the {what} test cannot run: {'; '.join(problems)}. Fix: {INSTALL}", pytrace=False)
    result = run()
    if not result.result or "error" in result.result:
        pytest.fail(f"the {what} L1 scenario did not complete (QEMU rc {result.rc}, {result.seconds:.0f} s): "
                    f"{result.result.get('error', 'no result')}\nserial:\n{result.serial[-3000:]}\n"
                    f"qemu:\n{result.stderr[-2000:]}", pytrace=False)
    print(f"{what} L1 run: {result.seconds:.1f} s, scenario {result.result['scenario_seconds']} s")
    return result


def planned(l1: L1Run, name: str) -> dict[str, Any]:
    """The plan L1's vmdev made for ``name`` (it must have succeeded)."""
    run = l1.result["plans"][name]
    assert run["rc"] == 0, run["stderr"]
    plan_data: dict[str, Any] = run["plan"]
    return plan_data
