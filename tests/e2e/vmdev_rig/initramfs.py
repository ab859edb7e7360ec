"""Build the guest's initramfs (gzip'd newc cpio) in pure Python: no root, no cpio tool.

Contents: static busybox + applet symlinks, /dev/console and /dev/null nodes, /init (init.sh)
and the kernel modules needed, with their dependency closure (read from each module's ELF
``.modinfo`` ``depends=`` field), copied flat to /lib/modules with a ``load.order`` file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import elf
from .errors import INSTALL_HINT, RigSetupError
from .kernel import KernelInfo

# Drivers every guest gets. A name missing from the kernel (and not built in) is an error.
DEFAULT_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "virtio_rng",
    "nd_pmem",
    "nfit",
    "dax_pmem",
    "device_dax",
    "virtio_mmio",
    "virtiofs",
    "virtio_net",
    "virtio_pmem",
)
# Loaded when the kernel has them (the generic flavour has 9p; nvme is built into "cloud").
OPTIONAL_MODULES: tuple[str, ...] = ("nvme", "9p", "9pnet_virtio")
BUSYBOX = Path("/bin/busybox")
INIT_SCRIPT = Path(__file__).with_name("init.sh")
_BUILDER_VERSION = "1"


def normalize(name: str) -> str:
    """Kernel module names treat '-' and '_' alike."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class ModuleIndex:
    """The loadable and built-in modules of one unpacked kernel tree."""

    files: dict[str, Path]
    builtin: frozenset[str]

    @classmethod
    def scan(cls, modules_dir: Path) -> ModuleIndex:
        files = {
            normalize(p.name.removesuffix(".ko")): p
            for p in sorted((modules_dir / "kernel").rglob("*.ko"))
        }
        builtin_list = modules_dir / "modules.builtin"
        lines = builtin_list.read_text().split() if builtin_list.is_file() else []
        builtin = frozenset(normalize(Path(line).name.removesuffix(".ko")) for line in lines)
        return cls(files, builtin)

    def dependencies(self, name: str) -> list[str]:
        data = self.files[name].read_bytes()
        depends = elf.modinfo(data, str(self.files[name])).get("depends", [""])[0]
        return [normalize(dep) for dep in depends.split(",") if dep]


def module_closure(
    index: ModuleIndex, required: Iterable[str], optional: Iterable[str] = ()
) -> list[str]:
    """Loadable modules for ``required`` + available ``optional`` names, dependencies first."""
    wanted = [normalize(n) for n in required]
    missing = [n for n in wanted if n not in index.files and n not in index.builtin]
    if missing:
        raise RigSetupError(
            f"The guest kernel has no module {', '.join(missing)} (neither loadable nor built "
            f"in). Use a kernel flavour that has it (e.g. flavour='generic') or drop it from the "
            f"module list. If the kernel cache is damaged, delete it and run `{INSTALL_HINT}`."
        )
    wanted += [normalize(n) for n in optional if normalize(n) in index.files]
    order: list[str] = []
    for name in wanted:
        _visit(index, name, order, ())
    return order


def _visit(index: ModuleIndex, name: str, order: list[str], stack: tuple[str, ...]) -> None:
    if name in order or name not in index.files:  # done, or built in
        return
    if name in stack:
        raise RigSetupError(f"module dependency cycle: {' -> '.join((*stack, name))}")
    for dep in index.dependencies(name):
        _visit(index, dep, order, (*stack, name))
    order.append(name)


class _CpioWriter:
    """Accumulates a newc ("070701") cpio archive in memory."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._inode = 0

    def directory(self, path: str) -> None:
        self._entry(path, stat.S_IFDIR | 0o755, b"", nlink=2)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path: str, major: int, minor: int, mode: int) -> None:
        self._entry(path, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"", inode=0)
        return b"".join(self._chunks)

    def _entry(
        self,
        path: str,
        mode: int,
        data: bytes,
        *,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
        inode: int | None = None,
    ) -> None:
        self._inode += 1
        name = path.lstrip("/").encode() + b"\0"
        fields = (
            self._inode if inode is None else inode,
            mode,
            0,
            0,
            nlink,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(name),
            0,
        )
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._chunks += [header, name, _pad(len(header) + len(name)), data, _pad(len(data))]


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Applet names of a static busybox; raises RigSetupError if it is missing or dynamic."""
    try:
        data = busybox.read_bytes()
    except OSError as exc:
        raise _busybox_error(busybox, f"cannot read it ({exc.strerror})") from exc
    if not elf.is_static_executable(data, str(busybox)):
        raise _busybox_error(
            busybox, "it is dynamically linked (package busybox, not busybox-static, is installed)"
        )
    proc = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise _busybox_error(busybox, f"`{busybox} --list` exited {proc.returncode}")
    return [a for a in proc.stdout.split() if a and a != "busybox" and "/" not in a]


def _busybox_error(busybox: Path, problem: str) -> RigSetupError:
    return RigSetupError(
        f"The guest initramfs needs a statically linked busybox at {busybox}, but {problem}. "
        f"Fix: run `{INSTALL_HINT}` (installs busybox-static)."
    )


def build_initramfs(
    kernel: KernelInfo,
    cache_dir: Path,
    *,
    modules: Sequence[str] = DEFAULT_MODULES,
    optional_modules: Sequence[str] = OPTIONAL_MODULES,
    busybox: Path = BUSYBOX,
    init_script: Path = INIT_SCRIPT,
) -> Path:
    """Return the cached initramfs for these inputs, building it if needed."""
    init = init_script.read_bytes()
    key = _cache_key(kernel, modules, optional_modules, busybox, init)
    target = cache_dir / "initramfs" / f"{kernel.version}-{key}.img"
    if target.is_file():
        return target
    index = ModuleIndex.scan(kernel.modules_dir)
    order = module_closure(index, modules, optional_modules)
    image = _archive(init, busybox, busybox_applets(busybox), index, order)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(gzip.compress(image, compresslevel=1, mtime=0))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _cache_key(
    kernel: KernelInfo, modules: Sequence[str], optional: Sequence[str], busybox: Path, init: bytes
) -> str:
    digest = hashlib.sha256()
    for part in (
        _BUILDER_VERSION,
        kernel.version,
        kernel.flavour,
        ",".join(modules),
        ",".join(optional),
    ):
        digest.update(part.encode() + b"\0")
    digest.update(hashlib.sha256(init).digest())
    try:
        digest.update(hashlib.sha256(busybox.read_bytes()).digest())
    except OSError as exc:
        raise _busybox_error(busybox, f"cannot read it ({exc.strerror})") from exc
    return digest.hexdigest()[:16]


def _archive(
    init: bytes, busybox: Path, applets: list[str], index: ModuleIndex, order: list[str]
) -> bytes:
    cpio = _CpioWriter()
    for directory in (
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "mnt",
        "proc",
        "root",
        "run",
        "sys",
        "tmp",
        "usr",
    ):
        cpio.directory(directory)
    for link, target in (("sbin", "bin"), ("usr/bin", "../bin"), ("usr/sbin", "../bin")):
        cpio.symlink(link, target)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        cpio.symlink(f"bin/{applet}", "busybox")
    cpio.chardev("dev/console", 5, 1, 0o600)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("init", init, 0o755)
    for name in order:
        cpio.file(f"lib/modules/{name}.ko", index.files[name].read_bytes())
    cpio.file("lib/modules/load.order", "".join(f"{name}\n" for name in order).encode())
    return cpio.finish()
