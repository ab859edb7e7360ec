"""vmdev-cdi in real guests: devices named only by CDI reach the guest.

A loop device that only a CDI spec names becomes a disk the guest reads (by serial, size and
marker; CDI's ``permissions: r`` makes it read-only, through the cgroup rule Kata reads), and a
VFIO group that only a CDI annotation names is cold-plugged into the nested-VFIO rig's L2 guest,
whose PCI tree puts it at the guest PCI path of the plan's guest-side CDI spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from block_support import MIB, block_devices, loop_device, plan
from cdi_support import (
    CDI_NAME,
    EDU_BDF,
    EDU_IDS,
    PLAN_CONFIGS,
    annotated_config,
    disk_spec,
    pci_paths,
    run_l1,
    write_spec,
)
from l1_support import l1_or_fail, planned
from vfio_support import L1Run
from vmdev_rig import GuestReport, Rig
from vmdev_rig.images import MakeDisk

MEMORY = ("--memory", "256")


def assert_disk(report: GuestReport, device: dict[str, Any], *, size: int, marker: str, ro: bool) -> None:
    seen = report.block_by_serial(device["id"])
    assert (seen.size_bytes, seen.marker, seen.ro) == (size, marker, ro), seen


# --- block ---------------------------------------------------------------------------------------
def test_a_loop_device_named_only_by_a_cdi_annotation_is_a_disk_in_the_guest(
    rig: Rig, make_disk: MakeDisk, tmp_path: Path
) -> None:
    backing = make_disk("cdi.img", 20, "QHCDIDSK")
    with loop_device(backing) as node:
        specs = tmp_path / "cdi"
        write_spec(specs, "storage.json", disk_spec("storage.example/disk", "scratch", "/dev/xvdc", node))
        config = annotated_config(tmp_path, {"cdi.k8s.io/storage": "storage.example/disk=scratch"})
        result = plan(config, "--cdi-spec-dir", str(specs), "--block-driver", "virtio-blk", *MEMORY)
        (disk,) = block_devices(result).values()
        assert (disk["container_path"], disk["host_path"]) == ("/dev/xvdc", node)
        section = result["cdi"]
        assert section["injected"][0]["planned"] == [disk["id"]]
        assert section["oci_spec"]["process"]["env"] == ["PATH=/bin", "STORAGE_VENDOR=example"]
        assert "annotations" in section["oci_spec"] and section["oci_spec"]["annotations"] == {}
        boot = rig.boot(result["qemu"]["argv"])

    assert boot.rc == 0
    assert_disk(boot.report, disk, size=20 * MIB, marker="QHCDIDSK", ro=False)


def test_cdi_read_only_permissions_reach_the_guest_and_cdi_device_is_cri_s_field(
    rig: Rig, make_disk: MakeDisk, tmp_path: Path
) -> None:
    backing = make_disk("cdi-ro.img", 12, "QHCDIRO")
    with loop_device(backing) as node:
        specs = tmp_path / "cdi"
        write_spec(specs, "storage.json", disk_spec("storage.example/disk", "ro", "/dev/xvdd", node, permissions="r"))
        config = annotated_config(tmp_path, {})
        result = plan(config, "--cdi-spec-dir", str(specs), "--cdi-device", "storage.example/disk=ro",
                      "--block-driver", "virtio-blk", *MEMORY)
        (disk,) = block_devices(result).values()
        assert disk["read_only"] is True
        boot = rig.boot(result["qemu"]["argv"])

    assert_disk(boot.report, disk, size=12 * MIB, marker="QHCDIRO", ro=True)


# --- VFIO: the nested rig ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def l1(tmp_path_factory: pytest.TempPathFactory) -> L1Run:
    """The L1 run of the CDI scenario, once for this module."""
    return l1_or_fail("CDI nested-VFIO", lambda: run_l1(tmp_path_factory.mktemp("cdi-l1")),
                      kernels=("generic",))


@pytest.mark.parametrize("name", list(PLAN_CONFIGS))
def test_a_vfio_group_named_only_by_a_cdi_annotation_is_passed_through(l1: L1Run, name: str) -> None:
    group = l1.result["edu"]["iommu_group"]
    assert l1.result["edu"]["driver"] == "vfio-pci"
    data = planned(l1, name)
    (device,) = [d for d in data["devices"] if d["kind"] == "vfio"]
    assert (device["container_path"], device["host_path"], device["iommu_group"]) == (
        f"/dev/vfio/{group}", f"/dev/vfio/{group}", group)  # resolved from the real node's major:minor
    assert [f["bdf"] for f in device["functions"]] == [EDU_BDF]
    assert data["cdi"]["devices"] == [CDI_NAME]
    assert data["cdi"]["oci_spec"]["process"]["env"] == ["PATH=/bin", "EDU_VISIBLE=all"]
    session = l1.result["l2"][name]
    assert session["rc"] == 0 and session["firmware_done"], session["stderr"]
    (place,) = device["placement"]
    assert place["bus"] == {"root-port": "rp0", "bridge-port": "bp0"}[name]
    scanned = {line.split("id=")[1] for line in session["log"].splitlines() if line.startswith("PCI: init bdf=")}
    assert f"{EDU_IDS[0][2:]}:{EDU_IDS[1][2:]}" in scanned  # the L2 firmware found the real function


@pytest.mark.parametrize("name", list(PLAN_CONFIGS))
def test_the_guest_cdi_spec_names_it_by_the_pci_path_the_guest_sees(l1: L1Run, name: str) -> None:
    group = l1.result["edu"]["iommu_group"]
    data = planned(l1, name)
    (device,) = [d for d in data["devices"] if d["kind"] == "vfio"]
    seen = pci_paths(l1.result["l2"][name]["query_pci"])[device["placement"][0]["id"]]
    assert seen == {"root-port": "01/00", "bridge-port": "01/01"}[name]
    guest = data["cdi"]["guest"]
    assert guest["pci_paths"] == {f"/dev/vfio/{group}": [seen]}
    assert guest["annotations"] == {f"cdi.k8s.io/vfio{group}": "vmdev.io/vfio=0"}
    assert data["cdi"]["oci_spec"]["annotations"] == guest["annotations"]  # the host's cdi.k8s.io/edu is gone
    (spec,) = guest["specs"]
    assert spec["path"] == "/var/run/cdi/vmdev.io-vfio.json"
    (entry,) = spec["spec"]["devices"]
    assert entry["name"] == "0"
    assert entry["annotations"] == {"vmdev.io/pci-path": seen, "vmdev.io/host-bdf": EDU_BDF,
                                    "vmdev.io/host-path": f"/dev/vfio/{group}"}
    assert f"VMDEV_VFIO{group}_PCI_PATH={seen}" in entry["containerEdits"]["env"]


def test_the_guest_spec_resolves_the_guest_annotation_as_the_agent_would(l1: L1Run, tmp_path: Path) -> None:
    from vmdev_cdi import Registry, parse_annotations

    data = planned(l1, "root-port")
    guest = data["cdi"]["guest"]
    (spec,) = guest["specs"]
    (tmp_path / Path(spec["path"]).name).write_text(json.dumps(spec["spec"]))
    oci: dict[str, Any] = json.loads(json.dumps(data["cdi"]["oci_spec"]))
    _, names = parse_annotations(oci["annotations"])
    Registry([str(tmp_path)]).inject_devices(oci, names)
    assert any(e.endswith("_PCI_PATH=01/00") for e in oci["process"]["env"])
