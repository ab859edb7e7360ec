"""The example third-party plugin (examples/vendor-plugin) proven like the bundled ones: a real guest
sees the watchdog its plan adds, with the guest's i6300esb driver bound to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmdev_cli import oci_spec, plan, run_vmdev
from vmdev_rig import OPTIONAL_MODULES, Rig, RigSetupError, check_prerequisites

WATCHDOG = {"path": "/dev/watchdog", "type": "c", "major": 10, "minor": 130}
I6300ESB = (0x8086, 0x25AB)


@pytest.fixture(scope="module")
def generic_rig() -> Rig:
    """The cloud kernel has no watchdog drivers; Debian's generic kernel has i6300esb."""
    try:
        ready = Rig(kernel=check_prerequisites(flavour="generic"),
                    optional_modules=(*OPTIONAL_MODULES, "i6300esb"))
        ready.prepare()
        return ready
    except RigSetupError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


def test_vendor_plugin_is_listed_with_its_distribution() -> None:
    done = run_vmdev("plugins")
    assert done.returncode == 0, done.stderr
    assert "watchdog  (acme-vmdev-watchdog 0.1.0)" in done.stdout


def test_guest_binds_its_driver_to_the_planned_watchdog(generic_rig: Rig, tmp_path: Path) -> None:
    data = plan(oci_spec(WATCHDOG), tmp_path, "--memory", "256")
    (device,) = [d for d in data["devices"] if d["kind"] == "watchdog"]
    assert device["plugin"] == "watchdog"
    result = generic_rig.boot(data["qemu"]["argv"], timeout=120)
    functions = result.report.pci_by_id(*I6300ESB)
    # the kernel names the driver "i6300ESB timer"; report values have "_" for inner whitespace
    assert [f.driver for f in functions] == ["i6300ESB_timer"], result.serial_text[-3000:]
