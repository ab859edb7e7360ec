"""Why a real-world combination does not work today: the known causes, predicted from the inputs.

Each :class:`Cause` says from the inputs alone (:meth:`Cause.applies`) whether it should show in
a combination, and how it shows:

* a *refusal* cause makes ``vmdev plan`` exit 1 with an error line its ``symptom`` matches;
* an *ignored-key* cause lets vmdev plan while a Kata key is silently not honoured: ``check``
  reads the plan and says what Kata would have put there and is missing. A one-line refusal that
  names the key (``names``) honours the key too: vmdev may refuse what it does not implement. So
  does a plan note that names it (``"notes"`` in the plan: vmdev says where and why its plan
  differs from Kata's): the key is then not *silently* ignored.

:func:`diagnose` compares prediction and observation. The tests mark each combination with
``xfail(strict=True, raises=KnownFailure)`` keyed by its predicted causes, and raise
:class:`KnownFailure` only when exactly the predicted causes are observed; any other difference
(an unknown failure, or a predicted cause that no longer shows: a fix landed) is a plain failure.

The Kata behaviour each check encodes is Kata 4.1.0's (virtcontainers/qemu*.go, clh.go, fc.go, the
govmm builder, and runtime-rs's hypervisor crate); tests/realworld/README.md lists it key by key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from rwinputs import qemuargs
from rwinputs.matrix import Combo, Outcome

Check = Callable[[Combo, Mapping[str, Any]], "str | None"]


class KnownFailure(AssertionError):
    """Raised by a test when exactly its predicted causes are observed (the xfail's ``raises``)."""


@attrs.frozen
class Cause:
    key: str
    title: str
    applies: Callable[[Combo], bool]
    symptom: re.Pattern[str] | None = None  # refusal causes
    check: Check | None = None  # ignored-key causes
    names: tuple[str, ...] = ()  # the config keys a refusal may name to honour the key
    #: the commit that fixed it: then it is a regression check (no marker; showing again fails)
    fixed_in: str = ""

    @property
    def kind(self) -> str:
        return "refusal" if self.symptom is not None else "ignored"

    @property
    def failing(self) -> bool:
        """Known to fail today (the combinations it applies to carry its xfail marker)."""
        return not self.fixed_in


# --- predicates -----------------------------------------------------------------------------------
def _qemu(c: Combo) -> bool:
    return c.config.section == "qemu"


def _clh(c: Combo) -> bool:
    return c.config.section == "clh"


def _go(c: Combo) -> bool:
    return c.config.flavour == "go"


def _confidential(c: Combo) -> bool:
    return bool(c.config.option("confidential_guest", False))


def _q35(c: Combo) -> bool:
    return str(c.config.option("machine_type", "q35")).startswith(("q35", "pc", "virt"))


def _ccw(c: Combo) -> bool:
    return str(c.config.option("machine_type", "")).startswith("s390-ccw")


def _int(c: Combo, key: str) -> int:
    value = c.config.option(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def host_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Kata's host memory (katautils: memory.TotalMemory(); kata-types: sysinfo) in MiB."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


# --- plan readers ---------------------------------------------------------------------------------
def _part(plan: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    part: Mapping[str, Any] = plan.get(key) or {}
    return part


def _clh_disks(plan: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    part = _part(plan, "cloud_hypervisor")
    disks = list((part.get("vm_config") or {}).get("disks") or [])
    disks += [r.get("body") or {} for r in part.get("hotplug") or [] if str(r.get("path", "")).endswith("vm.add-disk")]
    return disks


def _fc_drives(plan: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    part = _part(plan, "firecracker")
    reqs = list(part.get("requests") or []) + list(part.get("hotplug") or [])
    return [r.get("body") or {} for r in reqs if str(r.get("path", "")).startswith("/drives/")]


# --- the ignored-key checks (what Kata emits) -----------------------------------------------------
def _check_memory_slots(c: Combo, plan: Mapping[str, Any]) -> str | None:
    # Go: slots = memory_slots or 10 (katautils defaultMemSlots); runtime-rs: memory_slots as set
    want = _int(c, "memory_slots") or (10 if _go(c) else 0)
    mem = qemuargs.memory(_part(plan, "qemu").get("argv") or [])
    if want and mem.get("slots") != str(want):
        return f"Kata: -m {mem.get('size', '?')},slots={want},maxmem=...; vmdev: -m {','.join(f'{k}={v}' for k, v in mem.items())}"
    return None


def _kata_maxmem(c: Combo) -> int:
    """Kata's maxmem in MiB: default_maxmemory, 0 or more than the host has meaning the host's memory
    (katautils defaultMaxMemSz, kata-types adjust_config); the Go runtime on amd64 and arm64 adds
    memory_offset and 1024 MiB for its image's NVDIMM (genericMemoryTopology), not on s390x."""
    host = host_memory_mib()
    value = _int(c, "default_maxmemory")
    base = host if value == 0 or value > host else value
    if _go(c) and not _ccw(c):
        base += _int(c, "memory_offset") + 1024
    return base


def _check_maxmem(c: Combo, plan: Mapping[str, Any]) -> str | None:
    want = _kata_maxmem(c)
    mem = qemuargs.memory(_part(plan, "qemu").get("argv") or [])
    got = qemuargs.mib(mem.get("maxmem", ""))
    if got != want:
        return (f"Kata: maxmem={want}M (default_maxmemory {_int(c, 'default_maxmemory')}, host "
                f"{host_memory_mib()} MiB); vmdev: maxmem={mem.get('maxmem')}")
    return None


def _bridges_expected(c: Combo) -> int:
    value = _int(c, "default_bridges")
    if _go(c):
        return 1 if value == 0 else min(value, 5)  # katautils defaultBridges(): 0 -> 1, at most 5
    return min(value, 5)  # kata-types: at most MAX_BRIDGE_SIZE (5); 0 -> none


def _nested_bridges(c: Combo) -> bool:
    """q35 with a firmware: each pcie-pci-bridge sits behind its own root port (Go: whenever a
    firmware is set; runtime-rs: not for a confidential guest)."""
    q35 = str(c.config.option("machine_type", "q35")).startswith("q35")
    return q35 and bool(c.config.option("firmware", "")) and (_go(c) or not _confidential(c))


def _rs_confidential_firmware(c: Combo) -> bool:
    """runtime-rs, q35, a firmware and a confidential guest: plain pci-bridges, where the Go runtime
    (and vmdev) nest them behind root ports."""
    q35 = str(c.config.option("machine_type", "q35")).startswith("q35")
    return not _go(c) and q35 and _confidential(c) and bool(c.config.option("firmware", ""))


def _check_bridges(c: Combo, plan: Mapping[str, Any]) -> str | None:
    qemu = _part(plan, "qemu")
    driver = "pcie-pci-bridge" if _nested_bridges(c) else "pci-bridge"
    have = {d.get("id") for d in qemuargs.devices(qemu, hotplug=False) if d.get("driver") == driver}
    want = {f"pci-bridge-{i}" for i in range(_bridges_expected(c))}
    if not want <= have:
        return f"Kata: -device {driver} id={', '.join(sorted(want))}; vmdev: {sorted(x for x in have if x) or 'none'}"
    return None


def _check_qemu_iommu(c: Combo, plan: Mapping[str, Any]) -> str | None:
    qemu = _part(plan, "qemu")
    iommu = [d for d in qemuargs.devices(qemu, hotplug=False) if d.get("driver") == "intel-iommu"]
    want = {"intremap": "on", "device-iotlb": "on", "caching-mode": "on"}
    ok = any(all(d.get(k) == v for k, v in want.items()) for d in iommu)
    split = qemuargs.machine(qemu.get("argv") or []).get("kernel_irqchip") == "split"
    if not (ok and split):
        return "Kata: -device intel-iommu,intremap=on,device-iotlb=on,caching-mode=on and -machine ...,kernel_irqchip=split"
    return None


def _check_clh_iommu(c: Combo, plan: Mapping[str, Any]) -> str | None:
    """clh.go: disk.SetIommu / device.SetIommu(clh.config.IOMMU) on every disk and device."""
    part = _part(plan, "cloud_hypervisor")
    items = _clh_disks(plan) + list((part.get("vm_config") or {}).get("devices") or [])
    wrong = [i for i in items if i.get("iommu") is not True]
    if not items or wrong:
        return f"Kata: iommu: true on every disk and device; vmdev: {len(wrong) or 'no disk or device'} without"
    return None


def _check_clh_rng_iommu(c: Combo, plan: Mapping[str, Any]) -> str | None:
    """clh.go: vmconfig.Rng.SetIommu(clh.config.IOMMU)."""
    rng = (_part(plan, "cloud_hypervisor").get("vm_config") or {}).get("rng")
    if not isinstance(rng, Mapping) or rng.get("iommu") is not True:
        return f"Kata: rng iommu: true; vmdev: {rng}"
    return None


_CCW_IOMMU_PLATFORM = ("virtio-rng-ccw", "virtio-scsi-ccw", "vhost-user-fs-ccw", "virtio-net-ccw",
                       "virtio-serial-ccw", "vhost-vsock-ccw", "virtio-9p-ccw")


def _check_iommu_platform(c: Combo, plan: Mapping[str, Any]) -> str | None:
    devs = [d for d in qemuargs.devices(_part(plan, "qemu"), hotplug=c.hot) if d.get("driver") in _CCW_IOMMU_PLATFORM]
    wrong = [str(d.get("driver")) for d in devs if d.get("iommu_platform") != "on"]
    if wrong:
        return f"Kata: iommu_platform=on on {', '.join(_CCW_IOMMU_PLATFORM)}; vmdev: without on {', '.join(wrong)}"
    return None


def _check_iothreads(c: Combo, plan: Mapping[str, Any]) -> str | None:
    qemu = _part(plan, "qemu")
    threads = {o.get("id") for o in qemuargs.objects(qemu, hotplug=c.hot) if o.get("qom-type") == "iothread"}
    scsi = [d for d in qemuargs.devices(qemu, hotplug=c.hot) if str(d.get("driver", "")).startswith("virtio-scsi")]
    if not scsi or any(d.get("iothread") not in threads for d in scsi):
        return "Kata: -object iothread,id=iothread-<hex16> and -device virtio-scsi-pci,...,iothread=iothread-<hex16>"
    return None


def _check_indep_iothreads(c: Combo, plan: Mapping[str, Any]) -> str | None:
    qemu = _part(plan, "qemu")
    n = _int(c, "indep_iothreads")
    threads = {o.get("id") for o in qemuargs.objects(qemu, hotplug=c.hot) if o.get("qom-type") == "iothread"}
    want = {f"indep_iothread_{i}" for i in range(n)}
    problems = []
    if not want <= threads:
        problems.append(f"-object iothread,id={', '.join(sorted(want))}")
    if c.config.option("enable_iothreads") and c.spec.has_block_device():
        blk = [d for d in qemuargs.devices(qemu, hotplug=c.hot) if d.get("driver") == "virtio-blk-pci"]
        if any(d.get("iothread") != "indep_iothread_0" for d in blk):
            problems.append("virtio-blk-pci ...,iothread=indep_iothread_0")
    return ("Kata: " + " and ".join(problems)) if problems else None


def _check_sector_sizes(c: Combo, plan: Mapping[str, Any]) -> str | None:
    logical, physical = _int(c, "block_device_logical_sector_size"), _int(c, "block_device_physical_sector_size")
    blk = [d for d in qemuargs.devices(_part(plan, "qemu"), hotplug=c.hot)
           if str(d.get("driver", "")).startswith("virtio-blk")]
    want = {k: str(v) for k, v in (("logical_block_size", logical), ("physical_block_size", physical)) if v}
    wrong = [d for d in blk if any(d.get(k) != v for k, v in want.items())]
    if not blk or wrong:
        return f"Kata: virtio-blk device_add with {', '.join(f'{k}={v}' for k, v in want.items())}; vmdev: not on {len(wrong) or 'any'} disk"
    return None


def _revert_bytes(num: int) -> int:
    """Kata Go's utils.RevertBytes (decimal thousands to binary)."""
    a, b = divmod(num, 1000)
    return num if a == 0 else 1024 * _revert_bytes(a) + b


def _rate_limiter_expected(c: Combo) -> dict[str, dict[str, int]]:
    bw, bw_burst = _int(c, "disk_rate_limiter_bw_max_rate"), _int(c, "disk_rate_limiter_bw_one_time_burst")
    ops, ops_burst = _int(c, "disk_rate_limiter_ops_max_rate"), _int(c, "disk_rate_limiter_ops_one_time_burst")
    if _go(c):  # clh.go getDiskRateLimiterConfig: bits/s -> bytes/s
        bw, bw_burst = _revert_bytes(bw // 8), _revert_bytes(bw_burst // 8)
    out: dict[str, dict[str, int]] = {}
    for name, size, burst in (("bandwidth", bw, bw_burst), ("ops", ops, ops_burst)):
        if size:
            out[name] = {"size": size, "refill_time": 1000, **({"one_time_burst": burst} if burst else {})}
    return out


def _check_rate_limiter(c: Combo, plan: Mapping[str, Any]) -> str | None:
    want = _rate_limiter_expected(c)
    field, bodies = (("rate_limiter_config", _clh_disks(plan)) if _clh(c) else ("rate_limiter", _fc_drives(plan)))

    def matches(got: Any) -> bool:
        return isinstance(got, Mapping) and all(
            isinstance(got.get(k), Mapping) and all(got[k].get(f) == v for f, v in bucket.items())
            for k, bucket in want.items())

    wrong = [b for b in bodies if not matches(b.get(field))]
    if not bodies or wrong:
        return f"Kata: {field} {want} on every disk; vmdev: {[b.get(field) for b in wrong] or 'no disk'}"
    return None


def _check_clh_queues(c: Combo, plan: Mapping[str, Any]) -> str | None:
    if _go(c):  # clh.go: one queue per vCPU, queue size 1024, whatever the keys say
        want = {"num_queues": _int(c, "default_vcpus") or 1, "queue_size": 1024}
    else:  # runtime-rs: the keys (kata-types defaults 1 and 128)
        want = {"num_queues": _int(c, "num_queues") or 1, "queue_size": _int(c, "queue_size") or 128}
    disks = _clh_disks(plan)
    wrong = [{k: d.get(k) for k in want} for d in disks if any(d.get(k) != v for k, v in want.items())]
    if not disks or wrong:
        return f"Kata: {want} on every disk; vmdev: {wrong or 'no disk'}"
    return None


def _check_hugepages(c: Combo, plan: Mapping[str, Any]) -> str | None:
    qemu = _part(plan, "qemu")
    backends = {o.get("id") for o in qemuargs.objects(qemu, hotplug=False)
                if o.get("qom-type") == "memory-backend-file" and o.get("mem-path") == "/dev/hugepages"}
    argv = qemu.get("argv") or []
    used = {o.props.get("memdev") for o in qemuargs.options(argv) if o.name == "-numa"}
    used.add(qemuargs.machine(argv).get("memory-backend"))
    if not backends & used:
        return ("Kata: -object memory-backend-file,id=dimm1,size=<mem>M,mem-path=/dev/hugepages "
                "-numa node,memdev=dimm1")
    return None


def _check_confidential(c: Combo, plan: Mapping[str, Any]) -> str | None:
    machine = qemuargs.machine(_part(plan, "qemu").get("argv") or [])
    if "confidential-guest-support" not in machine:
        return ("Kata: refuses on a host without TDX/SEV-SNP/SE ('This system doesn't support Confidential "
                "Computing (Guest Protection)'); vmdev plans an ordinary VM")
    return None


def _check_9p(c: Combo, plan: Mapping[str, Any]) -> str | None:
    devs = [d for d in qemuargs.devices(_part(plan, "qemu"), hotplug=False)
            if str(d.get("driver", "")).startswith("virtio-9p") and d.get("mount_tag") == "kataShared"]
    if not devs:
        return ("Kata: -device virtio-9p-pci,disable-modern=false,fsdev=extra-9p-kataShared,mount_tag=kataShared "
                "-fsdev local,id=extra-9p-kataShared,path=<sandbox share>,security_model=none,multidevs=remap; "
                "vmdev: no share at all")
    return None


def _block(c: Combo) -> bool:
    return c.spec.has_block_device()


_RATE_KEYS: Final = ("disk_rate_limiter_bw_max_rate", "disk_rate_limiter_ops_max_rate",
                     "disk_rate_limiter_bw_one_time_burst", "disk_rate_limiter_ops_one_time_burst")


def _rate_limited(c: Combo) -> bool:
    return bool(_int(c, "disk_rate_limiter_bw_max_rate") or _int(c, "disk_rate_limiter_ops_max_rate"))


def plan_notes(plan: Any) -> list[str]:
    """Every note of the plan (any ``"notes"`` list, at any level)."""
    found: list[str] = []
    if isinstance(plan, Mapping):
        for key, value in plan.items():
            if key == "notes" and isinstance(value, list):
                found += [str(v) for v in value]
            else:
                found += plan_notes(value)
    elif isinstance(plan, list):
        for item in plan:
            found += plan_notes(item)
    return found


def _names_any(text: str, names: Iterable[str]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text) for n in names)


# --- the registry ---------------------------------------------------------------------------------
CAUSES: Final = (
    # refusals
    Cause("podman-filemode",
          "podman's fileMode carries the file-type bits (0o20666 = 8630): refused as out of range",
          lambda c: any(isinstance(d.get("fileMode"), int) and d["fileMode"] > 0o7777 for d in c.spec.devices),
          symptom=re.compile(r"fileMode.*must be between"), fixed_in="5983957"),
    Cause("virtio-fs-socket",
          "shared_fs = virtio-fs (Kata's default) is refused: vmdev demands virtio_fs_socket, which Kata's "
          "files do not have (Kata derives the socket from the sandbox)",
          lambda c: c.config.option("shared_fs") in ("virtio-fs", "virtio-fs-nydus"),
          symptom=re.compile(r"virtio_fs_socket"), fixed_in="a1fd7d0"),
    Cause("rs-driver-names",
          "runtime-rs block_device_driver names (virtio-blk-pci, virtio-blk-mmio, virtio-pmem) are refused",
          lambda c: c.config.option("block_device_driver") in ("virtio-blk-pci", "virtio-blk-mmio", "virtio-pmem")
          and _block(c),
          symptom=re.compile(r"block_device_driver|block storage driver"), fixed_in="d703d39, f340254"),
    # ignored keys
    Cause("virtio-9p", "shared_fs = virtio-9p silently plans no share",
          lambda c: _qemu(c) and c.config.option("shared_fs") == "virtio-9p", check=_check_9p,
          names=("shared_fs", "virtio-9p"), fixed_in="a1fd7d0"),
    Cause("memory_slots", "memory_slots is ignored: no slots= on -m",
          lambda c: _qemu(c) and not _confidential(c), check=_check_memory_slots, names=("memory_slots",),
          fixed_in="89990a4 (s390x: a plan note)"),
    Cause("default_maxmemory", "default_maxmemory is ignored: no maxmem= on -m",
          lambda c: _qemu(c) and not _confidential(c), check=_check_maxmem, names=("default_maxmemory",),
          fixed_in="89990a4 (0: a plan note, not the host's memory)"),
    Cause("default_bridges", "default_bridges is ignored: no pci-bridge devices (q35)",
          lambda c: _qemu(c) and _q35(c) and _bridges_expected(c) > 0 and not _rs_confidential_firmware(c),
          check=_check_bridges, names=("default_bridges",), fixed_in="1c0fc21, 89990a4"),
    Cause("rs-confidential-bridges",
          "runtime-rs confidential q35 files with a firmware: vmdev nests the bridges behind root ports as the Go "
          "runtime does; runtime-rs plugs plain pci-bridges into pcie.0",
          lambda c: _qemu(c) and _bridges_expected(c) > 0 and _rs_confidential_firmware(c),
          check=_check_bridges, names=("default_bridges",), fixed_in="runtime-rs flavour follows runtime-rs"),
    Cause("enable_iommu", "enable_iommu is ignored (QEMU q35: no vIOMMU)",
          lambda c: c.config.option("enable_iommu") is True and _qemu(c) and _q35(c),
          check=_check_qemu_iommu, names=("enable_iommu",), fixed_in="89990a4"),
    Cause("clh-enable_iommu", "enable_iommu is ignored by Cloud Hypervisor disks (no iommu: true; Go runtime)",
          lambda c: c.config.option("enable_iommu") is True and _clh(c) and _go(c) and _block(c),
          check=_check_clh_iommu, names=("enable_iommu",), fixed_in="74cffaa"),
    Cause("clh-rng-enable_iommu", "enable_iommu is ignored by the Cloud Hypervisor rng (Go runtime)",
          lambda c: c.config.option("enable_iommu") is True and _clh(c) and _go(c),
          check=_check_clh_rng_iommu, names=("enable_iommu",), fixed_in="66af069"),
    Cause("enable_iommu_platform", "enable_iommu_platform is ignored on some CCW devices",
          lambda c: _qemu(c) and _ccw(c) and c.config.option("enable_iommu_platform") is True,
          check=_check_iommu_platform, names=("enable_iommu_platform",),
          fixed_in="e03b15c, 66af069 (no RNG on CCW, as Kata)"),
    Cause("enable_iothreads", "enable_iothreads is ignored (virtio-scsi controller)",
          lambda c: _qemu(c) and _go(c) and c.config.option("enable_iothreads") is True
          and c.config.option("block_device_driver") == "virtio-scsi" and _block(c),
          check=_check_iothreads, names=("enable_iothreads",), fixed_in="f340254"),
    Cause("indep_iothreads", "indep_iothreads is ignored",
          lambda c: _qemu(c) and _go(c) and _int(c, "indep_iothreads") > 0,
          check=_check_indep_iothreads, names=("indep_iothreads",), fixed_in="f340254, 89990a4"),
    Cause("block-sector-sizes", "block_device_logical/physical_sector_size are ignored",
          lambda c: _qemu(c) and _go(c) and _block(c) and c.config.option("block_device_driver") in
          ("virtio-blk", "virtio-blk-ccw")
          and bool(_int(c, "block_device_logical_sector_size") or _int(c, "block_device_physical_sector_size")),
          check=_check_sector_sizes,
          names=("block_device_logical_sector_size", "block_device_physical_sector_size"), fixed_in="f340254"),
    Cause("disk_rate_limiter", "disk_rate_limiter_* are ignored (Go Cloud Hypervisor)",
          lambda c: _block(c) and _clh(c) and _go(c) and _rate_limited(c),
          check=_check_rate_limiter, names=_RATE_KEYS, fixed_in="f340254"),
    Cause("rs-disk_rate_limiter",
          "runtime-rs disk_rate_limiter_* are converted as the Go runtime converts them (bits/s to bytes/s); "
          "runtime-rs passes the numbers through",
          lambda c: _block(c) and not _go(c) and c.config.section in ("clh", "firecracker") and _rate_limited(c),
          check=_check_rate_limiter, names=_RATE_KEYS, fixed_in="fc6fb89 (a plan note: Go's conversion kept)"),
    Cause("clh-disk-queues", "Cloud Hypervisor disk num_queues/queue_size (runtime-rs keys) are ignored",
          lambda c: _clh(c) and _block(c) and not _go(c), check=_check_clh_queues, names=("num_queues", "queue_size"),
          fixed_in="f340254"),
    Cause("clh-go-disk-queues",
          "Cloud Hypervisor disks get CH's defaults (1 queue of 128), not the Go runtime's (one queue per vCPU, "
          "queue size 1024)",
          lambda c: _clh(c) and _block(c) and _go(c), check=_check_clh_queues, names=("num_queues", "queue_size"),
          fixed_in="fc6fb89"),
    Cause("enable_hugepages", "enable_hugepages is ignored",
          lambda c: _qemu(c) and c.config.option("enable_hugepages") is True,
          check=_check_hugepages, names=("enable_hugepages",), fixed_in="89990a4"),
    Cause("confidential_guest", "confidential_guest = true is ignored: an ordinary VM is planned",
          lambda c: _qemu(c) and _confidential(c), check=_check_confidential, names=("confidential_guest",),
          fixed_in="89990a4 (a plan note: no encryption object)"),
)
BY_KEY: Final = {cause.key: cause for cause in CAUSES}


# --- diagnosis ------------------------------------------------------------------------------------
@attrs.frozen
class Diagnosis:
    predicted: tuple[str, ...]
    observed: tuple[str, ...]
    masked: tuple[str, ...]  # predicted, but hidden behind the refusal that was observed
    honoured: tuple[str, ...]  # predicted ignored-key causes the refusal names (a fix by refusal)
    unexplained: tuple[str, ...]  # failures no known cause explains
    noted: tuple[str, ...] = ()  # applying causes whose difference from Kata a plan note declares

    @property
    def expected(self) -> tuple[str, ...]:
        """The predicted causes that should show: neither masked nor honoured (refusal, note)."""
        return tuple(k for k in self.predicted if k not in self.masked and k not in self.honoured)

    @property
    def matches(self) -> bool:
        return not self.unexplained and set(self.observed) == set(self.expected)


def predict(combo: Combo) -> tuple[str, ...]:
    """The known-failing causes for ``combo`` (its xfail marker)."""
    return tuple(cause.key for cause in CAUSES if cause.failing and cause.applies(combo))


def applying(combo: Combo) -> tuple[str, ...]:
    """Every cause that applies, fixed ones included (their checks guard against regressions)."""
    return tuple(cause.key for cause in CAUSES if cause.applies(combo))


def diagnose(combo: Combo, outcome: Outcome, problems: Iterable[str] = ()) -> Diagnosis:
    """Compare the causes predicted for ``combo`` with what ``outcome`` shows.

    ``problems`` are the plan's validation problems (pre-flight, API schemas): unexplained."""
    predicted = predict(combo)
    unexplained = list(problems)
    observed: list[str] = []
    masked: list[str] = []
    honoured: list[str] = []
    noted: list[str] = []
    plan = outcome.plan
    if plan is not None:
        notes = plan_notes(plan)
        for key in applying(combo):
            cause = BY_KEY[key]
            problem = cause.check(combo, plan) if cause.check is not None else None
            if problem is not None and any(_names_any(note, cause.names) for note in notes):
                noted.append(key)
                if key in predicted:
                    honoured.append(key)
            elif problem is not None and cause.failing:
                observed.append(key)
            elif problem is not None:
                unexplained.append(f"regression of {key} (fixed in {cause.fixed_in}): {problem}")
    else:
        error = outcome.error
        refusals = [c.key for c in CAUSES if c.symptom is not None and c.symptom.search(error)]
        fixed = [k for k in refusals if not BY_KEY[k].failing]
        if fixed:
            unexplained.append(f"regression of {fixed[0]} (fixed in {BY_KEY[fixed[0]].fixed_in}): {error}")
            refusals = []
        named = [k for k in predicted if BY_KEY[k].check is not None and _names_any(error, BY_KEY[k].names)]
        if unexplained:
            masked = list(predicted)
        elif refusals:
            observed.append(refusals[0])
            masked = [k for k in predicted if k != refusals[0]]
        elif named:
            honoured = named
            masked = [k for k in predicted if k not in named]
        else:
            unexplained.append(f"refused: {error}")
            masked = list(predicted)
    return Diagnosis(tuple(predicted), tuple(observed), tuple(masked), tuple(honoured), tuple(unexplained),
                     tuple(noted))


def explain(combo: Combo, plan: Mapping[str, Any], key: str) -> str | None:
    """What an ignored-key cause's check says about ``plan`` (for reports)."""
    cause = BY_KEY[key]
    return cause.check(combo, plan) if cause.check is not None else None
