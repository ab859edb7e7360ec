"""Kata's [hypervisor.qemu] keys the QEMU backend owns, each checked on the argv a plan gets.

A small vendor family (``/dev/gadget-<name>``) asks the target for what real families ask: memory
slots, shared guest RAM, iothreads, bridge slots, the virtio options. Without any of these keys a
plan is what it was before (the golden corpus holds those); with them it is Kata's command line,
or says in its notes where it is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import pytest

from vmdev import hookimpl
from vmdev.backends.qemu import GuestNode, GuestNuma, QemuTarget
from vmdev.declared import Setting
from vmdev.errors import ConfigError, PluginError, UnsupportedError
from vmdev.models import Device, DeviceInfo
from vmdev.oci import parse_spec
from vmdev.pcie import Bar, BarKind, BarSpace
from vmdev.planner import Plan, plan
from vmdev.qemu import MemoryNeeds, QemuAttach, QmpCommand, opts, split_opts
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget
from vmdev.testing import FakeHost, PluginFactory

Render = Callable[[QemuTarget, str], QemuAttach]
KATA_BRIDGE = ("pci-bridge,bus=pcie.0,id=pci-bridge-0,chassis_nr=1,shpc=off,addr=2,io-reserve=4k,mem-reserve=1m,"
               "pref64-reserve=1m")
IOMMU_DEVICE = "intel-iommu,intremap=on,device-iotlb=on,caching-mode=on"


@attrs.frozen
class Gadget:
    kind: ClassVar[str] = "gadget"
    id: str


class Gadgets:
    """Builds /dev/gadget-<name>; renders it with the function given for <name>."""

    def __init__(self, renders: dict[str, Render]) -> None:
        self.renders = renders

    @hookimpl
    def build_device(self, info: DeviceInfo) -> Device | None:
        name = info.container_path.removeprefix("/dev/gadget-")
        return Gadget(id=f"gadget-{name}") if name in self.renders else None

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget, hotplug: bool) -> Any:
        if isinstance(device, Gadget) and isinstance(target, QemuTarget):
            return self.renders[device.id.removeprefix("gadget-")](target, device.id)
        return None


def slot_user(mib: int) -> Render:
    """A persistent-memory-like device: one memory slot and ``mib`` of maxmem."""
    return lambda target, name: QemuAttach(args=["-device", f"pmem-like,id={name}"],
                                           memory=MemoryNeeds(slots=1, maxmem_extra_mib=mib))


def ram_sharer(target: QemuTarget, name: str) -> QemuAttach:
    """A device whose backend process maps guest RAM."""
    return QemuAttach(args=["-device", f"sharer,id={name}"], memory=MemoryNeeds(shared=True))


def controller(target: QemuTarget, name: str) -> QemuAttach:
    """A controller shared by its disks, on its own iothread as Kata's SCSI controller."""
    props = {"id": "ctl0", "iothread": target.iothread("ctl0"), **target.virtio_options(), "devno": "fe.0.0001"}
    return QemuAttach(args=["-device", f"disk,id={name},bus=ctl0.0"],
                      shared_args={"ctl0": ("-device", opts("ctl-" + target.transport, props))})


def hot_disk(target: QemuTarget, name: str) -> QemuAttach:
    """A disk hot-plugged onto independent iothread 0, as Kata's virtio block disks."""
    add = {"driver": "disk", "id": name, "iothread": target.independent_iothread()}
    return QemuAttach(hotplug=[QmpCommand("device_add", add)], hotplugged=True)


def on_bridge(target: QemuTarget, name: str) -> QemuAttach:
    bus, (slot,) = target.topology.bridge_slots(name)
    return QemuAttach(args=["-device", opts("card", {"id": name, "bus": bus, "addr": slot})])


def on_root_port(target: QemuTarget, name: str) -> QemuAttach:
    return QemuAttach(args=["-device", opts("card", {"id": name, "bus": target.topology.root_port(name)})])


def irq_chip_on(target: QemuTarget, name: str) -> QemuAttach:
    return QemuAttach(machine={"kernel_irqchip": "on"})


def big_bar(size: int, *, hot: bool = False, numa_node: int = -1) -> Render:
    """A GPU-like device on a root port of its own with one 64-bit prefetchable BAR of ``size``."""
    def render(target: QemuTarget, name: str) -> QemuAttach:
        space = BarSpace(pref64=size, large=[Bar(function="0000:41:00.0", index=2, size=size, kind=BarKind.PREF,
                                                 is64=True)])
        bus = target.topology.root_port(name, bars=space, hotplug=hot, numa_node=numa_node)
        if hot:
            return QemuAttach(hotplug=[QmpCommand("device_add", {"driver": "gpu", "id": name, "bus": bus})],
                              hotplugged=True)
        return QemuAttach(args=["-device", opts("gpu", {"id": name, "bus": bus})])

    return render


GADGETS: dict[str, Render] = {
    "pmem": slot_user(600), "pmem2": slot_user(2000), "share": ram_sharer, "share2": ram_sharer,
    "ctl": controller, "ctl2": controller, "hot": hot_disk, "card": on_bridge, "port": on_root_port,
    "irq": irq_chip_on, "gpu": big_bar(256 << 30), "gpu1t": big_bar(1 << 40), "hotgpu": big_bar(256 << 30, hot=True),
    "gpu-node1": big_bar(32 << 30, numa_node=1), "gpu-node0": big_bar(32 << 30, numa_node=0),
    "gpu-node3": big_bar(32 << 30, numa_node=3), "gpu2p": big_bar(1 << 50), "big0": big_bar(32 << 40),
    "big1": big_bar(32 << 40), "leaf": lambda target, name: QemuAttach(
        args=["-device", opts("leaf-pci", {"id": name}), "-device", opts("isa-thing", {"id": name + "-isa"})]),
}


def gadgets(*names: str) -> Any:
    return parse_spec({"linux": {"devices": [
        {"path": f"/dev/gadget-{n}", "type": "c", "major": 500, "minor": i} for i, n in enumerate(names)]}})


@pytest.fixture
def run(fake_host: FakeHost, vmdev_plugins: PluginFactory) -> Callable[..., Plan]:
    def make(*names: str, machine: str = "q35", memory: int = 2048, **options: Any) -> Plan:
        pm = vmdev_plugins(extra=[("gadgets", Gadgets(GADGETS))])
        settings = SandboxSettings(machine_type=machine, memory_mib=memory, options=options)
        return plan(gadgets(*names), settings, host=fake_host.context(), plugins=pm)

    return make


def argv(result: Plan) -> list[str]:
    return list(result.qemu.argv)


def option(result: Plan, flag: str) -> list[str]:
    """Every value of ``flag`` (``-m``, ``-object``...) in the argv, in order."""
    args = argv(result)
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def notes(result: Plan) -> list[str]:
    return list(result.qemu.to_json().get("notes", []))


# --- memory_slots, default_maxmemory, memory_offset ----------------------------------------------
def test_without_the_memory_keys_the_m_option_holds_only_what_devices_need(run: Callable[..., Plan]) -> None:
    assert option(run(), "-m") == ["2048M"]
    assert option(run("pmem"), "-m") == ["2048M,slots=1,maxmem=2648M"]
    assert notes(run("pmem")) == [] and "notes" not in run().qemu.to_json()


def test_katas_layout_is_its_slots_and_maxmem_with_the_offset_and_its_image_room(run: Callable[..., Plan]) -> None:
    # Kata amd64: -m <mem>M,slots=<memory_slots>,maxmem=<default_maxmemory + memory_offset + 1024>M
    assert option(run(memory_slots=10, default_maxmemory=8192), "-m") == ["2048M,slots=10,maxmem=9216M"]
    result = run(memory_slots=4, default_maxmemory=8192, memory_offset=512)
    assert option(result, "-m") == ["2048M,slots=4,maxmem=9728M"]
    assert notes(result) == []


def test_zero_memory_slots_are_katas_ten_and_either_key_alone_gives_katas_layout(run: Callable[..., Plan]) -> None:
    assert option(run(memory_slots=0, default_maxmemory=4096), "-m") == ["2048M,slots=10,maxmem=5120M"]
    assert option(run(default_maxmemory=4096), "-m") == ["2048M,slots=10,maxmem=5120M"]
    assert option(run(memory_slots=3), "-m")[0].startswith("2048M,slots=3,maxmem=")


def test_default_maxmemory_zero_counts_default_memory_as_the_hosts_and_says_so(run: Callable[..., Plan]) -> None:
    # every Kata configuration ships memory_slots = 10 and default_maxmemory = 0
    result = run(memory_slots=10, default_maxmemory=0)
    assert option(result, "-m") == ["2048M,slots=10,maxmem=3072M"]
    assert len(notes(result)) == 1
    assert notes(result)[0].startswith("default_maxmemory = 0: Kata lets the guest grow to all of the host's memory")


def test_devices_needing_more_than_katas_layout_get_what_they_need(run: Callable[..., Plan]) -> None:
    assert option(run("pmem", memory_slots=1, default_maxmemory=2048), "-m") == ["2048M,slots=1,maxmem=3072M"]
    result = run("pmem", "pmem2", memory_slots=1, default_maxmemory=2048)
    assert option(result, "-m") == ["2048M,slots=2,maxmem=4648M"]  # 2 slots; 2048 + 600 + 2000


def test_s390x_has_no_image_room_and_no_slots_when_nothing_can_be_plugged(run: Callable[..., Plan]) -> None:
    ccw = "s390-ccw-virtio"
    assert option(run(machine=ccw, default_maxmemory=4096), "-m") == ["2048M,slots=10,maxmem=4096M"]
    result = run(machine=ccw, memory_slots=10, default_maxmemory=0)
    assert option(result, "-m") == ["2048M,maxmem=2048M"]  # Kata's s390x form without hot plug
    assert any(n.startswith("memory_slots: none") for n in notes(result))


def test_pseries_rounds_the_hosts_memory_down_to_256_mib(run: Callable[..., Plan]) -> None:
    assert option(run(machine="pseries", default_maxmemory=4000), "-m") == ["2048M,slots=10,maxmem=4864M"]


def test_a_maxmem_below_default_memory_is_refused(run: Callable[..., Plan]) -> None:
    with pytest.raises(ConfigError) as exc:
        run(memory=4096, default_maxmemory=1024)
    assert str(exc.value) == ("default_maxmemory: gives maxmem 2048 MiB (1024 + 1024 MiB), below default_memory "
                              "4096 MiB; QEMU refuses a maximum below the initial memory")


@pytest.mark.parametrize("key", ["default_maxmemory", "memory_offset"])
def test_maxmem_keys_stop_at_16_tib_as_default_memory_does(run: Callable[..., Plan], key: str) -> None:
    assert option(run(memory_slots=1, **{key: 16 * 1024 * 1024}), "-m")  # the largest still plans
    with pytest.raises(ConfigError) as exc:  # QEMU was given maxmem=18446744073709552639M
        run(memory_slots=1, **{key: 2**64})
    assert exc.value.field == key and "16777216" in str(exc.value)


# --- enable_hugepages, file_mem_backend, enable_mem_prealloc -------------------------------------
def test_huge_pages_back_guest_ram_with_a_file_on_hugetlbfs(run: Callable[..., Plan]) -> None:
    result = run(enable_hugepages=True)
    assert option(result, "-machine") == ["q35,memory-backend=vmdev-ram"]
    assert option(result, "-object") == ["memory-backend-file,id=vmdev-ram,size=2048M,mem-path=/dev/hugepages"]


def test_shared_ram_on_huge_pages_is_one_shared_preallocated_backend(run: Callable[..., Plan]) -> None:
    result = run("share", "share2", enable_hugepages=True)
    assert option(result, "-object") == [
        "memory-backend-file,id=vmdev-ram,size=2048M,mem-path=/dev/hugepages,share=on,prealloc=on"]


def test_a_file_memory_backend_is_shared_and_huge_pages_win_over_it(run: Callable[..., Plan]) -> None:
    result = run(file_mem_backend="/var/lib/vm-mem")
    assert option(result, "-object") == ["memory-backend-file,id=vmdev-ram,size=2048M,mem-path=/var/lib/vm-mem,share=on"]
    both = run(file_mem_backend="/var/lib/vm-mem", enable_hugepages=True)
    assert option(both, "-object") == [
        "memory-backend-file,id=vmdev-ram,size=2048M,mem-path=/dev/hugepages,share=on,prealloc=on"]
    with pytest.raises(ConfigError, match=r"^file_mem_backend: must be an absolute path"):
        run(file_mem_backend="vm-mem")


def test_shared_ram_alone_stays_one_memfd_and_prealloc_alone_preallocates_ram(run: Callable[..., Plan]) -> None:
    assert option(run("share", "share2"), "-object") == ["memory-backend-memfd,id=vmdev-ram,size=2048M,share=on"]
    result = run(enable_mem_prealloc=True)
    assert option(result, "-object") == ["memory-backend-ram,id=vmdev-ram,size=2048M,prealloc=on"]
    assert option(result, "-machine") == ["q35,memory-backend=vmdev-ram"]
    assert option(run("share", enable_mem_prealloc=True), "-object") == [
        "memory-backend-memfd,id=vmdev-ram,size=2048M,share=on,prealloc=on"]


# --- enable_iommu ----------------------------------------------------------------------------------
def test_a_viommu_is_intel_iommu_with_the_split_irq_chip_on_q35(run: Callable[..., Plan]) -> None:
    result = run("port", enable_iommu=True)
    assert option(result, "-machine") == ["q35,kernel_irqchip=split"]
    devices = option(result, "-device")
    assert devices[0] == IOMMU_DEVICE and devices[1].startswith("pcie-root-port,id=rp0")
    assert notes(result) == ["enable_iommu: the guest kernel needs intel_iommu=on iommu=pt on its command line "
                             "(Kata adds them; a plan has no kernel command line)"]


@pytest.mark.parametrize("machine", ["pc", "virt", "microvm", "s390-ccw-virtio"])
def test_a_viommu_on_another_machine_is_refused_in_katas_words(run: Callable[..., Plan], machine: str) -> None:
    with pytest.raises(ConfigError) as exc:
        run(machine=machine, enable_iommu=True)
    assert str(exc.value) == f"enable_iommu: Machine Type {machine} does not support vIOMMU (Kata's intel-iommu needs q35)"


def test_a_device_asking_for_another_irq_chip_conflicts_with_the_viommu(run: Callable[..., Plan]) -> None:
    with pytest.raises(UnsupportedError) as exc:
        run("irq", enable_iommu=True)
    assert str(exc.value) == ("enable_iommu: machine: needs -machine kernel_irqchip=split, but /dev/gadget-irq "
                              "needs kernel_irqchip=on")


# --- enable_iommu_platform -------------------------------------------------------------------------
def test_iommu_platform_is_offered_on_ccw_only_and_only_with_the_key(run: Callable[..., Plan]) -> None:
    assert option(run("ctl", machine="s390-ccw-virtio", enable_iommu_platform=True), "-device")[0] == (
        "ctl-ccw,id=ctl0,iommu_platform=on,devno=fe.0.0001")
    assert option(run("ctl", machine="s390-ccw-virtio"), "-device")[0] == "ctl-ccw,id=ctl0,devno=fe.0.0001"
    assert option(run("ctl", enable_iommu_platform=True), "-device")[0] == "ctl-pci,id=ctl0,devno=fe.0.0001"


# --- default_bridges, firmware ---------------------------------------------------------------------
def test_without_default_bridges_a_plan_has_no_bridge(run: Callable[..., Plan]) -> None:
    assert "pci-bridge" not in " ".join(argv(run("port")))


def test_katas_bridge_comes_first_then_the_viommu_and_the_iothreads(run: Callable[..., Plan]) -> None:
    result = run("ctl", "port", default_bridges=1, enable_iommu=True, enable_iothreads=True)
    thread = option(result, "-object")[0].removeprefix("iothread,id=")
    assert argv(result)[4:] == [
        "-device", KATA_BRIDGE,
        "-device", IOMMU_DEVICE,
        "-object", f"iothread,id={thread}",
        "-device", f"ctl-pci,id=ctl0,iothread={thread},devno=fe.0.0001",
        "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=2,slot=2",
        "-device", "disk,id=gadget-ctl,bus=ctl0.0",
        "-device", "card,id=gadget-port,bus=rp0",
    ]


def test_zero_bridges_mean_katas_one_and_more_than_five_are_capped_with_a_note(run: Callable[..., Plan]) -> None:
    assert option(run(default_bridges=0), "-device") == [KATA_BRIDGE]
    result = run(default_bridges=9)
    assert [split_opts(d)[2] for d in option(result, "-device")] == [f"id=pci-bridge-{i}" for i in range(5)]
    assert notes(result) == ["default_bridges = 9: Kata makes at most 5 bridges"]


def test_with_a_firmware_q35_bridges_are_nested_behind_root_ports(run: Callable[..., Plan]) -> None:
    result = run(default_bridges=1, firmware="/usr/share/ovmf/OVMF.fd")
    assert option(result, "-device") == [
        "pcie-root-port,id=rp-pci-bridge-0,bus=pcie.0,chassis=16,slot=0,addr=2,multifunction=off,bus-reserve=0x1,"
        "pref64-reserve=1m,mem-reserve=1m,io-reserve=4k",
        "pcie-pci-bridge,bus=rp-pci-bridge-0,id=pci-bridge-0",
    ]
    assert option(run(default_bridges=1, firmware="/fw.bin", machine="virt"), "-device")[0].startswith(
        "pci-bridge,bus=pcie.0,id=pci-bridge-0,")  # Kata nests on amd64 q35 only


def test_devices_asking_for_bridge_slots_get_katas_bridge_first(run: Callable[..., Plan]) -> None:
    assert option(run("card", default_bridges=2), "-device")[2] == "card,id=gadget-card,bus=pci-bridge-0,addr=1"
    assert option(run("card"), "-device")[0].startswith("pci-bridge,id=bp0,")  # vmdev's own without the key


@pytest.mark.parametrize(("machine", "why"), [
    ("pc", "only q35, virt and pseries get them"), ("microvm", "only q35, virt and pseries get them"),
    ("s390-ccw-virtio", "s390x's are bookkeeping only")])
def test_machines_kata_gives_no_bridges_get_none_with_a_note(run: Callable[..., Plan], machine: str, why: str) -> None:
    result = run(machine=machine, default_bridges=1)
    assert "bridge" not in " ".join(argv(result))
    assert notes(result) == [f"default_bridges: machine {machine} gets no bridges, as in Kata ({why})"]


# --- enable_iothreads, indep_iothreads -------------------------------------------------------------
def test_a_dedicated_iothread_is_written_once_for_all_who_share_it(run: Callable[..., Plan]) -> None:
    result = run("ctl", "ctl2", enable_iothreads=True)
    (thread,) = option(result, "-object")
    assert thread.startswith("iothread,id=iothread-") and len(thread) == len("iothread,id=iothread-") + 16
    assert option(result, "-device")[0] == f"ctl-pci,id=ctl0,iothread={thread.split('=')[1]},devno=fe.0.0001"
    assert option(run("ctl"), "-device")[0] == "ctl-pci,id=ctl0,devno=fe.0.0001"


def test_independent_iothreads_are_made_even_without_enable_iothreads(run: Callable[..., Plan]) -> None:
    result = run("hot", indep_iothreads=2)
    assert option(result, "-object") == ["iothread,id=indep_iothread_0", "iothread,id=indep_iothread_1"]
    assert result.qemu.hotplug[0].arguments["iothread"] is None  # Kata: both keys, or no iothread


def test_hot_disks_go_on_independent_iothread_zero_after_the_dedicated_ones(run: Callable[..., Plan]) -> None:
    result = run("ctl", "hot", enable_iothreads=True, indep_iothreads=1)
    assert [o.split(",id=")[1][:9] for o in option(result, "-object")] == ["iothread-", "indep_iot"]
    assert result.qemu.hotplug[0].arguments["iothread"] == "indep_iothread_0"


# --- confidential_guest ----------------------------------------------------------------------------
def test_a_confidential_guest_has_no_memory_hot_plug_and_the_split_irq_chip(run: Callable[..., Plan]) -> None:
    result = run(confidential_guest=True, memory_slots=10, default_maxmemory=0)
    assert option(result, "-m") == ["2048M"]
    assert option(result, "-machine") == ["q35,kernel_irqchip=split"]
    assert notes(result) == ["confidential_guest: Kata also starts QEMU with its memory-encryption object (sev-guest, "
                             "sev-snp-guest or tdx-guest; s390-pv-guest on s390x), -machine "
                             "confidential-guest-support naming it, and the guest firmware; this plan has none of "
                             "them"]
    ccw = run(confidential_guest=True, machine="s390-ccw-virtio")
    assert (option(ccw, "-m"), option(ccw, "-machine")) == (["2048M,maxmem=2048M"], ["s390-ccw-virtio"])


def test_a_confidential_guest_refuses_a_device_that_needs_a_memory_slot(run: Callable[..., Plan]) -> None:
    with pytest.raises(UnsupportedError) as exc:
        run("share", "pmem", confidential_guest=True)
    assert str(exc.value) == ("/dev/gadget-pmem: confidential_guest: needs a memory slot, and a confidential guest "
                              "has none (Kata gives it no memory hot plug)")


# --- the declarations ------------------------------------------------------------------------------
KEYS = {
    "memory_slots": "integer", "default_maxmemory": "integer", "memory_offset": "integer",
    "enable_hugepages": "boolean", "file_mem_backend": "string", "enable_mem_prealloc": "boolean",
    "enable_iommu": "boolean", "enable_iommu_platform": "boolean", "default_bridges": "integer",
    "firmware": "string", "enable_iothreads": "boolean", "indep_iothreads": "integer",
    "confidential_guest": "boolean",
}


def test_every_key_is_declared_by_the_qemu_backend_with_katas_name(vmdev_plugins: PluginFactory) -> None:
    declared = {d.setting.name: d for d in vmdev_plugins().declared_settings()}
    for key, kind in KEYS.items():
        assert (declared[key].plugin, declared[key].setting.type, declared[key].setting.kata_key) == (
            "vmdev.backend.qemu", kind, key)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("memory_slots", 256, "memory_slots: must be a number from 0 to 255, got 256"),
    ("default_maxmemory", -1, "default_maxmemory: must be a number from 0 to 16777216, got -1"),
    ("enable_hugepages", "yes", "enable_hugepages: must be true or false, got 'yes'"),
    ("default_bridges", 1.5, "default_bridges: must be an integer, got 1.5"),
    ("indep_iothreads", 5000, "indep_iothreads: must be a number from 0 to 1024, got 5000"),
    ("confidential_guest", 1, "confidential_guest: must be true or false, got 1"),
])
def test_a_wrong_value_is_one_line_naming_the_key(run: Callable[..., Plan], key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        run(**{key: value})
    assert str(exc.value) == message


class OldDeclarer:
    """A plugin that declared a key before the backend owned it."""

    def __init__(self, name: str, backends: tuple[str, ...] = ()) -> None:
        self.name, self.backends = name, backends

    @hookimpl
    def register_settings(self, register: Callable[[Setting], None]) -> None:
        register(Setting(name=self.name, type="boolean", default=False, description="older", backends=self.backends))


def test_a_backend_key_another_plugin_declares_too_is_refused_enable_iommu_included(
    vmdev_plugins: PluginFactory,
) -> None:
    # enable_iommu was tolerated while the passthrough family still declared it; it reads the
    # backend's key now, so the key is the backend's alone like every other
    declared = {d.setting.name: d.plugin for d in vmdev_plugins().declared_settings()}
    assert declared["enable_iommu"] == declared["memory_slots"] == "vmdev.backend.qemu"
    for key in ("enable_iommu", "confidential_guest"):
        with pytest.raises(PluginError, match=f"both declare the settings key '{key}'"):
            vmdev_plugins(extra=[("old", OldDeclarer(key))]).declared_settings()


def test_another_backends_key_of_the_same_name_leaves_the_qemu_key_alone(
    fake_host: FakeHost, vmdev_plugins: PluginFactory
) -> None:
    pm = vmdev_plugins(extra=[("libvirt-like", OldDeclarer("enable_hugepages", backends=("libvirt",)))])
    result = plan(gadgets(), SandboxSettings(options={"enable_hugepages": True}), host=fake_host.context(), plugins=pm)
    assert option(result, "-object") == ["memory-backend-file,id=vmdev-ram,size=2048M,mem-path=/dev/hugepages"]
    declared = [d for d in pm.declared_settings() if d.setting.name == "enable_hugepages"]
    assert sorted((d.plugin, d.setting.backends) for d in declared) == [
        ("libvirt-like", ("libvirt",)), ("vmdev.backend.qemu", ("qemu",))]


def test_a_kata_configurations_keys_give_katas_command_line(run: Callable[..., Plan]) -> None:
    # the values configuration-qemu.toml ships (Kata 4.1.0, amd64), with the iothreads on
    result = run("ctl", "hot", memory_slots=10, default_maxmemory=0, memory_offset=0, default_bridges=1,
                 firmware="", enable_iothreads=True, indep_iothreads=1, enable_hugepages=False, enable_iommu=False,
                 enable_iommu_platform=False, enable_mem_prealloc=False)
    args = argv(result)
    assert args[:6] == ["-machine", "q35", "-m", "2048M,slots=10,maxmem=3072M", "-device", KATA_BRIDGE]
    assert [a for a in args if a.startswith("iothread,")][1:] == ["iothread,id=indep_iothread_0"]


# --- large BARs: the 64-bit PCI window, the address width, OVMF's aperture ------------------------------
def test_a_cold_256_gib_bar_fits_qemus_default_40_bits_and_the_notes_say_why(run: Callable[..., Plan]) -> None:
    result = run("gpu", memory=8192)
    assert not any(a.startswith(("x86_64-cpu", "name=opt/ovmf")) for a in argv(result))
    (note,) = notes(result)
    assert note.startswith("64-bit PCI window (SeaBIOS): rp0 256 GiB, holds gadget-gpu (largest: BAR 2 of "
                           "0000:41:00.0 (256 GiB, 64-bit prefetchable)); packed they need 256 GiB, and 1 GiB is "
                           "kept for the other devices' 64-bit BARs; guest RAM and memory hot-plug end at 10 GiB")
    # 1 GiB is kept after the window for the other devices' small 64-bit BARs
    assert "the window spans 0x4000000000-0x8040000000, so the guest needs 40 physical address bits (QEMU's " \
           "default 40 reaches it" in note


def test_a_window_beyond_40_bits_sets_the_guests_address_width(run: Callable[..., Plan]) -> None:
    result = run("gpu1t")
    # the 1 TiB BAR at 1 TiB, and the other devices' BARs after it: 42 bits
    assert option(result, "-global") == ["x86_64-cpu.phys-bits=42"]
    assert "-global x86_64-cpu.phys-bits=42; with -cpu host, host-phys-bits=on, the host's CPU needs at least " \
           "42" in notes(result)[0]
    # memory hot-plug moves the window up: slots and maxmem count (1 GiB a slot, as QEMU reserves)
    assert option(run("gpu", memory_slots=10, default_maxmemory=1 << 20), "-global") == ["x86_64-cpu.phys-bits=41"]
    assert option(run("gpu"), "-global") == []


def test_with_uefi_ovmfs_aperture_is_sized_for_the_window(run: Callable[..., Plan]) -> None:
    result = run("gpu", "hotgpu", firmware="/usr/share/OVMF/OVMF_CODE.fd")
    assert option(result, "-fw_cfg") == [f"name=opt/ovmf/X-PciMmio64Mb,string={513 << 10}"]
    # hot: OVMF rounds the 256 GiB reservation to a power of two itself: no slack is reserved
    assert "pref64-reserve=274877906944" in " ".join(argv(result))
    assert option(result, "-global") == ["x86_64-cpu.phys-bits=41"]  # 513 GiB at 512 GiB: past 1 TiB
    assert "OVMF's aperture of 513 GiB is aligned to 512 GiB" in notes(result)[0]
    assert option(run("gpu", "hotgpu", "gpu1t", firmware="OVMF.fd"), "-global") == ["x86_64-cpu.phys-bits=42"]
    small = run("port", firmware="/usr/share/OVMF/OVMF_CODE.fd")
    assert option(small, "-fw_cfg") == [] and notes(small) == []


def test_a_window_no_firmware_can_address_is_refused_naming_the_bar(run: Callable[..., Plan]) -> None:
    # one 32 TiB BAR fits OVMF's 46 bits alone (at 32 TiB); a second window pushes the end to 96 TiB
    with pytest.raises(UnsupportedError) as exc:
        run("big0", "big1", firmware="OVMF.fd")
    assert (exc.value.device, exc.value.field) == ("gadget-big0", "bar")
    assert str(exc.value) == (
        "gadget-big0: bar: BAR 2 of 0000:41:00.0 (32 TiB, 64-bit prefetchable) does not fit: the 64-bit PCI window "
        "OVMF lays out ends at 128 TiB + 1 GiB, which needs 48 physical address bits, and OVMF and QEMU's x86 "
        "guests reach 46")
    with pytest.raises(UnsupportedError, match="cannot be mapped: aligned to its size above 4 GiB it needs 51"):
        run("gpu2p", firmware="OVMF.fd")  # a BAR too large alone is refused where it is placed


# --- guest NUMA -----------------------------------------------------------------------------------
def test_enable_numa_gives_katas_numa_nodes_and_puts_devices_behind_their_nodes_pxb(
        run: Callable[..., Plan]) -> None:
    result = run("gpu-node1", "port", "gpu-node0", enable_numa=True, numa_mapping=["0", "1"])
    args = argv(result)
    assert args[:12] == [
        "-machine", "q35", "-m", "2048M",
        "-object", "memory-backend-ram,id=numa-mem0,size=1024M,host-nodes=0,policy=bind",
        "-numa", "node,nodeid=0,memdev=numa-mem0",
        "-object", "memory-backend-ram,id=numa-mem1,size=1024M,host-nodes=1,policy=bind",
        "-numa", "node,nodeid=1,memdev=numa-mem1",
    ]
    devices = [split_opts(a) for a in option(result, "-device")]
    assert devices[:5] == [
        ["pxb-pcie", "id=pxb-numa1", "bus=pcie.0", "bus_nr=64", "numa_node=1"],
        ["pcie-root-port", "id=rp0", "bus=pxb-numa1", "chassis=1", "slot=1"],
        ["pcie-root-port", "id=rp1", "bus=pcie.0", "chassis=2", "slot=2"],
        ["pxb-pcie", "id=pxb-numa0", "bus=pcie.0", "bus_nr=32", "numa_node=0"],
        ["pcie-root-port", "id=rp2", "bus=pxb-numa0", "chassis=3", "slot=3"],
    ]
    assert "memory-backend" not in " ".join(option(result, "-machine"))  # the nodes hold guest RAM
    assert any(n.startswith("enable_numa: 2 guest NUMA nodes (numa_mapping: guest 0 = host 0, guest 1 = host 1), "
                            "2048 MiB split 1024/1024 MiB") for n in notes(result))
    devices_json = result.to_json()["devices"]
    assert devices_json[-1] == {"container_path": None, "host_path": "", "kind": "guest-numa",
                                "plugin": "vmdev.backend.qemu", "id": "guest-numa", "hotplug": False,
                                "nodes": [{"host_nodes": "0", "host_cpus": "", "distances": []},
                                          {"host_nodes": "1", "host_cpus": "", "distances": []}],
                                "source": "numa_mapping", "guest_nodes": ["0", "1"]}


def test_an_empty_numa_mapping_maps_the_hosts_nodes_one_to_one_with_their_distances(
        run: Callable[..., Plan], fake_host: FakeHost) -> None:
    fake_host.write("devices/system/node/online", "0-1\n")
    for node, cpus, row in ((0, "0-47", "10 21"), (1, "48-95", "21 10")):
        fake_host.write(f"devices/system/node/node{node}/cpulist", cpus + "\n")
        fake_host.write(f"devices/system/node/node{node}/distance", row + "\n")
    result = run("gpu-node1", enable_numa=True, enable_hugepages=True, memory=4095)
    assert option(result, "-object") == [
        "memory-backend-file,id=numa-mem0,size=2046M,mem-path=/dev/hugepages,host-nodes=0,policy=bind",
        "memory-backend-file,id=numa-mem1,size=2049M,mem-path=/dev/hugepages,host-nodes=1,policy=bind",
    ]
    assert option(result, "-numa")[2:] == ["dist,src=0,dst=1,val=21", "dist,src=1,dst=0,val=21"]
    (numa,) = [d.device for d in result.devices if isinstance(d.device, GuestNuma)]
    assert numa.nodes == (GuestNode(host_nodes="0", host_cpus="0-47", distances=(10, 21)),
                          GuestNode(host_nodes="1", host_cpus="48-95", distances=(21, 10)))


def test_a_host_without_numa_information_gives_the_guest_no_nodes(run: Callable[..., Plan]) -> None:
    result = run("gpu-node1", enable_numa=True)
    assert option(result, "-numa") == [] and "this host shows no NUMA nodes" in notes(result)[0]
    assert "pxb-pcie" not in " ".join(argv(result))


def test_a_device_on_a_host_node_no_guest_node_covers_is_refused(run: Callable[..., Plan]) -> None:
    with pytest.raises(UnsupportedError) as exc:
        run("gpu-node3", enable_numa=True, numa_mapping=["0-1", "2"])
    assert (exc.value.device, exc.value.field) == ("gadget-gpu-node3", "numa_mapping")
    assert "host NUMA node 3, which no guest NUMA node covers (numa_mapping: guest 0 = host 0-1, guest 1 = " \
           "host 2)" in str(exc.value)
    without = run("gpu-node3")  # without guest NUMA the host node does not matter
    assert "pxb-pcie" not in " ".join(argv(without))


@pytest.mark.parametrize(("mapping", "message"), [
    (["0", "0-1"], "host NUMA node 0 is in guest nodes 0 and 1"),
    (["x"], "'x' is not a list of NUMA nodes"),
    (["2-1"], "the range '2-1' runs backwards"),
    (["0-99999999999999"], "is not a list of NUMA nodes"),  # not a range to build in memory
    (["0-1024"], "node 1024 is past the last NUMA node Linux can have \\(1023\\)"),
    (["0-1\u00b2"], "is not a list of NUMA nodes"),  # a digit to str.isdigit, not to int
])
def test_a_wrong_numa_mapping_is_one_line_naming_the_key(
        run: Callable[..., Plan], mapping: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        run(enable_numa=True, numa_mapping=mapping)
    assert exc.value.field == "numa_mapping"


def test_the_guest_numa_device_comes_back_from_its_saved_form(vmdev_plugins: PluginFactory) -> None:
    from vmdev.serialize import to_json

    device = GuestNuma(nodes=[GuestNode(host_nodes="0-1", host_cpus="0-7", distances=(10,))])
    pm = vmdev_plugins()
    assert pm.device_from_state("guest-numa", to_json(device), "vmdev.backend.qemu", name="x") == device


def test_with_a_pxb_pcie_devices_without_a_bus_are_pinned_to_the_root_bus(run: Callable[..., Plan]) -> None:
    # QEMU would put them on the expander's bus, which takes bridges only (Kata pins its leaf devices)
    result = run("gpu-node1", "leaf", enable_numa=True, numa_mapping=["0", "1"])
    assert option(result, "-device")[-2:] == ["leaf-pci,id=gadget-leaf,bus=pcie.0", "isa-thing,id=gadget-leaf-isa"]
    assert "leaf-pci: pinned to bus=pcie.0 (QEMU would place it on a pxb-pcie's bus, which takes bridges only)" \
        in notes(result)
    assert option(run("leaf"), "-device") == ["leaf-pci,id=gadget-leaf", "isa-thing,id=gadget-leaf-isa"]


def test_a_runtime_rs_confidential_guest_gets_plain_bridges_as_runtime_rs_does(
    fake_host: FakeHost, vmdev_plugins: PluginFactory
) -> None:
    from vmdev.backends.qemu import kata_bridges

    options = {"default_bridges": 1, "firmware": "/opt/kata/share/ovmf/OVMF.fd", "confidential_guest": True}
    go = SandboxSettings(options=options)
    rs = SandboxSettings(options=options, runtime={"name": "virt_container"})
    pm = vmdev_plugins()
    assert kata_bridges(pm.prepare_settings(go))[:2] == (1, True)  # Kata Go nests them with a firmware
    assert kata_bridges(pm.prepare_settings(rs))[:2] == (1, False)  # runtime-rs plugs them into pcie.0
