"""GPU-class passthrough on a host built from an NVIDIA H200's facts (10de:2335, class 0x030200,
BARs of 16 MiB, 256 GiB and 32 MiB, all 64-bit prefetchable, host NUMA node 1): cold and hot plans,
their notes, guest NUMA, confidential guests, the driver's character devices, ``vmdev explain``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.explain import explain
from vmdev.models import GenericDevice
from vmdev.oci import parse_spec
from vmdev.planner import Pipeline, Plan
from vmdev.qemu import split_opts
from vmdev.serialize import to_json
from vmdev.testing import FakeHost, PluginFactory
from vmdev_vfio.device import VFIODeviceLargeBars
from vmdev_vfio.testing import H200_BDF, build_all, build_h200_host, h200_requests

from .conftest import sandbox_settings

GiB, MiB = 1 << 30, 1 << 20


@pytest.fixture
def gpu_host(fake_host: FakeHost) -> FakeHost:
    return build_h200_host(fake_host)


def gpu_plan(make_plan: Callable[..., Plan], host: FakeHost, **settings: Any) -> Plan:
    return make_plan(host, *h200_requests(), memory_mib=8192, **settings)


def devices(result: Plan, prefix: str) -> list[list[str]]:
    argv = list(result.qemu.argv)
    return [split_opts(argv[i + 1]) for i, a in enumerate(argv) if a == "-device" and argv[i + 1].startswith(prefix)]


def test_the_h200s_bars_are_read_from_its_resource_file(gpu_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    (gpu,) = [d.device for d in gpu_plan(make_plan, gpu_host).devices if d.kind == "vfio"]
    assert isinstance(gpu, VFIODeviceLargeBars)
    assert [(b.index, b.size, b.kind.value, b.is64) for b in gpu.large_bars] == [
        (0, 16 * MiB, "pref", True), (2, 256 * GiB, "pref", True), (4, 32 * MiB, "pref", True)]
    assert (gpu.windows.pref64, gpu.windows.mem, gpu.numa_node) == (256 * GiB + 48 * MiB, 0, 1)
    assert (gpu.functions[0].vendor_id, gpu.functions[0].device_id, gpu.functions[0].class_,
            gpu.functions[0].is_pcie) == ("0x10de", "0x2335", "0x030200", True)


def test_cold_plug_on_a_root_port_and_the_64_bit_window_it_needs(
        gpu_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    result = gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port")
    assert devices(result, "pcie-root-port") == [["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1"]]
    ((head, host, _, bus),) = devices(result, "vfio-pci")
    assert (head, host, bus) == ("vfio-pci", f"host={H200_BDF}", "bus=rp0")
    window, numa = result.qemu.notes
    # SeaBIOS gives the port a window of the BARs' sum rounded up to the 256 GiB BAR: 512 GiB, at 256 GiB
    assert window.startswith("64-bit PCI window (SeaBIOS): rp0 512 GiB, holds /dev/vfio/42 (largest: BAR 2 of "
                             "0000:41:00.0 (256 GiB, 64-bit prefetchable)); packed they need 512 GiB, and 1 GiB is "
                             "kept for the other devices' 64-bit BARs; guest RAM and memory hot-plug end at 10 GiB; "
                             "the window spans 0x4000000000-0xc040000000, so the guest needs 40 physical address "
                             "bits (QEMU's default 40 reaches it")
    assert numa == ("/dev/vfio/42: 0000:41:00.0 sits on host NUMA node 1 (sysfs numa_node); the guest has no NUMA "
                    "nodes (enable_numa = false), so it cannot place it near that node's memory and CPUs")
    assert not [a for a in result.qemu.argv if a.startswith(("x86_64-cpu", "name=opt/ovmf"))]


def test_cold_plug_with_uefi_sizes_ovmfs_aperture_and_eight_gpus_need_more_address_bits(
        fake_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    requests = []
    for n in range(8):
        build_h200_host(fake_host, bdf=f"0000:{0x41 + n:02x}:00.0", group=42 + n, vfio_minor=n)
        requests.append({"path": f"/dev/vfio/{42 + n}", "type": "c", "major": 246, "minor": n})
    result = make_plan(fake_host, *requests, memory_mib=8192, cold_plug_vfio="root-port",
                       firmware="/opt/kata/share/ovmf/OVMF.fd")
    argv = list(result.qemu.argv)
    # eight 512 GiB windows and 1 GiB for the other devices: an aperture of 4 TiB + 1 GiB, aligned to
    # 4 TiB: 44 address bits
    assert argv[argv.index("-fw_cfg") + 1] == f"name=opt/ovmf/X-PciMmio64Mb,string={(4 << 20) + 1024}"
    assert argv[argv.index("-global") + 1] == "x86_64-cpu.phys-bits=44"
    assert len(devices(result, "pcie-root-port")) == 8


def test_hot_plug_reserves_the_port_window_the_firmware_needs(
        gpu_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    result = gpu_plan(make_plan, gpu_host, hotplug=True, hot_plug_vfio="root-port")
    # SeaBIOS: the BARs' 256 GiB + 48 MiB, and the 256 GiB BAR less 2 MiB to reach an aligned address
    ((*_, reserve),) = devices(result, "pcie-root-port")
    assert reserve == f"pref64-reserve={512 * GiB + 46 * MiB}"
    assert [c.to_json()["arguments"]["bus"] for c in result.qemu.hotplug] == ["rp0"]
    ovmf = gpu_plan(make_plan, gpu_host, hotplug=True, hot_plug_vfio="root-port", firmware="OVMF.fd")
    assert devices(ovmf, "pcie-root-port")[0][-1] == f"pref64-reserve={256 * GiB + 48 * MiB}"
    with pytest.raises(UnsupportedError, match=r"^/dev/vfio/42: hot_plug_vfio: BAR 2 of 0000:41:00\.0 \(256 GiB, "
                                               r"64-bit prefetchable\) needs a window larger than the firmware's"):
        gpu_plan(make_plan, gpu_host, hotplug=True, hot_plug_vfio="switch-port")


def test_with_guest_numa_the_gpu_goes_behind_the_pxb_pcie_of_its_guest_node(
        gpu_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    result = gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port", enable_numa=True, numa_mapping=["0", "1"])
    assert devices(result, "pxb-pcie") == [["pxb-pcie", "id=pxb-numa1", "bus=pcie.0", "bus_nr=64", "numa_node=1"]]
    assert devices(result, "pcie-root-port") == [["pcie-root-port", "id=rp0", "bus=pxb-numa1", "chassis=1",
                                                  "slot=1"]]
    argv = list(result.qemu.argv)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-numa"] == [
        "node,nodeid=0,memdev=numa-mem0", "node,nodeid=1,memdev=numa-mem1",
        "dist,src=0,dst=1,val=21", "dist,src=1,dst=0,val=21"]  # the host's distances
    assert "numa-mem1,size=4096M,host-nodes=1,policy=bind" in " ".join(argv)
    assert not any("sits on host NUMA node" in note for note in result.qemu.notes)
    # one guest node for both host nodes: the same pxb-pcie, guest node 0
    merged = gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port", enable_numa=True, numa_mapping=["0-1"])
    assert devices(merged, "pxb-pcie") == [["pxb-pcie", "id=pxb-numa0", "bus=pcie.0", "bus_nr=32", "numa_node=0"]]
    # the empty mapping is Kata's 1:1 with the host's nodes (read from sysfs)
    auto = gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port", enable_numa=True)
    assert devices(auto, "pxb-pcie") == devices(result, "pxb-pcie")
    assert "dist,src=0,dst=1,val=21" in auto.qemu.argv
    with pytest.raises(UnsupportedError) as exc:
        gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port", enable_numa=True, numa_mapping=["0"])
    assert str(exc.value) == (
        "/dev/vfio/42: numa_mapping: sits on host NUMA node 1, which no guest NUMA node covers (numa_mapping: "
        "guest 0 = host 0); map it in numa_mapping, or pass a device of a covered node")
    switch = gpu_plan(make_plan, gpu_host, cold_plug_vfio="switch-port", enable_numa=True)
    assert "only root-port devices go behind a guest node's pxb-pcie" in switch.qemu.notes[-1]


def test_a_confidential_guest_takes_no_vfio_group(gpu_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    with pytest.raises(DeviceError) as exc:
        gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port", confidential_guest=True)
    assert str(exc.value) == "/dev/vfio/42: host_path: ConfidentialGuest needs IOMMUFD - cannot use /dev/vfio/42"
    # Kata checks it for QEMU only
    gpu_plan(make_plan, gpu_host, hypervisor="cloud-hypervisor", confidential_guest=True)


def test_the_nvidia_character_devices_stay_container_devices(
        gpu_host: FakeHost, make_plan: Callable[..., Plan]) -> None:
    result = gpu_plan(make_plan, gpu_host, cold_plug_vfio="root-port")
    generic = {d.container_path: d.device for d in result.devices if isinstance(d.device, GenericDevice)}
    assert {path: (d.dev_type, d.major, d.minor) for path, d in generic.items()} == {
        "/dev/nvidia0": ("c", 195, 0), "/dev/nvidiactl": ("c", 195, 255), "/dev/nvidia-uvm": ("c", 238, 0),
        "/dev/nvidia-caps/nvidia-cap1": ("c", 241, 1)}
    assert all(d.host_path == path for path, d in generic.items())


def test_a_saved_gpu_comes_back_with_its_bars(gpu_host: FakeHost, start: Callable[..., Pipeline]) -> None:
    pipeline = start(gpu_host, hot_plug_vfio="root-port")
    (gpu, *_) = build_all(pipeline, *h200_requests())
    data = json.loads(json.dumps(to_json(gpu)))
    assert [bar["size"] for bar in data["large_bars"]] == [16 * MiB, 256 * GiB, 32 * MiB]
    facts = pipeline.pm.host_facts(gpu, pipeline.host, name="gpu")
    shutil.rmtree(gpu_host.root)
    assert pipeline.pm.device_from_state("vfio", data, "vfio", name="gpu") == gpu
    assert facts["0000:41:00.0 numa_node"] == "1" and facts["0000:41:00.0 vendor:device"] == "0x10de:0x2335"


def test_vmdev_explain_says_why_the_gpu_is_on_rp0_and_not_hot_plugged(
        gpu_host: FakeHost, vmdev_plugins: PluginFactory) -> None:
    spec = parse_spec({"linux": {"devices": h200_requests()}})
    settings = sandbox_settings({"hotplug": True, "cold_plug_vfio": "root-port", "memory_mib": 8192})
    result = explain(spec, settings, host=gpu_host.context(), plugins=vmdev_plugins("vmdev-vfio"))
    gpu = result.devices[0]
    assert (gpu.name, gpu.plugin, gpu.hook) == ("/dev/vfio/42", "vfio", "build_device (OCI linux.devices)")
    plug, port, bars, numa, backend, agent = gpu.decisions
    assert plug.option == "cold plug: -device on the command line, present at boot"
    assert plug.because == ('cold_plug_vfio = "root-port" names a port: every VFIO device is present at boot, '
                            "where the firmware sizes the windows for its BARs, even in a plan for hot plug")
    assert plug.settings == {"hotplug": True, "cold_plug_vfio": "root-port", "hot_plug_vfio": "no-port"}
    assert port.option == "bus=rp0" and port.because.startswith('cold_plug_vfio = "root-port": a pcie-root-port')
    function = f"{gpu_host.sysfs}/bus/pci/devices/0000:41:00.0"
    assert port.facts == {f"{function}/config": "PCIe (config space larger than 256 bytes)",
                          f"{gpu_host.sysfs}/kernel/iommu_groups/42/devices": "0000:41:00.0"}
    assert bars.facts[f"{function}/resource (BAR 2)"] == "BAR 2 of 0000:41:00.0 (256 GiB, 64-bit prefetchable)"
    assert numa.facts == {f"{function}/numa_node": "1"}
    assert (backend.option, agent.option) == ("VFIO group backend", "kata-agent device type vfio-pci-gk")
    assert gpu.host_facts["0000:41:00.0 class"] == "0x030200"
    assert gpu.places[0] == "rp0: pcie-root-port on pcie.0 (chassis 1)"
    assert result.machine[0].because.startswith("64-bit PCI window (SeaBIOS): rp0 512 GiB")
    text = result.text()
    assert "    cold plug: -device on the command line, present at boot\n      because: cold_plug_vfio" in text
    hot = explain(spec, sandbox_settings({"hotplug": True, "hot_plug_vfio": "root-port"}), host=gpu_host.context(),
                  plugins=vmdev_plugins("vmdev-vfio"))
    reserve = hot.devices[0].decisions[2]
    assert reserve.option == "pref64-reserve=549804048384 (512 GiB + 46 MiB)"
    assert "SeaBIOS aligns a reserved window to 2 MiB only, so the reservation adds the largest BAR (256 GiB) " \
           "less 2 MiB" in reserve.because
