"""The QEMU backend's Kata keys on a real QEMU: the plan's argv builds a machine under TCG (``-S``,
never run), and QMP shows what the keys asked for.

A plan with every key set (Kata's memory layout, a file-backed shared and preallocated guest RAM,
the vIOMMU, two of Kata's bridges, a dedicated and two independent iothreads) carries a small
test family's devices that use the target's services the way real families do: a SCSI controller
on its own iothread in a slot of Kata's first bridge, and a DIMM that needs a memory slot. QEMU
must accept the command line, and ``query-iothreads``, ``qom-list``/``qom-get`` and ``query-pci``
must show the iothreads, the memory backend wired as the machine's RAM and the bridges where Kata
puts them (under ``-S`` no firmware has numbered the buses, so what sits behind a bridge is read
from QOM: a PCI device's ``addr`` is its devfn, slot times 8).

Huge pages: this host has no hugetlbfs at ``/dev/hugepages`` (and QEMU, given a path that does not
exist, would create a plain file there), so the huge-page plan's object is checked as written and
then started with its ``mem-path`` pointed at a temporary directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from vmdev import hookimpl
from vmdev.backends.qemu import QemuTarget
from vmdev.models import Device, DeviceInfo
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.qemu import MemoryNeeds, QemuAttach, opts
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget
from vmdev_rig import QMPCommandError, Rig

MEMORY_MIB = 256
DIMM_MIB = 128


@attrs.frozen
class E2eDevice:
    kind: ClassVar[str] = "qemu-backend-e2e"
    id: str


class E2eFamily:
    """``/dev/e2e-scsi``: a SCSI controller on a bridge slot with a dedicated iothread;
    ``/dev/e2e-dimm``: a DIMM that needs one memory slot and its size of maxmem."""

    @hookimpl
    def build_device(self, info: DeviceInfo) -> Device | None:
        name = info.container_path.removeprefix("/dev/e2e-")
        return E2eDevice(id=name) if name in ("scsi", "dimm") else None

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget, hotplug: bool) -> Any:
        if not (isinstance(device, E2eDevice) and isinstance(target, QemuTarget)):
            return None
        if device.id == "scsi":
            bus, (slot,) = target.topology.bridge_slots("scsi0")
            props = {"id": "scsi0", "iothread": target.iothread("scsi0"), **target.virtio_options(), "bus": bus,
                     "addr": slot}
            return QemuAttach(args=["-device", opts(target.virtio_driver("virtio-scsi"), props)])
        memory = ["-object", opts("memory-backend-ram", {"id": "dimm-mem", "size": f"{DIMM_MIB}M"}),
                  "-device", opts("pc-dimm", {"id": "dimm0", "memdev": "dimm-mem"})]
        return QemuAttach(args=memory, memory=MemoryNeeds(slots=1, maxmem_extra_mib=DIMM_MIB))


def planned(options: Mapping[str, Any], *devices: str) -> Plan:
    """A plan with the core and the test family only, for these Kata keys."""
    pm = PluginManager(LoadPolicy(only=()), plugins=[("qemu-backend-e2e", E2eFamily())]).load()
    spec = parse_spec({"linux": {"devices": [
        {"path": f"/dev/e2e-{d}", "type": "c", "major": 500, "minor": i} for i, d in enumerate(devices)]}})
    return plan(spec, SandboxSettings(memory_mib=MEMORY_MIB, options=options), plugins=pm)


def qmp(argv: Sequence[str], *commands: tuple[str, Mapping[str, object] | None]) -> list[Any]:
    """Build the machine (-S, TCG, -nodefaults as Kata) and run QMP commands on it."""
    return Rig().qmp_oneshot(list(commands), argv=list(argv))


@pytest.fixture
def mem_file(tmp_path: Path) -> Path:
    return tmp_path / "guest-ram"


def every_key(mem_file: Path, **changes: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "memory_slots": 4, "default_maxmemory": 1024, "memory_offset": 64,
        "enable_hugepages": False, "file_mem_backend": str(mem_file), "enable_mem_prealloc": True,
        "enable_iommu": True, "enable_iommu_platform": True, "default_bridges": 2, "firmware": "",
        "enable_iothreads": True, "indep_iothreads": 2, "confidential_guest": False,
    }
    return {**keys, **changes}


def test_a_plan_with_every_key_set_builds_and_qmp_shows_what_it_asked_for(mem_file: Path) -> None:
    result = planned(every_key(mem_file), "scsi", "dimm")
    argv = list(result.qemu.argv)
    assert argv[:4] == ["-machine", "q35,kernel_irqchip=split,memory-backend=vmdev-ram",
                        "-m", f"{MEMORY_MIB}M,slots=4,maxmem={1024 + 64 + 1024}M"]
    thread = next(a for a in argv if a.startswith("iothread,id=iothread-")).removeprefix("iothread,id=")
    threads, objects, ram_path, share, prealloc, machine_ram, link, memory, pci, scsi_bus, scsi_addr = qmp(
        argv,
        ("query-iothreads", None),
        ("qom-list", {"path": "/objects"}),
        ("qom-get", {"path": "/objects/vmdev-ram", "property": "mem-path"}),
        ("qom-get", {"path": "/objects/vmdev-ram", "property": "share"}),
        ("qom-get", {"path": "/objects/vmdev-ram", "property": "prealloc"}),
        ("qom-get", {"path": "/machine", "property": "memory-backend"}),
        ("qom-get", {"path": "/machine/peripheral/scsi0/virtio-backend", "property": "iothread"}),
        ("query-memory-size-summary", None),
        ("query-pci", None),
        ("qom-get", {"path": "/machine/peripheral/scsi0", "property": "parent_bus"}),
        ("qom-get", {"path": "/machine/peripheral/scsi0", "property": "addr"}),
    )
    assert sorted(t["id"] for t in threads) == sorted([thread, "indep_iothread_0", "indep_iothread_1"])
    assert {"vmdev-ram", thread, "indep_iothread_0", "indep_iothread_1"} <= {o["name"] for o in objects}
    assert (ram_path, share, prealloc) == (str(mem_file), True, True)
    assert mem_file.stat().st_size == MEMORY_MIB << 20
    assert machine_ram == "/objects/vmdev-ram"
    assert link == f"/objects/{thread}"
    assert memory == {"base-memory": MEMORY_MIB << 20, "plugged-memory": DIMM_MIB << 20}
    root = {d["qdev_id"]: d for d in pci[0]["devices"]}
    assert (root["pci-bridge-0"]["slot"], root["pci-bridge-1"]["slot"]) == (2, 3)
    window = root["pci-bridge-0"]["pci_bridge"]["bus"]
    assert (window["io_range"]["limit"] + 1, window["memory_range"]["limit"] + 1) == (4 << 10, 1 << 20)
    assert (scsi_bus, scsi_addr // 8) == ("/machine/peripheral/pci-bridge-0/pci-bridge-0", 1)


def test_the_viommu_is_the_machines_intel_iommu(mem_file: Path) -> None:
    argv = list(planned(every_key(mem_file)).qemu.argv)
    (anon,) = qmp(argv, ("qom-list", {"path": "/machine/peripheral-anon"}))
    assert {"name": "device[0]", "type": "child<intel-iommu>"} in anon


def test_with_a_firmware_katas_bridges_nest_behind_root_ports_and_take_the_device(mem_file: Path) -> None:
    argv = list(planned(every_key(mem_file, firmware="/usr/share/OVMF/OVMF_CODE.fd"), "scsi").qemu.argv)
    assert "pcie-pci-bridge,bus=rp-pci-bridge-0,id=pci-bridge-0" in argv
    pci, bridge_bus, bridge_addr, scsi_bus, scsi_addr = qmp(
        argv,
        ("query-pci", None),
        ("qom-get", {"path": "/machine/peripheral/pci-bridge-0", "property": "parent_bus"}),
        ("qom-get", {"path": "/machine/peripheral/pci-bridge-0", "property": "addr"}),
        ("qom-get", {"path": "/machine/peripheral/scsi0", "property": "parent_bus"}),
        ("qom-get", {"path": "/machine/peripheral/scsi0", "property": "addr"}),
    )
    root = {d["qdev_id"]: d for d in pci[0]["devices"]}
    assert (root["rp-pci-bridge-0"]["slot"], root["rp-pci-bridge-1"]["slot"]) == (2, 3)
    assert (bridge_bus, bridge_addr) == ("/machine/peripheral/rp-pci-bridge-0/rp-pci-bridge-0", 0)
    assert (scsi_bus, scsi_addr // 8) == ("/machine/peripheral/pci-bridge-0/pci-bridge-0", 1)


def test_a_confidential_guest_builds_without_memory_hot_plug(mem_file: Path) -> None:
    result = planned(every_key(mem_file, confidential_guest=True, enable_iommu=False), "scsi")
    argv = list(result.qemu.argv)
    assert argv[:4] == ["-machine", "q35,kernel_irqchip=split,memory-backend=vmdev-ram", "-m", f"{MEMORY_MIB}M"]
    with pytest.raises(QMPCommandError, match="no slots where allocated"):
        qmp(argv, ("object-add", {"qom-type": "memory-backend-ram", "id": "more", "size": DIMM_MIB << 20}),
            ("device_add", {"driver": "pc-dimm", "id": "more-dimm", "memdev": "more"}))


def test_huge_pages_back_the_guest_ram_with_katas_object(tmp_path: Path, mem_file: Path) -> None:
    argv = list(planned(every_key(mem_file, enable_hugepages=True)).qemu.argv)
    written = f"memory-backend-file,id=vmdev-ram,size={MEMORY_MIB}M,mem-path=/dev/hugepages,share=on,prealloc=on"
    assert argv[argv.index("-object") + 1] == written
    moved = [a.replace("mem-path=/dev/hugepages", f"mem-path={tmp_path}") for a in argv]
    (path,) = qmp(moved, ("qom-get", {"path": "/objects/vmdev-ram", "property": "mem-path"}))
    assert path == str(tmp_path)
