"""GPU-class passthrough on a real kernel's VFIO: large BARs cold and hot, and NUMA placement.

One L1 guest (``vfio_support.gpu_l1_machine_args``: two NUMA nodes, emulated VT-d) carries two
ivshmem-plain functions whose BAR 2 is 256 GiB (an H200's) and 1 TiB, over sparse files, and an edu
behind a pxb-pcie of NUMA node 1. Inside it the real ``vmdev`` binds them to vfio-pci and plans them;
the host's QEMU then runs each plan as a nested (L2) guest:

* cold, 256 GiB: the L2 firmware (SeaBIOS) maps BAR 2 at an address aligned to 256 GiB;
* hot, 256 GiB, in a Linux L2: hot-plugged onto the plan's root port the kernel assigns BAR 2; onto
  the plan's spare port (no reservation) or a port reserving only the BARs' sum (SeaBIOS does not
  align it) the kernel cannot ("no space"), which is why the plan reserves what it reserves;
* cold, 1 TiB, in a Linux L2: with the plan's ``phys-bits`` the kernel keeps BAR 2 above 1 TiB; with
  QEMU's default 40 bits it cannot map it;
* NUMA: the edu (host NUMA node 1 in L1) is planned behind ``pxb-numa1`` and QEMU's PCI tree in the
  L2 (two guest NUMA nodes bound to L1's) shows it there.

Not booted: the H200 fake host's plans with every installed plugin (its character devices stay
container devices, major 241 included), and a NUMA plan of that host in a real QEMU on this host.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from l1_support import l1_or_fail, planned
from vfio_support import GPU_BARS, L1Run, L2Linux, l2_session, run_gpu_l1
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import get_plugin_manager
from vmdev.qemu import split_opts
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_vfio.testing import NVIDIA_NODES, build_h200_host, h200_requests

GIB = 1 << 30
#: the kernel's words for a BAR it cannot place (6.1 older: "BAR 2: no space for [mem size ...]";
#: Debian's 6.1.0-57: "BAR 2 [mem size ...]: can't assign; no space")
NO_SPACE_256G = re.compile(r"BAR 2(: no space for \[mem size 0x4000000000 64bit pref\]| \[mem size "
                           r"0x4000000000 64bit pref\]: can't assign; no space)")


@pytest.fixture(scope="module")
def l1(tmp_path_factory: pytest.TempPathFactory) -> L1Run:
    """The GPU L1 run, once for this module (L1 boot, a few firmware-only and three Linux L2 guests)."""
    return l1_or_fail("GPU real-kernel", lambda: run_gpu_l1(tmp_path_factory.mktemp("gpu-l1")),
                      kernels=("generic", "cloud"))


def devices_of(argv: list[str], head: str) -> list[list[str]]:
    return [split_opts(argv[i + 1]) for i, a in enumerate(argv) if a == "-device" and argv[i + 1].startswith(head)]


def bar_report(console: str) -> list[tuple[str, int, int]]:
    """The L2 init's last ``L2-BAR`` report (``L2-BAR <bdf>=<start> <end> ... .``): (BDF, start, end)
    of each ivshmem function's BAR 2; an unassigned BAR starts at 0."""
    lines = [line for line in console.splitlines() if line.startswith("L2-BAR")]
    if not lines:
        return []
    words = lines[-1].split()[1:-1]
    out = []
    for first, second in zip(words[::2], words[1::2], strict=True):
        bdf, _, start = first.partition("=")
        out.append((bdf, int(start, 16), int(second, 16)))
    return out


# --- L1: the functions and their plans -------------------------------------------------------------
def test_l1_has_the_large_bar_functions_and_the_numa_one_on_vfio_pci(l1: L1Run) -> None:
    functions, pci = l1.result["functions"], l1.result["pci"]
    assert set(functions) == {"bar256", "bar1t", "edu"}
    for name, size in GPU_BARS.items():
        start, end, flags = pci[functions[name]]["bars"][2]
        assert (end - start + 1, flags & 0x2000, flags & 0x100000) == (size, 0x2000, 0x100000)  # 64-bit pref
        assert pci[functions[name]]["driver"] == "vfio-pci"
    assert (pci[functions["edu"]]["numa_node"], l1.result["numa_online"]) == ("1", "0-1")


def test_the_plans_reserve_and_size_what_the_bars_need(l1: L1Run) -> None:
    cold = planned(l1, "cold256")
    assert devices_of(cold["qemu"]["argv"], "pcie-root-port")[0][5:] == []  # cold: no reservation
    assert cold["qemu"]["notes"][0].startswith("64-bit PCI window (SeaBIOS): rp0 256 GiB, holds /dev/vfio/")
    hot = planned(l1, "hot256")
    rp0 = devices_of(hot["qemu"]["argv"], "pcie-root-port")[0]
    assert rp0[-1] == f"pref64-reserve={512 * GIB - (2 << 20)}"  # 256 GiB + 256 GiB - 2 MiB (SeaBIOS)
    big = planned(l1, "cold1t")
    argv = big["qemu"]["argv"]
    # the 1 TiB BAR at 1 TiB, and room for the other devices' 64-bit BARs after it: 42 bits
    assert argv[argv.index("-global") + 1] == "x86_64-cpu.phys-bits=42"
    explained = json.loads(l1.result["plans"]["hot256"]["explain"]["stdout"])
    options = [d["option"] for d in explained["devices"][0]["decisions"]]
    assert options[:3] == ["hot plug: QMP device_add after boot", "bus=rp0",
                           f"pref64-reserve={512 * GIB - (2 << 20)} (511 GiB + 1022 MiB)"]
    bars = explained["devices"][0]["decisions"][2]["facts"]
    assert any(value == f"BAR 2 of {l1.result['functions']['bar256']} (256 GiB, 64-bit prefetchable)"
               for value in bars.values())


def test_numa_plans_put_the_node_1_function_behind_pxb_numa1(l1: L1Run) -> None:
    numa = planned(l1, "numa")
    argv = numa["qemu"]["argv"]
    assert devices_of(argv, "pxb-pcie") == [["pxb-pcie", "id=pxb-numa1", "bus=pcie.0", "bus_nr=64", "numa_node=1"]]
    assert devices_of(argv, "pcie-root-port")[0][:3] == ["pcie-root-port", "id=rp0", "bus=pxb-numa1"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-numa"][:2] == [
        "node,nodeid=0,memdev=numa-mem0", "node,nodeid=1,memdev=numa-mem1"]
    off = planned(l1, "numa-off")
    assert any("sits on host NUMA node 1 (sysfs numa_node); the guest has no NUMA nodes" in note
               for note in off["qemu"]["notes"])


# --- L2: firmware, QEMU and the Linux kernel -------------------------------------------------------
def test_the_firmware_maps_the_cold_256_gib_bar(l1: L1Run) -> None:
    session = l1.result["l2"]["cold256"]
    assert session["rc"] == 0 and session["firmware_done"], session["stderr"]
    mapped = [line for line in session["log"].splitlines() if "bar 2," in line and "[prefmem]" in line]
    assert len(mapped) == 1, session["log"][-2000:]
    address = int(mapped[0].split("addr ")[1].split(",")[0], 16)
    size = int(mapped[0].split("size ")[1].split(" ")[0], 16)
    assert size == 256 * GIB and address % (256 * GIB) == 0 and address >= 256 * GIB


def test_a_hot_plugged_256_gib_bar_is_assigned_only_with_the_plans_reservation(l1: L1Run) -> None:
    session = l1.result["l2"]["hot256"]
    assert session["rc"] == 0, session["stderr"][-2000:]
    steps = {step["name"]: step for step in session["steps"]}
    assert steps["boot"]["seen"] == "L2-READY", session["console"][-3000:]
    for refused in ("spare", "sum-only"):
        step = steps[refused]
        assert step["seen"] == "L2-BAR 0000:", step["console"][-2000:]
        assert NO_SPACE_256G.search(step["console"]), step["console"][-2000:]
        assert [start for _, start, _ in bar_report(step["console"])] == [0], step["console"][-2000:]
        assert step["deleted"]
    step = steps["plan"]
    ((_, start, end),) = bar_report(step["console"])
    assert start % (256 * GIB) == 0 and start > 0 and end - start + 1 == 256 * GIB, step["console"][-2000:]
    assert not NO_SPACE_256G.search(step["console"]), step["console"][-2000:]


def test_a_cold_1_tib_bar_needs_the_plans_address_width(l1: L1Run) -> None:
    with_bits, default = l1.result["l2"]["cold1t"], l1.result["l2"]["cold1t-default-bits"]
    assert default["dropped"] == "x86_64-cpu.phys-bits="
    assert "address sizes\t: 42 bits physical" in with_bits["console"], with_bits["console"][-3000:]
    ((_, start, end),) = bar_report(with_bits["console"])
    assert (start, end - start + 1) == (1 << 40, 1 << 40)
    ended = f"QEMU rc {default['rc']}, gone at {default['exited']} s: {default['stderr'][-500:]}"
    assert "address sizes\t: 40 bits physical" in default["console"], (ended, default["console"][-3000:])
    ((_, start, _),) = bar_report(default["console"])
    assert start == 0, default["console"][-3000:]  # the kernel could not keep it, and found no room
    assert "BAR 2 [mem 0x10000000000-0x1ffffffffff 64bit pref]: can't claim; no compatible bridge window" in \
        default["console"] or "can't claim BAR 2" in default["console"]


def test_qemu_shows_the_numa_function_behind_its_guest_nodes_pxb(l1: L1Run) -> None:
    session = l1.result["l2"]["numa"]
    assert session["rc"] == 0 and session["firmware_done"], session["stderr"]
    buses = {bus["bus"]: bus for bus in session["query_pci"]["return"]}
    assert "pxb-numa1" in [d.get("qdev_id") for d in buses[0]["devices"]]
    (port,) = buses[64]["devices"]  # pxb-numa1's root bus: bus_nr 64
    assert port["qdev_id"] == "rp0"
    (function,) = port["pci_bridge"]["devices"]
    vfio = planned(l1, "numa")["devices"][0]["placement"][0]
    assert (function["qdev_id"], f"0x{function['id']['vendor']:04x}:0x{function['id']['device']:04x}") == (
        vfio["id"], "0x1234:0x11e8")


def test_an_l2_qemu_gone_before_its_session_ends_is_reported_not_a_broken_pipe(tmp_path: Path) -> None:
    """A Linux L2 that stops (a panic, under ``panic=-1`` and ``-no-reboot``) ends its QEMU. Its
    session's result says so, with the exit status and when QEMU was found gone, and the test that
    reads it decides. Before, the next QMP message raised ``BrokenPipeError`` inside L1 and ended
    the whole GPU scenario: every test that reads it failed, without the L2's console."""
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\nexit 3\n")
    qemu.chmod(0o755)
    guest = L2Linux(str(qemu), [], {"l2_kernel": "vmlinuz", "l2_initrd": "initrd"}, f"gone-{tmp_path.name}")
    guest.proc.wait()
    result = guest.finish()
    assert (result["rc"], result["console"], result["query_pci"]) == (3, "", None)
    assert result["exited"] is not None and result["exited"] >= 0


# --- no boot: the H200 host ------------------------------------------------------------------------
def h200_host(tmp_path: Path) -> FakeHost:
    host = build_h200_host(FakeHost(tmp_path / "h200"))
    host.char_device(1, 9, "urandom")  # for the entropy plugin's device
    return host


def test_the_nvidia_character_devices_stay_container_devices_with_every_plugin(tmp_path: Path) -> None:
    host = h200_host(tmp_path)
    store = tmp_path / "vhost-user"
    (store / "block" / "sockets").mkdir(parents=True)
    settings = SandboxSettings(memory_mib=8192, options={"cold_plug_vfio": "root-port",
                                                         "enable_vhost_user_store": True,
                                                         "vhost_user_store_path": str(store)})
    result = plan(parse_spec({"linux": {"devices": h200_requests()}}), settings, host=host.context(),
                  plugins=get_plugin_manager())
    kinds = {d.container_path: (d.kind, d.plugin) for d in result.devices if d.container_path}
    assert kinds.pop("/dev/vfio/42") == ("vfio", "vfio")
    assert kinds == {path: ("generic", "vmdev.generic") for path, _, _ in NVIDIA_NODES}


def test_a_real_qemu_puts_the_h200_plans_device_behind_pxb_numa1(tmp_path: Path) -> None:
    """The fake H200 host's NUMA plan, its vfio-pci device replaced by an emulated one with the
    same id and bus (no H200 here), its memory unbound (this host has one NUMA node)."""
    host = h200_host(tmp_path)
    settings = SandboxSettings(memory_mib=256, options={"cold_plug_vfio": "root-port", "enable_numa": True,
                                                        "numa_mapping": ["0", "1"]})
    result = plan(parse_spec({"linux": {"devices": h200_requests()[:1]}}), settings, host=host.context(),
                  plugins=get_plugin_manager())
    assert result.qemu is not None
    argv = [a.replace(",host-nodes=0,policy=bind", "").replace(",host-nodes=1,policy=bind", "")
            .replace("vfio-pci,host=0000:41:00.0,", "edu,") for a in result.qemu.argv]
    session = l2_session("qemu-system-x86_64", argv, [], tmp_path / "seabios.log", limit=120)
    assert session["rc"] == 0 and session["firmware_done"], session["stderr"]  # SeaBIOS numbered the buses
    buses = {bus["bus"]: bus for bus in session["query_pci"]["return"]}
    (port,) = buses[64]["devices"]
    (gpu,) = port["pci_bridge"]["devices"]
    assert (port["qdev_id"], gpu["qdev_id"]) == ("rp0", result.devices[0].id + "-0")
    assert "pxb-numa1" in [d.get("qdev_id") for d in buses[0]["devices"]]
