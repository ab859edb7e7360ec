"""The example backend distribution (examples/backend-plugin, acme-vmdev-stratovirt) through the
installed ``vmdev`` command, as a user sees it: listed, planned for, selected by Kata's file, and
gone when its plugin is disabled.

No guest is booted: StratoVirt is not packaged for Debian 12 and its source build needs crates.io,
which this workplace cannot reach. The example's own tests check its command lines against
StratoVirt's documented syntax.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vmdev_cli import oci_spec, plan, run_vmdev

NULL = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}


def test_vmdev_backends_lists_stratovirt_with_its_plugin_and_distribution() -> None:
    done = run_vmdev("backends", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["stratovirt"]["plugin"] == "stratovirt"
    assert rows["stratovirt"]["distribution"] == "acme-vmdev-stratovirt"
    assert rows["stratovirt"]["kata_sections"] == ["stratovirt"]
    assert {"qemu", "cloud-hypervisor", "firecracker"} <= set(rows)


def test_a_plan_for_stratovirt_is_its_command_line(tmp_path: Path) -> None:
    data = plan(oci_spec(NULL), tmp_path, "--hypervisor", "stratovirt", "--memory", "512")
    assert data["hypervisor"] == "stratovirt" and "qemu" not in data
    rng: dict[str, Any] = next(d for d in data["devices"] if d["kind"] == "rng")
    assert (rng["plugin"], rng["driver"]) == ("rng", "virtio-rng-pci")
    assert data["stratovirt"] == {
        "argv": ["-machine", "q35", "-m", "512M", "-object", "rng-random,id=rng0,filename=/dev/urandom",
                 "-device", "virtio-rng-pci,id=virtio-rng0,rng=rng0,bus=pcie.0,addr=0x1"],
        "hotplug": [],
        "unplug": [],
    }


def test_kata_configuration_stratovirt_selects_the_backend(tmp_path: Path) -> None:
    config = tmp_path / "configuration-stratovirt.toml"
    config.write_text('[hypervisor.stratovirt]\nmachine_type = "microvm"\ndefault_memory = 256\n')
    data = plan(oci_spec(NULL), tmp_path, "--config", str(config))
    assert data["hypervisor"] == "stratovirt"
    assert "virtio-rng-device,id=virtio-rng0,rng=rng0" in data["stratovirt"]["argv"]


def test_disabling_its_plugin_makes_stratovirt_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(oci_spec(NULL)))
    done = run_vmdev("plan", "--hypervisor", "stratovirt", str(config), env={"VMDEV_DISABLE_PLUGINS": "stratovirt"})
    assert (done.returncode, done.stdout) == (1, "")
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vmdev: error: hypervisor: no installed backend is called 'stratovirt' (installed: ")
    assert "stratovirt" not in lines[0].split("(installed: ")[1] and "qemu" in lines[0]
