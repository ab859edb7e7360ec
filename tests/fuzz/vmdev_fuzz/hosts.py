"""Fake hosts as data: a :class:`HostSpec` says what a host's sysfs, ``/dev``, ``/proc``, vhost-user
store and files hold; :func:`build` makes it under a directory with
:class:`vmdev.fakehost.FakeHost` and the families' builders (``vmdev_block.testing``,
``vmdev_vfio.testing``, imported only when installed).

Paths inside a case are written with the placeholder :data:`ROOT` (the fake host's directory,
unknown until the case runs), so that a case is plain data: hypothesis can shrink it, the long run
can print it, and its clean twin is the same data with hostile text replaced. Nothing is ever
written outside the fake host's directory: a name that would leave it (``..``, an absolute
DEVNAME) is simply not created.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from vmdev.fakehost import FakeHost

ROOT: Final = "@ROOT@"

# kinds of FileSpec
TEXT: Final = "text"
BYTES: Final = "bytes"
DIRECTORY: Final = "dir"
FIFO: Final = "fifo"
SYMLINK_LOOP: Final = "symlink-loop"
DANGLING: Final = "dangling"
MISSING: Final = "missing"
HUGE: Final = "huge"
#: a sparse persistent-memory image of ``content`` bytes with a valid PFN info block
PMEM: Final = "pmem"
FILE_KINDS: Final = (TEXT, BYTES, DIRECTORY, FIFO, SYMLINK_LOOP, DANGLING, MISSING, HUGE, PMEM)

# what the fake stat says of a device node
NODE_BLOCK: Final = "block"
NODE_CHAR: Final = "char"
NODE_REGULAR: Final = "regular"
NODE_SOCKET: Final = "socket"
NODE_DIR: Final = "dir"
NODE_KINDS: Final = (NODE_BLOCK, NODE_CHAR, NODE_REGULAR, NODE_SOCKET, NODE_DIR)
_MODES: Final = {NODE_BLOCK: stat.S_IFBLK | 0o660, NODE_CHAR: stat.S_IFCHR | 0o660,
                 NODE_REGULAR: stat.S_IFREG | 0o644, NODE_SOCKET: stat.S_IFSOCK | 0o777,
                 NODE_DIR: stat.S_IFDIR | 0o755}


@attrs.frozen
class FileSpec:
    """What sits at one path: text, raw bytes, a directory, a FIFO, a loop of symlinks, a dangling
    symlink, nothing, or more than vmdev's read limit."""

    kind: str = TEXT
    content: str | bytes = ""

    @classmethod
    def text(cls, content: str) -> FileSpec:
        return cls(TEXT, content)


@attrs.frozen
class StatSpec:
    """A fake ``stat`` answer for a path (``ROOT``-relative or ``/dev/...``)."""

    path: str
    node: str
    rdev: tuple[int, int] = (0, 0)
    dev: tuple[int, int] = (0, 0)
    size: int = 0


@attrs.frozen
class DevEntry:
    """A device under ``/sys/dev/{block,char}/MAJ:MIN`` and, maybe, its node under ``/dev``.

    ``uevent`` None writes the kernel's uevent for ``devname``; ``node`` is where the node file
    sits below ``/dev`` (None: no node), ``node_kind``/``node_rdev`` what the fake stat says of it.
    Block devices may carry ``size`` and a loop device's ``loop/backing_file`` (``backing``: the
    file's bytes as sysfs shows them; ``backing_target``: what sits at the backing path).
    """

    kind: str
    major: int
    minor: int
    devname: str
    uevent: FileSpec | None = None
    node: str | None = None
    node_kind: str = NODE_BLOCK
    node_rdev: tuple[int, int] | None = None
    size: FileSpec | None = None
    backing_path: str | None = None
    backing: FileSpec | None = None
    backing_target: FileSpec | None = None
    partitions: tuple[tuple[str, FileSpec], ...] = ()
    holders: tuple[tuple[str, FileSpec], ...] = ()


@attrs.frozen
class PciSpec:
    """A PCI function with every attribute as the case wants it (None: the builder's default)."""

    bdf: str
    driver: str | None = "vfio-pci"
    group: int | None = None
    vendor: FileSpec | None = None
    device: FileSpec | None = None
    class_code: FileSpec | None = None
    numa_node: FileSpec | None = None
    config_size: int = 256
    resource: FileSpec | None = None
    vfio_dev: bool = False


@attrs.frozen
class GroupEntry:
    """An extra entry in ``kernel/iommu_groups/<group>/devices``: an mdev (below ``parent``), an AP
    matrix device (``queues``), or a junk link/file named ``name``."""

    group: int
    name: str
    kind: str  # "mdev" | "ap" | "junk"
    parent: str = ""
    queues: FileSpec | None = None


@attrs.frozen
class VfioGroupSpec:
    """The kernel's ``class/vfio/<group>`` entry (a link to ``devices/virtual/vfio/<group>``), made
    when a VFIO driver takes a device of the group, PCI function, mdev or AP matrix device alike:
    the VFIO plugin passes ``/dev/vfio/<group>`` only for the numbers its ``dev`` attribute holds.
    ``dev`` None writes the kernel's ``MAJOR:MINOR``; a FileSpec puts anything there. The group
    node's ``dev/char`` entry and ``/dev`` node are a :class:`DevEntry`'s (they may disagree)."""

    group: int
    major: int
    minor: int
    dev: FileSpec | None = None


@attrs.frozen
class CdevSpec:
    number: int
    bdf: str
    with_dev: bool = True


@attrs.frozen
class StoreEntry:
    """One node of the vhost-user store and its socket."""

    name: str
    node: str = NODE_BLOCK
    rdev: tuple[int, int] = (241, 0)
    socket: str = NODE_SOCKET  # a NODE_* kind, MISSING, or "outside" (a link out of the store)
    node_link_outside: bool = False


@attrs.frozen
class StoreSpec:
    path: str  # ROOT-based
    entries: tuple[StoreEntry, ...] = ()
    devices_dir: bool = True


@attrs.frozen
class HostSpec:
    devices: tuple[DevEntry, ...] = ()
    pci: tuple[PciSpec, ...] = ()
    group_entries: tuple[GroupEntry, ...] = ()
    cdevs: tuple[CdevSpec, ...] = ()
    vfio_groups: tuple[VfioGroupSpec, ...] = ()
    iommu_node: bool = False
    store: StoreSpec | None = None
    #: files anywhere below ROOT (mount sources, images, backing files): (ROOT path, FileSpec)
    files: tuple[tuple[str, FileSpec], ...] = ()
    stats: tuple[StatSpec, ...] = ()
    mountinfo: FileSpec | None = None
    mounts: FileSpec | None = None


# --- substitution -----------------------------------------------------------------------------------
def substitute(value: Any, root: str) -> Any:
    """``value`` with :data:`ROOT` replaced by ``root`` in every string and bytes, at any depth."""
    if isinstance(value, str):
        return value.replace(ROOT, root)
    if isinstance(value, bytes):
        return value.replace(ROOT.encode(), os.fsencode(root))
    if isinstance(value, Mapping):
        return {substitute(k, root): substitute(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(substitute(v, root) for v in value)
    if attrs.has(type(value)):
        return attrs.evolve(value, **{f.name: substitute(getattr(value, f.name), root)
                                      for f in attrs.fields(type(value)) if f.init})
    return value


# --- building --------------------------------------------------------------------------------------
class Built:
    """A built fake host: the FakeHost and what the case's oracles need to know of it."""

    def __init__(self, fake: FakeHost) -> None:
        self.fake = fake
        self.root = fake.root

    def context(self) -> Any:
        return self.fake.context(stat=self.fake.stat)


def _inside(root: Path, path: Path) -> bool:
    try:
        normal = Path(os.path.normpath(path))
        return normal == root or root in normal.parents
    except ValueError:
        return False


def place(root: Path, path: Path, spec: FileSpec) -> bool:
    """Make ``spec`` at ``path`` (inside ``root`` only); False when it cannot exist there."""
    if not _inside(root, path) or spec.kind == MISSING:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                path.unlink()  # an earlier entry of the case (a FIFO!) must not be written into
        if spec.kind == TEXT:
            assert isinstance(spec.content, str)
            path.write_bytes(spec.content.encode("utf-8", "surrogatepass"))
        elif spec.kind == BYTES:
            data = spec.content if isinstance(spec.content, bytes) else spec.content.encode("utf-8", "surrogatepass")
            path.write_bytes(data)
        elif spec.kind == HUGE:
            with open(path, "wb") as handle:
                handle.truncate((1 << 20) + 2)
        elif spec.kind == PMEM:
            from vmdev_block.testing import image_file

            image_file(path, int(spec.content), pfn=True)
        elif spec.kind == DIRECTORY:
            path.mkdir(exist_ok=True)
        elif spec.kind == FIFO:
            os.mkfifo(path)
        elif spec.kind == SYMLINK_LOOP:
            os.symlink(path.name, path)
        elif spec.kind == DANGLING:
            os.symlink(path.name + ".nowhere", path)
    except (OSError, ValueError, UnicodeEncodeError, ImportError):
        return False
    return True


def _sys(fake: FakeHost, relative: str) -> Path:
    return fake.sysfs / relative


def _node_path(fake: FakeHost, devname: str) -> Path:
    return fake.dev / devname.lstrip("/")


def _stat(fake: FakeHost, path: Path, node: str, rdev: tuple[int, int] | None, size: int = 0,
          dev: tuple[int, int] | None = None) -> None:
    if node == MISSING:
        return
    keys = {str(path), os.path.normpath(path)}
    for key in keys:
        try:
            fake.fake_stat(key, mode=_MODES[node], rdev=rdev, dev=dev, size=size)
        except (ValueError, OverflowError):
            return


def _device(fake: FakeHost, entry: DevEntry) -> None:
    base = f"dev/{entry.kind}/{entry.major}:{entry.minor}"
    uevent = entry.uevent or FileSpec.text(
        f"MAJOR={entry.major}\nMINOR={entry.minor}\nDEVNAME={entry.devname}\n"
        + ("DEVTYPE=disk\n" if entry.kind == "block" else "")
    )
    place(fake.root, _sys(fake, base) / "uevent", uevent)
    if entry.node is not None:
        node = _node_path(fake, entry.node)
        if place(fake.root, node, FileSpec.text("")):
            _stat(fake, node, entry.node_kind, entry.node_rdev or (entry.major, entry.minor))
    if entry.size is not None:
        place(fake.root, _sys(fake, base) / "size", entry.size)
    if entry.backing is not None:
        place(fake.root, _sys(fake, base) / "loop" / "backing_file", entry.backing)
    if entry.backing_path is not None and entry.backing_target is not None:
        place(fake.root, Path(entry.backing_path), entry.backing_target)
    for name, dev in entry.partitions:
        if place(fake.root, _sys(fake, base) / name / "dev", dev):
            place(fake.root, _sys(fake, base) / name / "partition", FileSpec.text("1\n"))
    for name, dev in entry.holders:
        place(fake.root, _sys(fake, base) / "holders" / name / "dev", dev)


def _pci(fake: FakeHost, spec: PciSpec) -> None:
    try:
        node = fake.pci_function(spec.bdf, driver=spec.driver, iommu_group=spec.group,
                                 config_size=spec.config_size)
    except (OSError, ValueError):
        return
    for name, value in (("vendor", spec.vendor), ("device", spec.device), ("class", spec.class_code),
                        ("numa_node", spec.numa_node), ("resource", spec.resource)):
        if value is not None:
            place(fake.root, node / name, value)
    if spec.vfio_dev:
        (node / "vfio-dev" / "vfio0").mkdir(parents=True, exist_ok=True)


def _group_entry(fake: FakeHost, entry: GroupEntry) -> None:
    if not usable_name(entry.name):
        return
    try:
        if entry.kind == "mdev":
            from vmdev_vfio.testing import mdev_device

            mdev_device(fake, entry.name, entry.parent, iommu_group=entry.group)
        elif entry.kind == "ap":
            from vmdev_vfio.testing import ap_matrix_device

            path = ap_matrix_device(fake, entry.name, [], iommu_group=entry.group)
            if entry.queues is not None:
                place(fake.root, path / "matrix", entry.queues)
        else:
            directory = fake.sysfs / f"kernel/iommu_groups/{entry.group}/devices"
            directory.mkdir(parents=True, exist_ok=True)
            place(fake.root, directory / entry.name, entry.queues or FileSpec(DANGLING))
    except (OSError, ValueError, ImportError):
        return


def _vfio_group(fake: FakeHost, spec: VfioGroupSpec) -> None:
    node = f"devices/virtual/vfio/{spec.group}"
    dev = spec.dev or FileSpec.text(f"{spec.major}:{spec.minor}\n")
    place(fake.root, _sys(fake, node) / "dev", dev)  # all the plugin reads of it
    with contextlib.suppress(OSError, ValueError):
        fake.symlink(f"class/vfio/{spec.group}", f"/{node}")


def _cdev(fake: FakeHost, spec: CdevSpec) -> None:
    try:
        from vmdev_vfio.testing import vfio_cdev

        vfio_cdev(fake, spec.number, spec.bdf, major=249 if spec.with_dev else None)
        node = fake.dev / f"vfio/devices/vfio{spec.number}"
        if place(fake.root, node, FileSpec.text("")):
            _stat(fake, node, NODE_CHAR, (249, spec.number))
    except (OSError, ValueError, ImportError):
        return


def _store(fake: FakeHost, spec: StoreSpec) -> None:
    root = Path(spec.path)
    if not _inside(fake.root, root):
        return
    devices, sockets = root / "block" / "devices", root / "block" / "sockets"
    try:
        if spec.devices_dir:
            devices.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError):
        return
    for entry in spec.entries:
        if not usable_name(entry.name):
            continue
        node, socket = devices / entry.name, sockets / entry.name
        if not (_inside(root, node) and _inside(root, socket)):
            continue
        try:
            if entry.node_link_outside:
                node.symlink_to(fake.root / "outside-node")
                place(fake.root, fake.root / "outside-node", FileSpec.text(""))
                _stat(fake, node, NODE_BLOCK, entry.rdev)
            elif entry.node != MISSING and place(fake.root, node, FileSpec.text("")):
                _stat(fake, node, entry.node, entry.rdev)
            if entry.socket == "outside":
                socket.symlink_to(fake.root / "outside-socket")
                place(fake.root, fake.root / "outside-socket", FileSpec.text(""))
                _stat(fake, socket, NODE_SOCKET, None)
            elif entry.socket != MISSING and place(fake.root, socket, FileSpec.text("")):
                _stat(fake, socket, entry.socket, None)
        except (OSError, ValueError, UnicodeEncodeError):
            continue


def usable_name(name: str) -> bool:
    """A name one directory entry can have (not empty, ``.``, ``..``, no ``/`` or NUL)."""
    return name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def build(spec: HostSpec, root: Path) -> Built:
    """Make ``spec`` (already substituted) under ``root``."""
    fake = FakeHost(root)
    for entry in spec.devices:
        _device(fake, entry)
    for pci in spec.pci:
        _pci(fake, pci)
    for group_entry in spec.group_entries:
        _group_entry(fake, group_entry)
    for cdev in spec.cdevs:
        _cdev(fake, cdev)
    for vfio_group in spec.vfio_groups:
        _vfio_group(fake, vfio_group)
    if spec.iommu_node:
        node = fake.dev / "iommu"
        place(fake.root, node, FileSpec.text(""))
        _stat(fake, node, NODE_CHAR, (10, 257))
    if spec.store is not None:
        _store(fake, spec.store)
    for where, file in spec.files:
        place(fake.root, Path(where), file)
    for answer in spec.stats:
        path = Path(answer.path) if not answer.path.startswith("/dev/") else fake.dev / answer.path[5:]
        if _inside(fake.root, path):
            _stat(fake, path, answer.node, answer.rdev, answer.size, answer.dev)
    if spec.mountinfo is not None:
        place(fake.root, fake.proc / "self" / "mountinfo", spec.mountinfo)
    if spec.mounts is not None:
        place(fake.root, fake.proc / "mounts", spec.mounts)
    # the sandbox's entropy source exists on every fake host (rng checks it)
    for name, numbers in (("urandom", (1, 9)), ("random", (1, 8))):
        node = fake.dev / name
        if not node.exists():
            place(fake.root, node, FileSpec.text(""))
            _stat(fake, node, NODE_CHAR, numbers)
    return Built(fake)


def expected_devname_path(devname: str) -> str:
    """Where ``DEVNAME`` puts a node (``/dev/`` + the name, normalised as the resolver does)."""
    return posixpath.normpath(posixpath.join("/dev", devname))

