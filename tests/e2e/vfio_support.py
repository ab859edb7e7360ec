"""A real kernel's VFIO for vmdev-vfio's end-to-end tests: an L1 guest with an emulated IOMMU.

The L1 machine (QEMU q35 under TCG, ``kernel-irqchip=split`` + ``intel-iommu``, Debian's generic
kernel with ``intel_iommu=on``) carries emulated PCI functions:

==========  =============================================  ==================================
BDF         device                                         why
==========  =============================================  ==================================
00:03.0     e1000e 8086:10d3, root-complex integrated      PCIe; first bound to e1000e
01:00.0     virtio-net 1af4:1041 behind root port 00:04.0  PCIe; first bound to virtio-pci
02:00.0     edu 1234:11e8 behind root port 00:05.0         conventional PCI
03:01.0     edu 1234:11e8 behind pci-bridge 00:06.0        one IOMMU group with the bridge
03:02.0     pci-testdev 1b36:0005 behind pci-bridge        and the other function behind it
==========  =============================================  ==================================

The host's root file system is shared read-only over 9p (``hostroot``) and a scratch directory
of the test read-write (``vfout``). The guest's ``/init`` (busybox) loads the modules, mounts
both, mounts the guest's real ``/proc``, ``/sys`` and ``/dev`` inside the shared root and runs
this very file inside ``chroot`` with the test's Python: :func:`guest_scenario`. That scenario
uses the real ``vmdev`` command line (plan, doctor) on the real sysfs, binds the functions to
vfio-pci, and runs the host's QEMU as a nested (L2) guest with the plans' options: QEMU opens
the real VFIO groups, and SeaBIOS in L2 logs the functions it finds. Results land in
``<out>/result.json`` on the host.

The guest-side part uses the standard library only; it runs with the host's Python inside L1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST_ROOT_TAG = "hostroot"
OUT_TAG = "vfout"
GUEST_OUT = "/run/out"
RESULT = "result.json"
#: which scenario the guest runs, and its configuration (written by the host before the boot)
SCENARIO = "scenario.json"
#: the modules the L1 guest loads (dependencies are added by the rig's closure)
L1_MODULES = ("virtio_pci", "9p", "9pnet_virtio", "e1000e", "vfio_pci", "vfio_iommu_type1")
#: the functions the scenario passes through: BDF -> (vendor, device, PCIe, what)
L1_FUNCTIONS: dict[str, tuple[str, str, bool, str]] = {
    "0000:00:03.0": ("0x8086", "0x10d3", True, "e1000e"),
    "0000:01:00.0": ("0x1af4", "0x1041", True, "virtio-net"),
    "0000:02:00.0": ("0x1234", "0x11e8", False, "edu"),
    "0000:03:01.0": ("0x1234", "0x11e8", False, "edu"),
    "0000:03:02.0": ("0x1b36", "0x0005", False, "pci-testdev"),
}
BRIDGE_BDF = "0000:00:06.0"
#: the settings files the scenario plans with (Kata's configuration.toml keys)
PLAN_CONFIGS: dict[str, str] = {
    "root-port": '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n',
    "bridge-port": '[hypervisor.qemu]\ncold_plug_vfio = "bridge-port"\n',
    "switch-hot": '[hypervisor.qemu]\nhot_plug_vfio = "switch-port"\n[vmdev]\nhotplug = true\n',
    "root-hot": '[hypervisor.qemu]\nhot_plug_vfio = "root-port"\npcie_root_port = 6\n[vmdev]\nhotplug = true\n',
}

INIT_SCRIPT = r"""#!/bin/sh
# /init of vmdev-vfio's L1 guest: modules, 9p roots, chroot, run the scenario, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
dmesg -n 1
up() { read -r UP _ < /proc/uptime; echo "VF-$1 uptime=$UP"; }
up INIT
while read -r mod; do
    insmod "/lib/modules/$mod.ko" 2>/tmp/err || echo "VF-INSMOD-FAIL $mod $(cat /tmp/err)"
done < /lib/modules/load.order
PY=; SCRIPT=
for arg in $(cat /proc/cmdline); do
    case $arg in vf.python=*) PY=${arg#*=} ;; vf.script=*) SCRIPT=${arg#*=} ;; esac
done
R=/hostroot
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $R || echo VF-MOUNT-FAIL
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mount -t tmpfs tmpfs $R/run
mkdir -p $R/run/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vfout $R/run/out || echo VF-MOUNT-OUT-FAIL
up READY
chroot $R /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin TMPDIR=/run HOME=/run \
    PYTHONDONTWRITEBYTECODE=1 "$PY" "$SCRIPT" --guest /run/out
echo "VF-SCENARIO rc=$?"
up DONE
sync
umount $R/run/out
poweroff -f
sleep 2
reboot -f
"""


# --- host side ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class L1Run:
    """One run of the L1 guest: QEMU's exit, the console, the scenario's results."""

    rc: int
    serial: str
    stderr: str
    seconds: float
    result: dict[str, Any]
    command: list[str]


def l1_machine_args(out_dir: Path) -> list[str]:
    """The L1 machine: emulated VT-d and the functions of the table above, at fixed addresses."""
    return [
        "-machine", "q35,kernel-irqchip=split", "-cpu", "max", "-smp", "2", "-m", "2048",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={HOST_ROOT_TAG},addr=01.0",
        "-fsdev", f"local,id=vfout,path={out_dir},security_model=none,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=vfout,mount_tag={OUT_TAG},addr=02.0",
        "-device", "e1000e,addr=03.0",
        "-device", "pcie-root-port,id=l1rp0,chassis=1,slot=1,addr=04.0",
        "-device", "virtio-net-pci,disable-legacy=on,bus=l1rp0",
        "-device", "pcie-root-port,id=l1rp1,chassis=2,slot=2,addr=05.0",
        "-device", "edu,bus=l1rp1",
        "-device", "pci-bridge,id=l1br,chassis_nr=3,shpc=off,addr=06.0",
        "-device", "edu,bus=l1br,addr=01.0",
        "-device", "pci-testdev,bus=l1br,addr=02.0",
    ]


def build_l1_initramfs(kernel: Any, cache_dir: Path) -> Path:
    """The rig's initramfs builder with this module's /init and the VFIO modules."""
    from vmdev_rig.initramfs import build_initramfs

    init = cache_dir / "vfio-l1-init.sh"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not init.is_file() or init.read_text() != INIT_SCRIPT:
        init.write_text(INIT_SCRIPT)
    return build_initramfs(kernel, cache_dir, modules=L1_MODULES, optional_modules=(), init_script=init)


def run_l1(
    out_dir: Path,
    *,
    timeout: float = 600.0,
    qemu: str = "qemu-system-x86_64",
    machine_args: Sequence[str] | None = None,
    scenario: str = "vfio",
    config: Mapping[str, Any] | None = None,
) -> L1Run:
    """Boot L1 (generic kernel), run a scenario inside it (:func:`guest_scenario`, or
    :func:`gpu_scenario` with ``scenario="gpu"`` and its ``config``) and return its results.
    ``machine_args`` replace :func:`l1_machine_args`."""
    from vmdev_rig import default_cache_dir, ensure_kernel

    cache = default_cache_dir()
    kernel = ensure_kernel(cache, "generic")
    initramfs = build_l1_initramfs(kernel, cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o777)
    (out_dir / SCENARIO).write_text(json.dumps({"scenario": scenario, "config": dict(config or {})}))
    serial = out_dir / "serial.log"
    append = (f"console=ttyS0 quiet panic=-1 intel_iommu=on vf.python={sys.executable} "
              f"vf.script={Path(__file__).resolve()}")
    command = [
        qemu, "-nodefaults", "-no-user-config", "-nographic", "-accel", "tcg", "-no-reboot",
        "-serial", f"file:{serial}", "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
        "-append", append, *(l1_machine_args(out_dir) if machine_args is None else machine_args),
    ]
    started = time.monotonic()
    with open(out_dir / "qemu.log", "wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    seconds = time.monotonic() - started
    result_file = out_dir / RESULT
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    return L1Run(rc=rc, serial=_read(serial), stderr=_read(out_dir / "qemu.log"), seconds=seconds,
                 result=result, command=command)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


# --- guest side (runs inside L1, standard library only) ----------------------------------------
def sh(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout)
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -9, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {timeout} s"
    return {"argv": list(argv), "rc": rc, "stdout": out, "stderr": err,
            "seconds": round(time.monotonic() - started, 2)}


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def pci_facts() -> dict[str, dict[str, Any]]:
    """What the guest kernel says about every PCI function."""
    facts = {}
    base = Path("/sys/bus/pci/devices")
    for entry in sorted(base.iterdir()):
        def attr(name: str, entry: Path = entry) -> str:
            return (entry / name).read_text().strip()

        driver = entry / "driver"
        group = entry / "iommu_group"
        facts[entry.name] = {
            "vendor": attr("vendor"), "device": attr("device"), "class": attr("class"),
            "config_size": (entry / "config").stat().st_size,
            "iommu_group": os.path.basename(os.readlink(group)) if group.is_symlink() else "",
            "driver": os.path.basename(os.readlink(driver)) if driver.is_symlink() else "",
        }
    return facts


def bind_to_vfio(bdfs: Sequence[str]) -> list[str]:
    """driver_override + unbind + drivers_probe, as Kata's BindDevicetoVFIO does."""
    log = []
    for bdf in bdfs:
        device = Path("/sys/bus/pci/devices") / bdf
        (device / "driver_override").write_text("vfio-pci")
        if (device / "driver").exists():
            (device / "driver" / "unbind").write_text(bdf)
            log.append(f"{bdf}: unbound")
        Path("/sys/bus/pci/drivers_probe").write_text(bdf)
        log.append(f"{bdf}: {os.path.basename(os.readlink(device / 'driver'))}")
    return log


def oci_config(path: Path, nodes: Sequence[str], *, fake_numbers: bool = False) -> Path:
    """An OCI config.json with these device nodes (their real major:minor, or unknown ones)."""
    devices = []
    for number, node in enumerate(nodes):
        if fake_numbers:
            major, minor = 511, 200 + number  # no /sys/dev/char entry: the path is taken as is
        else:
            rdev = os.stat(node).st_rdev
            major, minor = os.major(rdev), os.minor(rdev)
        devices.append({"path": node, "type": "c", "major": major, "minor": minor})
    path.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {"devices": devices}}))
    return path


def l2_session(qemu: str, argv: Sequence[str], commands: Sequence[Mapping[str, Any]], log: Path,
               *, limit: float = 150.0) -> dict[str, Any]:
    """Run a firmware-only L2 guest with ``argv``; once SeaBIOS has set up PCI, send ``commands``
    (hot plug) and ``query-pci`` over QMP (stdio). Returns the replies and SeaBIOS's debug log."""
    command = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", "-serial", "none",
               "-chardev", f"file,id=dbg,path={log}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
               "-qmp", "stdio", *argv]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None

    def send(message: Mapping[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    send({"execute": "qmp_capabilities"})
    firmware_done = False
    while time.monotonic() - started < limit and proc.poll() is None:
        if "cpu(s)" in _read(log):  # SeaBIOS logs the CPUs right after its PCI setup
            firmware_done = True
            break
        time.sleep(0.5)
    try:
        for index, command_ in enumerate(commands):
            send({**command_, "id": index})
        time.sleep(1)
        send({"execute": "query-pci", "id": "query-pci"})
        send({"execute": "quit"})
        out, err = proc.communicate(timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n{type(exc).__name__}: {exc}"
    replies: dict[Any, Any] = {}
    for line in out.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict) and "id" in message:
            replies[message["id"]] = message
    return {"argv": command, "rc": proc.returncode, "stderr": err, "firmware_done": firmware_done,
            "seconds": round(time.monotonic() - started, 2), "log": _read(log),
            "replies": [replies.get(index) for index in range(len(commands))],
            "query_pci": replies.get("query-pci")}


def vmdev_command() -> str:
    """The ``vmdev`` script beside the running Python (the test environment's), else PATH's."""
    exe = Path(sys.executable).with_name("vmdev")
    return str(exe) if exe.exists() else "vmdev"


def plan_every_group(vmdev: str, work: Path) -> dict[str, Any]:
    """``vmdev plan`` of every ``/dev/vfio`` node, once per settings file of PLAN_CONFIGS."""
    groups = sorted((n for n in os.listdir("/dev/vfio") if n.isdigit()), key=int)
    config = oci_config(work / "config.json", [*(f"/dev/vfio/{g}" for g in groups), "/dev/vfio/vfio"])
    plans: dict[str, Any] = {}
    for name, toml in PLAN_CONFIGS.items():
        settings = work / f"{name}.toml"
        settings.write_text(toml)
        run = sh([vmdev, "plan", "--format", "json", "--memory", "128", "--config", str(settings), str(config)])
        run["plan"] = json.loads(run["stdout"]) if run["rc"] == 0 else None
        plans[name] = run
    return plans


def run_plans_in_l2(plans: Mapping[str, Any], qemu: str = "qemu-system-x86_64") -> dict[str, Any]:
    """Each plan's QEMU options (and hot-plug commands) in a firmware-only nested guest."""
    sessions: dict[str, Any] = {}
    for name, run in plans.items():
        if run["plan"] is not None:
            qemu_plan = run["plan"]["qemu"]
            log = Path(f"/run/seabios-{name}.log")
            sessions[name] = l2_session(qemu, qemu_plan["argv"], qemu_plan["hotplug"], log)
    return sessions


def guest_scenario() -> dict[str, Any]:
    """Everything the tests check, done inside L1 (see the module docstring)."""
    vmdev = vmdev_command()
    work = Path("/run/work")
    work.mkdir(exist_ok=True)
    result: dict[str, Any] = {"uname": os.uname().release, "pci_before": pci_facts()}
    group = result["e1000e_group"] = result["pci_before"]["0000:00:03.0"]["iommu_group"]
    # a group whose function a host driver holds: refused, and the doctor says why
    wrong = oci_config(work / "wrong.json", [f"/dev/vfio/{group}"], fake_numbers=True)
    result["wrong_driver_plan"] = sh([vmdev, "plan", "--format", "json", str(wrong)])
    result["doctor_before"] = sh([vmdev, "doctor", "--json", f"/dev/vfio/{group}"])
    result["bind"] = bind_to_vfio(list(L1_FUNCTIONS))
    result["pci_after"] = pci_facts()
    result["dev_vfio"] = sorted(os.listdir("/dev/vfio"))
    result["doctor"] = sh([vmdev, "doctor", "--json"])
    result["plans"] = plan_every_group(vmdev, work)
    result["l2"] = run_plans_in_l2(result["plans"])
    return result


# --- GPU-class passthrough (test_gpu_e2e): large BARs and NUMA -----------------------------------
#: the L1 machine's large-BAR functions: ivshmem-plain over a sparse file, its BAR 2 that size
GIB = 1 << 30
GPU_BARS: dict[str, int] = {"bar256": 256 * GIB, "bar1t": 1024 * GIB}
IVSHMEM = ("0x1af4", "0x1110")
EDU = ("0x1234", "0x11e8")
#: the L2 guest's /init (busybox): report the CPU's address width, the ivshmem functions' BAR 2 and
#: the kernel's PCI messages on the console, until QEMU is stopped
L2_INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
read -r UP _ < /proc/uptime
echo "L2-READY uptime=$UP"
echo "L2-CPU $(grep -m1 'address sizes' /proc/cpuinfo)"
LAST=
while true; do
    dmesg -c | grep -i -e 'pci' -e 'BAR' -e 'window' | sed 's/^/L2-K /'
    NOW=
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then
            NOW="$NOW ${d##*/}=$(sed -n 3p $d/resource | cut -d' ' -f1,2)"
        fi
    done
    if [ "$NOW" != "$LAST" ]; then echo "L2-BAR$NOW ."; LAST=$NOW; fi
    sleep 1
done
"""


def gpu_l1_machine_args(out_dir: Path, bars_dir: Path) -> list[str]:
    """An L1 machine for GPU-class tests: two guest NUMA nodes, an emulated VT-d, ivshmem functions
    with a 256 GiB and a 1 TiB BAR (sparse files in ``bars_dir``) on the root bus, and an edu
    behind a pxb-pcie of NUMA node 1. L1's CPU reaches 43 address bits (its BARs end above 2 TiB)."""
    args = [
        "-machine", "q35,kernel-irqchip=split", "-cpu", "max,phys-bits=43", "-smp", "2", "-m", "2048",
        "-object", "memory-backend-ram,id=l1m0,size=1024M", "-numa", "node,nodeid=0,memdev=l1m0",
        "-object", "memory-backend-ram,id=l1m1,size=1024M", "-numa", "node,nodeid=1,memdev=l1m1",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={HOST_ROOT_TAG},addr=01.0",
        "-fsdev", f"local,id=vfout,path={out_dir},security_model=none,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=vfout,mount_tag={OUT_TAG},addr=02.0",
    ]
    for slot, (name, size) in enumerate(GPU_BARS.items(), start=3):
        image = bars_dir / f"{name}.img"
        with open(image, "wb") as sparse:
            sparse.truncate(size)
        args += ["-object", f"memory-backend-file,id={name},size={size},mem-path={image},share=on",
                 "-device", f"ivshmem-plain,memdev={name},addr={slot:02x}.0"]
    args += ["-device", "pxb-pcie,id=l1pxb1,bus_nr=128,numa_node=1",
             "-device", "pcie-root-port,id=l1rp9,bus=l1pxb1,chassis=9,slot=9",
             "-device", "edu,bus=l1rp9"]
    return args


def build_l2_initramfs(kernel: Any, cache_dir: Path) -> Path:
    """The L2 guest's initramfs: busybox and :data:`L2_INIT`, no modules (the cloud kernel has its
    PCI hot plug built in)."""
    from vmdev_rig.initramfs import build_initramfs

    init = cache_dir / "gpu-l2-init.sh"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not init.is_file() or init.read_text() != L2_INIT:
        init.write_text(L2_INIT)
    return build_initramfs(kernel, cache_dir, modules=(), optional_modules=(), init_script=init)


def run_gpu_l1(out_dir: Path, *, timeout: float = 2400.0) -> L1Run:
    """Boot the GPU L1 machine and run :func:`gpu_scenario` inside it (the L2 guests boot the
    cloud kernel, whose vmlinuz and initramfs are made here and read over 9p)."""
    from vmdev_rig import default_cache_dir, ensure_kernel

    cache = default_cache_dir()
    l2_kernel = ensure_kernel(cache, "cloud")
    config = {"l2_kernel": str(l2_kernel.vmlinuz), "l2_initrd": str(build_l2_initramfs(l2_kernel, cache))}
    bars = out_dir.parent / f"{out_dir.name}-bars"
    bars.mkdir(parents=True, exist_ok=True)
    try:
        return run_l1(out_dir, timeout=timeout, machine_args=gpu_l1_machine_args(out_dir, bars), scenario="gpu",
                      config=config)
    finally:
        for image in bars.glob("*.img"):
            image.unlink()


# guest side (inside L1) ------------------------------------------------------------------------
def pci_bars(bdf: str) -> list[tuple[int, int, int]]:
    """(start, end, flags) of a function's BAR lines."""
    text = (Path("/sys/bus/pci/devices") / bdf / "resource").read_text().splitlines()[:6]
    return [tuple(int(part, 16) for part in line.split()) for line in text]  # type: ignore[misc]


def find_functions() -> dict[str, str]:
    """The BDFs of L1's big-BAR ivshmem functions (by BAR 2's size) and of the edu on node 1."""
    found: dict[str, str] = {}
    for entry in sorted(Path("/sys/bus/pci/devices").iterdir()):
        ids = ((entry / "vendor").read_text().strip(), (entry / "device").read_text().strip())
        if ids == IVSHMEM:
            start, end, _ = pci_bars(entry.name)[2]
            for name, size in GPU_BARS.items():
                if end - start + 1 == size:
                    found[name] = entry.name
        elif ids == EDU:
            found["edu"] = entry.name
    return found


def no_mmap(argv: Sequence[str]) -> list[str]:
    """The plan's argv with ``x-no-mmap=on`` on every vfio-pci device: QEMU then reads the BAR
    through the VFIO file instead of mapping it (a nested TCG L1 cannot afford to map and DMA-map a
    256 GiB BAR page by page; where the firmware and the kernel place the BAR does not change)."""
    return [f"{a},x-no-mmap=on" if a.startswith("vfio-pci,") else a for a in argv]


class L2Linux:
    """An L2 guest booting the cloud kernel with :data:`L2_INIT`, driven over QMP (stdio)."""

    def __init__(self, qemu: str, argv: Sequence[str], config: Mapping[str, Any], name: str) -> None:
        import threading

        self.serial = Path(f"/run/l2-{name}.log")
        self.command = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg",
                        "-no-reboot", "-serial", f"file:{self.serial}", "-kernel", config["l2_kernel"],
                        "-initrd", config["l2_initrd"], "-append", "console=ttyS0 quiet panic=-1",
                        "-qmp", "stdio", *argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.messages: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        #: seconds after the start at which QEMU was found gone when sent a message (None: it was not)
        self.exited: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send({"execute": "qmp_capabilities"})

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.messages.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def send(self, message: Mapping[str, Any]) -> None:
        """Send a QMP message; nothing when QEMU has exited (the session's result says when it did:
        a guest that stops, a panic with ``panic=-1`` and ``-no-reboot``, ends QEMU)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            if self.exited is None:
                self.exited = round(time.monotonic() - self.started, 1)

    def console(self) -> str:
        return _read(self.serial)

    def wait_console(self, needle: str, after: int, limit: float) -> bool:
        """Whether ``needle`` shows on the console past offset ``after`` within ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.proc.poll() is None:
            if needle in self.console()[after:]:
                return True
            time.sleep(1)
        return False

    def wait_event(self, event: str, device: str, limit: float, *, after: int = 0) -> bool:
        """Whether QEMU sends ``event`` for ``device`` among its messages from index ``after`` on."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(m.get("event") == event and m.get("data", {}).get("device") == device
                   for m in self.messages[after:]):
                return True
            time.sleep(1)
        return False

    def step(self, name: str, command: Mapping[str, Any] | None, needles: Sequence[str], limit: float) -> None:
        """Send ``command`` (if any), then wait for the first of ``needles`` on the console."""
        offset = len(self.console())
        if command is not None:
            self.send(command)
        deadline = time.monotonic() + limit
        seen = ""
        while time.monotonic() < deadline and self.proc.poll() is None and not seen:
            text = self.console()[offset:]
            seen = next((n for n in needles if n in text), "")
            time.sleep(1)
        time.sleep(2)  # the lines that follow it (the kernel's last words, the BAR report)
        self.steps.append({"name": name, "seen": seen, "console": self.console()[offset:],
                           "seconds": round(time.monotonic() - self.started, 1)})

    def finish(self) -> dict[str, Any]:
        self.send({"execute": "query-pci", "id": "query-pci"})
        time.sleep(2)
        self.send({"execute": "quit"})
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        replies = [m for m in self.messages if "id" in m or "error" in m]
        return {"argv": self.command, "rc": self.proc.returncode, "exited": self.exited, "stderr": err,
                "steps": self.steps,
                "console": self.console(), "replies": replies,
                "events": [m for m in self.messages if "event" in m],
                "query_pci": next((m for m in self.messages if m.get("id") == "query-pci"), None),
                "seconds": round(time.monotonic() - self.started, 1)}


def gpu_plans(vmdev: str, work: Path, groups: Mapping[str, str]) -> dict[str, Any]:
    """``vmdev plan`` (and ``vmdev explain``) of the large-BAR and NUMA functions, cold and hot."""
    cases = {
        "cold256": ("bar256", '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n'),
        "hot256": ("bar256", '[hypervisor.qemu]\nhot_plug_vfio = "root-port"\npcie_root_port = 3\n'
                             "[vmdev]\nhotplug = true\n"),
        "cold1t": ("bar1t", '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n'),
        "numa": ("edu", '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\nenable_numa = true\n'),
        "numa-off": ("edu", '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n'),
    }
    plans: dict[str, Any] = {}
    for name, (function, toml) in cases.items():
        settings = work / f"{name}.toml"
        settings.write_text(toml)
        config = oci_config(work / f"{name}.json", [f"/dev/vfio/{groups[function]}"])
        run = sh([vmdev, "plan", "--format", "json", "--memory", "256", "--config", str(settings), str(config)])
        run["plan"] = json.loads(run["stdout"]) if run["rc"] == 0 else None
        if name in ("hot256", "cold1t"):
            run["explain"] = sh([vmdev, "explain", "--json", "--memory", "256", "--config", str(settings),
                                 str(config)])
        plans[name] = run
    return plans


def hot_session(plan: Mapping[str, Any], config: Mapping[str, Any], qemu: str) -> dict[str, Any]:
    """The hot plan in a Linux L2: the function hot-plugged onto the spare root port (no reservation),
    onto a port reserving only the BARs' sum, then onto the plan's port."""
    qemu_plan = plan["qemu"]
    add = next(c for c in qemu_plan["hotplug"] if c["execute"] == "device_add"
               and c["arguments"]["driver"] == "vfio-pci")
    device = add["arguments"]["id"]
    windows = plan["devices"][0]["windows"]
    sum_only = ["-device", f"pcie-root-port,id=sumonly,bus=pcie.0,chassis=30,slot=30,"
                           f"pref64-reserve={windows['pref64'] + windows['pref32']}"]
    guest = L2Linux(qemu, [*qemu_plan["argv"], *sum_only], config, "hot256")
    guest.step("boot", None, ["L2-READY"], 900)
    spare = next(d for d in plan["devices"] if d["kind"] == "pcie-ports")["spare"][0]
    for name, bus in (("spare", spare), ("sum-only", "sumonly"), ("plan", add["arguments"]["bus"])):
        arguments = {**add["arguments"], "bus": bus, "x-no-mmap": True}
        guest.step(name, {"execute": "device_add", "arguments": arguments}, ["L2-BAR 0000:"], 300)
        if name != "plan":
            after = len(guest.messages)
            guest.send({"execute": "device_del", "arguments": {"id": device}})
            guest.steps[-1]["deleted"] = guest.wait_event("DEVICE_DELETED", device, 180, after=after)
    return guest.finish()


def cold_session(plan: Mapping[str, Any], config: Mapping[str, Any], qemu: str, name: str,
                 *, drop: str = "") -> dict[str, Any]:
    """A cold plan in a Linux L2 (``drop``: leave out the plan's option starting with that text)."""
    argv = list(plan["qemu"]["argv"])
    if drop:
        index = next(i for i, a in enumerate(argv) if a.startswith(drop))
        del argv[index - 1:index + 1]
    guest = L2Linux(qemu, no_mmap(argv), config, name)
    guest.step("boot", None, ["L2-READY"], 900)
    guest.step("settle", None, ["L2-BAR"], 60)
    result = guest.finish()
    result["dropped"] = drop
    return result


def gpu_scenario(config: Mapping[str, Any], result: dict[str, Any]) -> None:
    """Inside the GPU L1: bind the big-BAR and NUMA functions to vfio-pci, plan them, and give each
    plan to the host's QEMU: firmware-only L2s (SeaBIOS's PCI log, QEMU's PCI tree) and Linux L2s
    (the kernel assigns the BAR, or says it cannot). Results go into ``result`` as they come."""
    qemu = "qemu-system-x86_64"
    vmdev = vmdev_command()
    work = Path("/run/work")
    work.mkdir(exist_ok=True)
    functions = find_functions()
    result.update({"uname": os.uname().release, "functions": functions})
    result["bind"] = bind_to_vfio(list(functions.values()))
    facts = pci_facts()
    for bdf in functions.values():
        facts[bdf]["numa_node"] = (Path("/sys/bus/pci/devices") / bdf / "numa_node").read_text().strip()
        facts[bdf]["bars"] = pci_bars(bdf)
    result["pci"] = facts
    result["numa_online"] = Path("/sys/devices/system/node/online").read_text().strip()
    groups = {name: facts[bdf]["iommu_group"] for name, bdf in functions.items()}
    plans = result["plans"] = gpu_plans(vmdev, work, groups)
    sessions: dict[str, Any] = result.setdefault("l2", {})
    for name in ("cold256", "numa"):
        if plans[name]["plan"] is not None:
            sessions[name] = l2_session(qemu, no_mmap(plans[name]["plan"]["qemu"]["argv"]), [],
                                        Path(f"/run/seabios-{name}.log"))
    if plans["hot256"]["plan"] is not None:
        sessions["hot256"] = hot_session(plans["hot256"]["plan"], config, qemu)
    if plans["cold1t"]["plan"] is not None:
        sessions["cold1t"] = cold_session(plans["cold1t"]["plan"], config, qemu, "cold1t")
        sessions["cold1t-default-bits"] = cold_session(plans["cold1t"]["plan"], config, qemu, "cold1t-default",
                                                       drop="x86_64-cpu.phys-bits=")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guest", type=Path, required=True, help="run the L1 scenario, write results here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    chosen = args.guest / SCENARIO
    setup: dict[str, Any] = json.loads(chosen.read_text()) if chosen.is_file() else {"scenario": "vfio",
                                                                                      "config": {}}
    result: dict[str, Any] = {}
    try:
        if setup["scenario"] == "gpu":
            gpu_scenario(setup["config"], result)
        else:
            result = guest_scenario()
    except Exception as exc:  # noqa: BLE001 - the host test reports it
        import traceback

        result.update({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    result["scenario_seconds"] = round(time.monotonic() - started, 2)
    (args.guest / RESULT).write_text(json.dumps(result, indent=1))
    print("VF-RESULT " + shlex.quote(str(args.guest / RESULT)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
