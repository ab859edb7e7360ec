"""The VFIO surface reaches the VFIO plugin's group builds, and its ``class/vfio/<g>`` entries hold
what a host can hold.

Since 4427938 the plugin passes ``/dev/vfio/<g>`` only for the numbers ``class/vfio/<g>/dev`` holds;
a fuzz host without that entry is refused before the group's functions are judged, and the surface
property stays green having lost the code it was written for. These tests fail when that happens
again: the surface's own cases must build a group of PCI functions, one of an mdev and one of an AP
matrix device, and each malformed ``dev`` file (a FIFO among them) must be refused, in one line,
without a hang.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, settings
from vmdev_fuzz import hosts as h
from vmdev_fuzz import strategies
from vmdev_fuzz.cases import PlanCase
from vmdev_fuzz.runner import Session
from vmdev_fuzz.surfaces import build_case, plan_case

from vmdev_vfio.host import VFIODeviceType

GROUP, MAJOR, MINOR = 2, 246, 2
#: a draw of the surface's cases: found well within this many (one in ten builds an mdev group)
SEARCH = settings(max_examples=400, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))


def group_types(session: Session, case: PlanCase) -> set[VFIODeviceType]:
    """The function types of the VFIO *group* devices ``case`` plans (empty when refused)."""
    root = Path(tempfile.mkdtemp(prefix="case-", dir=session.work))
    try:
        real, host = build_case(case, root)
        try:
            _, result, _ = plan_case(real, host, root, session)
        except Exception:  # noqa: BLE001 - a refusal builds nothing
            return set()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {VFIODeviceType(f["type"]) for d in result.devices if d.kind == "vfio"
            and d.to_json().get("backend") == "group" for f in d.to_json()["functions"]}


def holds(case: PlanCase, kind: VFIODeviceType) -> bool:
    """Whether ``case``'s host has a group entry of ``kind`` (cheap: no plan)."""
    if kind is VFIODeviceType.NORMAL:
        return bool(case.host.pci)
    wanted = "mdev" if kind is VFIODeviceType.MEDIATED else "ap"
    return any(entry.kind == wanted for entry in case.host.group_entries)


@pytest.mark.parametrize("kind", [VFIODeviceType.NORMAL, VFIODeviceType.MEDIATED, VFIODeviceType.AP])
def test_the_vfio_surface_builds_groups_of_every_kind(session: Session, kind: VFIODeviceType) -> None:
    case = find(strategies.vfio_case(), lambda c: holds(c, kind) and kind in group_types(session, c),
                settings=SEARCH)
    assert case.host.vfio_groups


def pci_group_case(*vfio_groups: h.VfioGroupSpec) -> PlanCase:
    """``/dev/vfio/2`` (246:2) of one function bound to vfio-pci, with ``vfio_groups`` as its
    ``class/vfio`` entries."""
    node = h.DevEntry(kind="char", major=MAJOR, minor=MINOR, devname=f"vfio/{GROUP}", node=f"vfio/{GROUP}",
                      node_kind=h.NODE_CHAR)
    host = h.HostSpec(devices=(node,), pci=(h.PciSpec("0000:01:00.0", group=GROUP),), vfio_groups=vfio_groups)
    request = {"path": f"/dev/vfio/{GROUP}", "type": "c", "major": MAJOR, "minor": MINOR}
    return PlanCase(hypervisor="qemu", machine="q35", options={"cold_plug_vfio": "root-port", "pcie_root_port": 2},
                    host=host, document=strategies.oci([request]))


def test_a_group_whose_class_vfio_holds_its_numbers_is_passed(session: Session) -> None:
    case = pci_group_case(h.VfioGroupSpec(GROUP, MAJOR, MINOR))
    assert group_types(session, case) == {VFIODeviceType.NORMAL}
    assert session.run("vfio", case).violations == []


def dev_file(dev: h.FileSpec) -> h.VfioGroupSpec:
    return h.VfioGroupSpec(GROUP, MAJOR, MINOR, dev)


#: ``class/vfio/2`` entries that are not the request's, and what the refusal says of each
WRONG_ENTRIES = [
    *((dev_file(h.FileSpec.text(t)), "not MAJOR:MINOR") for t in ("x\n", "246:\n", "", f"{MAJOR}:{10**11}\n",
                                                                 "9" * 5000)),
    (dev_file(h.FileSpec(h.FIFO)), "is not a regular file"),
    (dev_file(h.FileSpec(h.DIRECTORY)), "is not a regular file"),
    (dev_file(h.FileSpec(h.SYMLINK_LOOP)), "Too many levels of symbolic links"),
    (dev_file(h.FileSpec(h.HUGE)), "holds more than"),
    (dev_file(h.FileSpec(h.DANGLING)), "is missing"),
    (dev_file(h.FileSpec(h.MISSING)), "is missing"),
    (h.VfioGroupSpec(GROUP, MAJOR, MINOR + 1), "not the requested c 246:2"),
    (h.VfioGroupSpec(GROUP, 250, MINOR), "not the requested c 246:2"),
]


@pytest.mark.parametrize(("entry", "said"), WRONG_ENTRIES, ids=lambda v: repr(v)[:60])
def test_a_group_whose_class_vfio_is_wrong_or_malformed_is_refused_in_one_line(
    session: Session, entry: h.VfioGroupSpec, said: str
) -> None:
    outcome = session.run("vfio", pci_group_case(entry))
    assert (outcome.status, outcome.violations) == ("refused", [])
    assert f"class/vfio/{GROUP}/dev" in outcome.summary
    assert said in outcome.summary


def test_a_group_without_class_vfio_is_refused(session: Session) -> None:
    outcome = session.run("vfio", pci_group_case())
    assert (outcome.status, outcome.violations) == ("refused", [])
    assert "is not a VFIO group this host exposes" in outcome.summary
