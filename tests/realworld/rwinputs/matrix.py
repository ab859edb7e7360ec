"""The real-world matrix: every engine spec x every Kata configuration x hot and cold plug.

A :class:`Config` is a rendered Kata file (``go/amd64/configuration-qemu.toml``) or a *variant*:
a rendered file with a few keys edited (``variants``), for keys whose shipped value gives Kata
nothing to do (``enable_iommu = false``...) so that what vmdev does with them shows. Variants are
written next to the specs at run time, never committed; each names its base file and its edits.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from rwinputs import kata
from rwinputs.engines import EngineSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


@attrs.frozen
class Config:
    """A Kata configuration file and what the tests need to know about it."""

    key: str  # corpus key, or "variant/<name>"
    path: Path
    section: str  # X of [hypervisor.X]
    flavour: str  # "go" or "runtime-rs"
    arch: str
    edits: tuple[tuple[str, Any], ...] = ()
    base: str = ""  # a variant's base corpus key

    @property
    def doc(self) -> Mapping[str, Any]:
        return _load_toml(self.path)

    @property
    def options(self) -> Mapping[str, Any]:
        """The ``[hypervisor.X]`` table."""
        tables: Mapping[str, Any] = self.doc.get("hypervisor", {})
        table: Mapping[str, Any] = tables.get(self.section, {})
        return table

    @property
    def runtime(self) -> Mapping[str, Any]:
        table: Mapping[str, Any] = self.doc.get("runtime", {})
        return table

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


_TOML_CACHE: dict[Path, Mapping[str, Any]] = {}


def _load_toml(path: Path) -> Mapping[str, Any]:
    if path not in _TOML_CACHE:
        _TOML_CACHE[path] = tomllib.loads(path.read_text(encoding="utf-8"))
    return _TOML_CACHE[path]


def corpus_configs() -> list[Config]:
    return [Config(c.key, c.path, c.hypervisor, c.flavour, c.arch) for c in kata.corpus()]


@attrs.frozen
class Spec:
    name: str
    engine: str
    command: str
    path: Path

    @property
    def doc(self) -> Mapping[str, Any]:
        data: Mapping[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    @property
    def devices(self) -> list[Mapping[str, Any]]:
        linux: Mapping[str, Any] = self.doc.get("linux") or {}
        return list(linux.get("devices") or [])

    def has_block_device(self) -> bool:
        return any(d.get("type") == "b" for d in self.devices)

    @classmethod
    def of(cls, spec: EngineSpec) -> Spec:
        return cls(spec.name, spec.engine, spec.command, spec.path)


@attrs.frozen
class Combo:
    spec: Spec
    config: Config
    hot: bool

    @property
    def id(self) -> str:
        return f"{self.spec.name}|{self.config.key}|{'hot' if self.hot else 'cold'}"

    def argv(self) -> list[str]:
        return ["plan", "--config", str(self.config.path), "--format", "json",
                *(["--hotplug"] if self.hot else []), str(self.spec.path)]


@attrs.frozen
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def plan(self) -> dict[str, Any] | None:
        if self.rc != 0:
            return None
        try:
            data: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError:
            return None
        return data

    @property
    def error(self) -> str:
        """The last stderr line (the error line when the outcome is clean)."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


# --- variants ------------------------------------------------------------------------------------
@attrs.frozen
class Variant:
    name: str
    base: str  # corpus key
    edits: tuple[tuple[str, Any], ...]  # (key, value) in the base's [hypervisor.X] ("runtime.k": [runtime])
    specs: tuple[str, ...]  # the engine specs it runs with
    why: str


_NO_SHARE: Final = ("shared_fs", "none")  # so that the virtio-fs refusal does not mask the key under test
_BLOCK_SPECS: Final = ("podman-loop", "podman-ro", "runc-spec")
QEMU_GO: Final = "go/amd64/configuration-qemu.toml"
QEMU_GO_S390X: Final = "go/s390x/configuration-qemu.toml"
CLH_GO: Final = "go/amd64/configuration-clh.toml"
CLH_RS: Final = "runtime-rs/amd64/configuration-clh-runtime-rs.toml"
FC_RS: Final = "runtime-rs/amd64/configuration-rs-fc.toml"
QEMU_RS: Final = "runtime-rs/amd64/configuration-qemu-runtime-rs.toml"

VARIANTS: Final = (
    Variant("qemu-no-share", QEMU_GO, (_NO_SHARE,), _BLOCK_SPECS,
            "the stock QEMU file without the virtio-fs share: what the memory/bridge keys do"),
    Variant("qemu-enable_iommu", QEMU_GO, (_NO_SHARE, ("enable_iommu", True)), _BLOCK_SPECS,
            "enable_iommu = true"),
    Variant("qemu-s390x-enable_iommu_platform", QEMU_GO_S390X, (_NO_SHARE, ("enable_iommu_platform", True)),
            _BLOCK_SPECS, "enable_iommu_platform = true on s390x (CCW devices)"),
    Variant("qemu-enable_iothreads", QEMU_GO, (_NO_SHARE, ("enable_iothreads", True)), _BLOCK_SPECS,
            "enable_iothreads = true with virtio-scsi"),
    Variant("qemu-indep_iothreads", QEMU_GO,
            (_NO_SHARE, ("block_device_driver", "virtio-blk"), ("enable_iothreads", True), ("indep_iothreads", 2)),
            _BLOCK_SPECS, "indep_iothreads = 2 with virtio-blk and enable_iothreads"),
    Variant("qemu-sector-sizes", QEMU_GO,
            (_NO_SHARE, ("block_device_driver", "virtio-blk"), ("block_device_logical_sector_size", 4096),
             ("block_device_physical_sector_size", 4096)),
            _BLOCK_SPECS, "block_device_{logical,physical}_sector_size = 4096 with virtio-blk"),
    Variant("qemu-default_maxmemory", QEMU_GO, (_NO_SHARE, ("default_maxmemory", 4096), ("memory_slots", 4)),
            _BLOCK_SPECS, "default_maxmemory = 4096, memory_slots = 4"),
    Variant("qemu-enable_hugepages", QEMU_GO, (_NO_SHARE, ("enable_hugepages", True)), _BLOCK_SPECS,
            "enable_hugepages = true"),
    Variant("qemu-default_bridges", QEMU_GO, (_NO_SHARE, ("default_bridges", 3)), _BLOCK_SPECS,
            "default_bridges = 3"),
    Variant("qemu-virtio-9p", QEMU_GO, (("shared_fs", "virtio-9p"),), _BLOCK_SPECS, 'shared_fs = "virtio-9p"'),
    Variant("qemu-rs-virtio-blk-pci", QEMU_RS, (_NO_SHARE, ("block_device_driver", "virtio-blk-pci")),
            _BLOCK_SPECS, 'runtime-rs driver name block_device_driver = "virtio-blk-pci"'),
    Variant("qemu-rs-virtio-pmem", QEMU_RS, (_NO_SHARE, ("block_device_driver", "virtio-pmem")),
            _BLOCK_SPECS, 'runtime-rs driver name block_device_driver = "virtio-pmem"'),
    Variant("qemu-confidential", QEMU_GO, (_NO_SHARE, ("confidential_guest", True)), _BLOCK_SPECS,
            "confidential_guest = true on a host without TDX/SEV/SE"),
    Variant("qemu-vfio_mode", QEMU_GO, (_NO_SHARE, ("runtime.vfio_mode", "vfio")), _BLOCK_SPECS,
            '[runtime] vfio_mode = "vfio"'),
    Variant("clh-no-share", CLH_GO, (_NO_SHARE,), _BLOCK_SPECS,
            "the stock Cloud Hypervisor file without the virtio-fs share: the disk bodies"),
    Variant("clh-enable_iommu", CLH_GO, (_NO_SHARE, ("enable_iommu", True)), _BLOCK_SPECS, "enable_iommu = true"),
    Variant("clh-disk_rate_limiter", CLH_GO,
            (_NO_SHARE, ("disk_rate_limiter_bw_max_rate", 8_000_000), ("disk_rate_limiter_bw_one_time_burst", 800_000),
             ("disk_rate_limiter_ops_max_rate", 1000), ("disk_rate_limiter_ops_one_time_burst", 100)),
            _BLOCK_SPECS, "disk_rate_limiter_* set"),
    Variant("clh-rs-no-share", CLH_RS, (_NO_SHARE,), _BLOCK_SPECS,
            "the stock runtime-rs Cloud Hypervisor file without the share: virtio-blk-pci, num_queues, queue_size"),
    Variant("clh-rs-queues-rate", CLH_RS,
            (_NO_SHARE, ("num_queues", 2), ("queue_size", 256), ("disk_rate_limiter_bw_max_rate", 8_000_000),
             ("disk_rate_limiter_ops_max_rate", 1000)),
            _BLOCK_SPECS, "runtime-rs Cloud Hypervisor with num_queues = 2, queue_size = 256 and disk limits"),
    Variant("fc-rs-disk_rate_limiter", FC_RS,
            (("disk_rate_limiter_bw_max_rate", 8_000_000), ("disk_rate_limiter_ops_max_rate", 1000)),
            _BLOCK_SPECS, "runtime-rs Firecracker with disk limits"),
)

_KEY_LINE = re.compile(r"^(#\s*)?(?P<key>[A-Za-z0-9_]+)\s*=")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def apply_edits(text: str, section: str, edits: Iterable[tuple[str, Any]]) -> str:
    """``text`` with each ``key = value`` set in ``[hypervisor.<section>]`` (``runtime.key``: in
    ``[runtime]``): an existing (or commented-out) line is replaced, else one is added at the top
    of the table. Everything else stays byte for byte."""
    lines = text.splitlines(keepends=True)
    for dotted, value in edits:
        table, _, key = dotted.rpartition(".")
        header = "[runtime]" if table == "runtime" else f"[hypervisor.{section}]"
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        new = f"{key} = {_toml_value(value)}\n"
        found = [i for i in range(start + 1, end) if (m := _KEY_LINE.match(lines[i].strip())) and m["key"] == key]
        live = [i for i in found if not lines[i].lstrip().startswith("#")]
        if live:
            lines[live[0]] = new
        elif found:
            lines[found[-1]] = new
        else:
            lines.insert(start + 1, new)
    return "".join(lines)


def write_variants(out: Path, variants: Sequence[Variant] = VARIANTS) -> list[tuple[Variant, Config]]:
    out.mkdir(parents=True, exist_ok=True)
    by_key = {c.key: c for c in corpus_configs()}
    written = []
    for variant in variants:
        base = by_key[variant.base]
        path = out / f"{variant.name}.toml"
        path.write_text(apply_edits(base.path.read_text(encoding="utf-8"), base.section, variant.edits),
                        encoding="utf-8")
        config = Config(f"variant/{variant.name}", path, base.section, base.flavour, base.arch,
                        edits=variant.edits, base=base.key)
        for key, value in variant.edits:
            table, _, name = key.rpartition(".")
            got = (config.runtime if table == "runtime" else config.options).get(name)
            if got != value:
                raise AssertionError(f"variant {variant.name}: {key} is {got!r} after the edit, not {value!r}")
        written.append((variant, config))
    return written
