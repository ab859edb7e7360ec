"""vmdev-rng proven in real guests: cold-plugged and hot-plugged virtio-rng is the guest's hwrng."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vmdev_cli import oci_spec, plan, run_vmdev
from vmdev_rig import Rig

NULL = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}


def rng_of(data: dict[str, Any]) -> dict[str, Any]:
    (rng,) = [d for d in data["devices"] if d["kind"] == "rng"]
    return rng


def test_plugins_lists_vmdev_rng() -> None:
    done = run_vmdev("plugins", "--json")
    assert done.returncode == 0, done.stderr
    assert "vmdev-rng" in {row["distribution"] for row in json.loads(done.stdout)}


def test_cold_plugged_rng_is_the_guests_hwrng(rig: Rig, tmp_path: Path) -> None:
    data = plan(oci_spec(NULL), tmp_path, "--memory", "256")
    assert rng_of(data)["hotplug"] is False
    result = rig.boot(data["qemu"]["argv"])
    assert result.report.rng is not None
    assert result.report.rng.current.startswith("virtio_rng"), result.serial_text[-2000:]
    assert any(
        p.vendor == 0x1AF4 and p.device in (0x1005, 0x1044) and p.driver == "virtio-pci"
        for p in result.report.pci
    )


def test_rng_on_microvm_uses_virtio_mmio(rig: Rig, tmp_path: Path) -> None:
    data = plan(oci_spec(), tmp_path, "--memory", "256", "--machine-type", "microvm")
    assert "virtio-rng-device,rng=rng0,id=virtio-rng0" in data["qemu"]["argv"]
    result = rig.boot(data["qemu"]["argv"])
    assert result.report.rng is not None and result.report.rng.current.startswith("virtio_rng")
    assert result.report.pci == []  # no PCI bus on microvm: the device came over virtio-mmio


def test_hot_plugged_rng_appears_and_unplugs(rig: Rig, tmp_path: Path) -> None:
    data = plan(oci_spec(NULL), tmp_path, "--memory", "256", "--hotplug")
    rng = rng_of(data)
    assert rng["hotplug"] is True
    assert not any("virtio-rng" in a for a in data["qemu"]["argv"])
    with rig.start(data["qemu"]["argv"], wait_seconds=120) as guest:
        before = guest.latest_report()
        assert before.rng is None or not before.rng.current.startswith("virtio_rng")
        guest.run(data["qemu"]["hotplug"])
        seen = guest.wait_report(
            lambda r: r.rng is not None and r.rng.current.startswith("virtio_rng"), 60
        )
        assert any(p.device == 0x1044 for p in seen.pci)  # modern virtio-rng behind the root port
        for command in data["qemu"]["unplug"]:
            guest.execute(command["execute"], command.get("arguments"))
            if command["execute"] == "device_del":
                guest.wait_event("DEVICE_DELETED", 60, match={"device": command["arguments"]["id"]})
        gone = guest.wait_report(
            lambda r: r.rng is None or not r.rng.current.startswith("virtio_rng"), 60
        )
        assert not any(p.device == 0x1044 for p in gone.pci)
        objects = {o["name"] for o in guest.execute("qom-list", {"path": "/objects"})}
        assert rng["id"] not in objects


def test_empty_plugin_selection_plans_generic_devices_only(tmp_path: Path) -> None:
    data = plan(oci_spec(NULL), tmp_path, env={"VMDEV_PLUGINS": ""})
    assert [d["kind"] for d in data["devices"]] == ["generic"]
    assert not any("rng" in a for a in data["qemu"]["argv"])


def test_unknown_entropy_source_is_one_line_naming_the_device(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(oci_spec(NULL)))
    done = run_vmdev("plan", "--entropy-source", "/dev/hwrng", str(config))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "vmdev: error: rng0: entropy_source: '/dev/hwrng' is not an allowed entropy source "
        "(valid_entropy_sources: '/dev/urandom', '/dev/random', '')"
    ]
