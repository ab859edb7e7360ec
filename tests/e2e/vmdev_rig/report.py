"""Parse the guest's serial-console reports (printed by init.sh) into typed dataclasses.

A report is the block of lines between ``QH-REPORT-BEGIN <tag>`` and ``QH-REPORT-END <tag>``.
Each line is ``<kind> [<name>] key=value ...`` with whitespace-free values, for example::

    pci 0000:00:01.0 vendor=0x1af4 device=0x1001 class=0x010000 driver=virtio-pci
    block vda size512=131072 ro=0 serial=SER1 hctl= wwid= lbs=512 marker=QHDISK1
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BEGIN = "QH-REPORT-BEGIN"
END = "QH-REPORT-END"
_BEGIN_RE = re.compile(BEGIN + r" (\S+)")
_END_RE = re.compile(END + r" (\S+)")


@dataclass(frozen=True)
class PciDevice:
    bdf: str  # e.g. "0000:00:01.0"
    vendor: int
    device: int
    class_code: int  # e.g. 0x010000
    driver: str  # "" when no driver is bound


@dataclass(frozen=True)
class VirtioDevice:
    name: str  # e.g. "virtio0"
    device: int  # virtio device id: 2 = block, 4 = rng, 8 = scsi, 0x1a = fs, 0x1b = pmem
    vendor: int
    driver: str
    parent: str  # PCI BDF, or e.g. "LNRO0005:00" for virtio-mmio


@dataclass(frozen=True)
class BlockDev:
    name: str  # guest name (vda, sda, pmem0, nvme0n1): never rely on it, match serial/marker
    size_bytes: int
    ro: bool
    serial: str
    hctl: str  # SCSI H:C:T:L, "" for non-SCSI disks
    wwid: str
    lbs: int  # logical block size
    marker: str  # leading printable bytes at offset 0 (up to 16)


@dataclass(frozen=True)
class ScsiDevice:
    hctl: str
    type: int
    vendor: str
    model: str
    rev: str


@dataclass(frozen=True)
class RngInfo:
    available: list[str] = field(default_factory=list)
    current: str = ""  # "none" when no hw rng is selected
    sample: str = ""  # hex of 8 bytes read from /dev/hwrng ("" if not read)


@dataclass(frozen=True)
class NdDevice:
    name: str  # e.g. "region0", "namespace0.0", "pfn0.0", "dax0.0"
    devtype: str
    size: int | None
    mode: str


@dataclass(frozen=True)
class Mount:
    target: str
    source: str
    fstype: str
    options: str


@dataclass(frozen=True)
class ShareResult:
    """Outcome of mounting a virtiofs / 9p tag (kernel arg qh.virtiofs= / qh.9p=)."""

    kind: str  # "virtiofs" or "9p"
    tag: str
    mounted: bool
    files: list[str]  # directory listing before the guest wrote from-guest.txt
    hello: str  # content of hello.txt, whitespace-cleaned
    write_ok: bool  # the guest wrote from-guest.txt ("hello-from-guest\n")
    error: str


@dataclass
class GuestReport:
    tag: str  # "boot" or "hotplug-<n>"
    pci: list[PciDevice] = field(default_factory=list)
    virtio: list[VirtioDevice] = field(default_factory=list)
    block: list[BlockDev] = field(default_factory=list)
    scsi: list[ScsiDevice] = field(default_factory=list)
    rng: RngInfo = field(default_factory=RngInfo)
    nd: list[NdDevice] = field(default_factory=list)
    pmem: list[str] = field(default_factory=list)  # /dev/pmemN and /dev/daxN.M paths
    mounts: list[Mount] = field(default_factory=list)
    virtiofs: list[ShareResult] = field(default_factory=list)
    ninep: list[ShareResult] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # lines the parser did not recognise

    def find_block(
        self, *, serial: str | None = None, marker: str | None = None
    ) -> BlockDev | None:
        """The first block device matching every given criterion, or None."""
        for dev in self.block:
            if (serial is None or dev.serial == serial) and (
                marker is None or dev.marker == marker
            ):
                return dev
        return None

    def block_by_serial(self, serial: str) -> BlockDev:
        return self._require(self.find_block(serial=serial), f"serial={serial}")

    def block_by_marker(self, marker: str) -> BlockDev:
        return self._require(self.find_block(marker=marker), f"marker={marker}")

    def virtio_by_driver(self, driver: str) -> list[VirtioDevice]:
        return [dev for dev in self.virtio if dev.driver == driver]

    def pci_by_id(self, vendor: int, device: int) -> list[PciDevice]:
        return [dev for dev in self.pci if dev.vendor == vendor and dev.device == device]

    def share(self, tag: str) -> ShareResult:
        found = next((s for s in (*self.virtiofs, *self.ninep) if s.tag == tag), None)
        if found is None:
            raise LookupError(f"report {self.tag!r} has no virtiofs/9p line for tag {tag!r}")
        return found

    def _require(self, dev: BlockDev | None, what: str) -> BlockDev:
        if dev is None:
            have = ", ".join(f"{d.name}(serial={d.serial} marker={d.marker})" for d in self.block)
            raise LookupError(
                f"report {self.tag!r} has no block device with {what}; it has: {have or 'none'}"
            )
        return dev


def parse_reports(text: str) -> list[GuestReport]:
    """Every complete report in ``text`` (boot, then each hotplug snapshot), in order."""
    reports: list[GuestReport] = []
    current: GuestReport | None = None
    for raw in text.splitlines():
        line = raw.replace("\r", "").strip()
        begin = _BEGIN_RE.search(line)
        if begin:
            current = GuestReport(tag=begin.group(1))
            continue
        if current is None:
            continue
        end = _END_RE.search(line)
        if end:
            if end.group(1) == current.tag:
                reports.append(current)
            current = None
        elif line:
            _add_line(current, line)
    return reports


def parse_report(text: str, tag: str = "boot") -> GuestReport:
    """The last complete report called ``tag``; raises ValueError if there is none."""
    found = [r for r in parse_reports(text) if r.tag == tag]
    if not found:
        raise ValueError(f"no complete {BEGIN} {tag} ... {END} {tag} block in the serial output")
    return found[-1]


def _add_line(report: GuestReport, line: str) -> None:
    kind, name, values = _split(line)
    if kind == "pci":
        report.pci.append(
            PciDevice(
                name,
                _int(values, "vendor"),
                _int(values, "device"),
                _int(values, "class"),
                values.get("driver", ""),
            )
        )
    elif kind == "virtio":
        report.virtio.append(
            VirtioDevice(
                name,
                _int(values, "device"),
                _int(values, "vendor"),
                values.get("driver", ""),
                values.get("parent", ""),
            )
        )
    elif kind == "block":
        report.block.append(_block(name, values))
    elif kind == "scsi":
        report.scsi.append(
            ScsiDevice(
                name,
                _int(values, "type"),
                values.get("vendor", ""),
                values.get("model", ""),
                values.get("rev", ""),
            )
        )
    elif kind == "rng":
        report.rng = _rng(report.rng, values)
    elif kind == "nd":
        size = values.get("size", "")
        report.nd.append(
            NdDevice(
                name, values.get("devtype", ""), int(size) if size else None, values.get("mode", "")
            )
        )
    elif kind == "pmemdev":
        report.pmem.append(name)
    elif kind == "mount":
        report.mounts.append(
            Mount(name, values.get("source", ""), values.get("type", ""), values.get("opts", ""))
        )
    elif kind in ("virtiofs", "9p"):
        (report.virtiofs if kind == "virtiofs" else report.ninep).append(_share(kind, name, values))
    else:
        report.unknown.append(line)


def _split(line: str) -> tuple[str, str, dict[str, str]]:
    """``kind [name] k=v ...`` -> (kind, name, {k: v})."""
    tokens = line.split()
    kind, rest = tokens[0], tokens[1:]
    name = rest.pop(0) if rest and "=" not in rest[0] else ""
    values = dict(token.partition("=")[::2] for token in rest)
    return kind, name, values


def _int(values: dict[str, str], key: str, default: int = 0) -> int:
    text = values.get(key, "")
    try:
        return int(text, 0) if text else default
    except ValueError:  # e.g. "010" (base 0 rejects leading zeros)
        return int(text, 10) if text.isdigit() else default


def _block(name: str, values: dict[str, str]) -> BlockDev:
    return BlockDev(
        name=name,
        size_bytes=_int(values, "size512") * 512,
        ro=values.get("ro") == "1",
        serial=values.get("serial", ""),
        hctl=values.get("hctl", ""),
        wwid=values.get("wwid", ""),
        lbs=_int(values, "lbs"),
        marker=values.get("marker", ""),
    )


def _rng(previous: RngInfo, values: dict[str, str]) -> RngInfo:
    if "sample" in values:
        return RngInfo(previous.available, previous.current, values["sample"])
    available = [name for name in values.get("available", "").split(",") if name]
    return RngInfo(available, values.get("current", ""), previous.sample)


def _share(kind: str, tag: str, values: dict[str, str]) -> ShareResult:
    files = [name for name in values.get("files", "").split(",") if name]
    return ShareResult(
        kind,
        tag,
        values.get("mounted") == "1",
        files,
        values.get("hello", ""),
        values.get("write") == "1",
        values.get("error", ""),
    )
