"""The host context: every fact vmdev reads from the host goes through here.

Kata keeps sysfs paths in package globals that tests overwrite and mocks file
access with function pointers. vmdev passes one immutable :class:`HostContext`
to every hook instead. Tests build a fake tree under a temporary directory and
point ``sysfs_root`` (and ``dev_root``/``proc_root``) at it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from vmdev.errors import DeviceError, HostReadError

if TYPE_CHECKING:
    from vmdev.models import DeviceInfo

StatFunc = Callable[[str], os.stat_result]


#: the most a host attribute file may hold (sysfs attributes are at most a page; uevent files and
#: /proc/self/mountinfo of a busy host stay far below)
MAX_READ: Final = 1 << 20


def _joined(root: str, relative: str) -> str | None:
    """``str(Path(root) / relative)`` for a ``root`` that is already a ``str(Path)``, by plain string
    operations, when pathlib would only concatenate (no empty, ``.`` or trailing components); None
    when pathlib would normalise (the caller asks pathlib then). Hot loops (one sysfs file per
    device) save the path object: the file opened and every message stay the same."""
    if (
        not relative
        or relative.startswith("/")
        or "//" in relative
        or relative.endswith(("/", "/."))
        or relative == "."
        or relative.startswith("./")
        or "/./" in relative
    ):
        return None
    if root == ".":
        return relative
    return root + relative if root.endswith("/") else root + "/" + relative


@attrs.frozen
class SysfsReader:
    """Reads a sysfs-like tree below ``root``. Paths are relative to the root.

    Missing files are ``None``/empty results, never exceptions: absence is a normal answer in
    sysfs. Every other problem is a :class:`~vmdev.errors.HostReadError` naming the file: a file
    that is not a regular file is never opened (a FIFO would block, a device node could have side
    effects), symlink loops and permission errors are reported, reads stop at ``MAX_READ`` bytes,
    and text is decoded as strict UTF-8 (bytes are never replaced: a path read here is the
    host's path, or an error).
    """

    root: Path = attrs.field(converter=Path)
    _root_text: str = attrs.field(init=False, eq=False, repr=False)

    @_root_text.default
    def _root_str(self) -> str:
        return str(self.root)

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """The real file-system path of ``relative`` (what QEMU or a user would open)."""
        return self.root / os.fspath(relative).lstrip("/")

    def file(self, relative: str | os.PathLike[str]) -> str:
        """``str(self.path(relative))``, without a path object when none is needed."""
        rel = os.fspath(relative).lstrip("/")
        joined = _joined(self._root_text, rel)
        return joined if joined is not None else str(self.root / rel)

    def exists(self, relative: str | os.PathLike[str]) -> bool:
        try:
            return self.path(relative).exists()
        except OSError as exc:  # a loop of symlinks, a name too long
            raise _read_error(self.path(relative), exc) from None

    def read_bytes(self, relative: str | os.PathLike[str], *, limit: int = MAX_READ) -> bytes | None:
        """The file's bytes (a regular file only), or None when it does not exist."""
        return read_regular(self.file(relative), limit=limit)

    def read_text(self, relative: str | os.PathLike[str]) -> str | None:
        """The file's content as UTF-8 text, or None when it does not exist."""
        path = self.file(relative)
        data = read_regular(path)
        return None if data is None else decode_text(data, path)

    def read_line(self, relative: str | os.PathLike[str]) -> str | None:
        """The first line, stripped (sysfs attribute files hold one value)."""
        text = self.read_text(relative)
        return None if text is None else (text.splitlines() or [""])[0].strip()

    def list_dir(self, relative: str | os.PathLike[str]) -> list[str]:
        """Sorted entry names, or an empty list when the directory does not exist."""
        try:
            return sorted(os.listdir(self.file(relative)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _read_error(self.path(relative), exc) from None

    def size(self, relative: str | os.PathLike[str]) -> int | None:
        try:
            return self.path(relative).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _read_error(self.path(relative), exc) from None

    def resolve(self, relative: str | os.PathLike[str]) -> str | None:
        """Follow symlinks; the result is relative to the root (``/devices/pci0000:00/...``).

        None when the target does not exist or lies outside the tree.
        """
        target = self.path(relative)
        try:
            real = Path(os.path.realpath(target, strict=True))
            root = Path(os.path.realpath(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _read_error(target, exc) from None
        if real != root and root not in real.parents:
            return None
        return "/" + str(real.relative_to(root)) if real != root else "/"

    def link_name(self, relative: str | os.PathLike[str]) -> str | None:
        """The last component of a symlink's target (``driver`` -> the driver's name), or None."""
        try:
            return os.path.basename(os.readlink(self.file(relative)))
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None


def read_regular(path: str | os.PathLike[str], *, limit: int = MAX_READ) -> bytes | None:
    """The bytes of the regular file ``path`` (at most ``limit``), None when it does not exist.

    The file is checked before it is opened and opened non-blocking, so a FIFO or a device node
    named where a file was expected is an error, never a hang. Every problem is a
    :class:`~vmdev.errors.HostReadError` whose ``reason`` says it without the file's name."""
    read = read_regular_stat(path, limit=limit)
    return None if read is None else read[0]


def read_named(path: str | os.PathLike[str], *, limit: int, refuse: Callable[[str], Exception]) -> bytes:
    """A file a caller named (an OCI spec, a settings file, ``--oci-device @FILE``, a plan to
    check): :func:`read_regular`, every problem, a missing file included, raised as
    ``refuse(reason)``, the reader's own error saying why in its words."""
    try:
        data = read_regular(path, limit=limit)
    except HostReadError as exc:
        raise refuse(exc.reason) from None
    if data is None:
        raise refuse("No such file or directory")
    return data


def read_regular_stat(
    path: str | os.PathLike[str], *, limit: int = MAX_READ
) -> tuple[bytes, os.stat_result] | None:
    """:func:`read_regular`, with the ``fstat`` of the file as opened (its identity: a reader that
    writes the file again later can tell whether it changed since)."""
    try:
        _check_regular(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _read_error(path, exc) from None
    try:
        info = os.fstat(fd)
        _check_regular(path, info)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            wanted = min(65536, limit + 1 - size)
            chunk = os.read(fd, wanted)
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < wanted:  # a regular file's short read is its end: no read just to see EOF
                break
    except OSError as exc:
        raise _read_error(path, exc) from None
    finally:
        os.close(fd)
    if size > limit:
        raise HostReadError(f"{_quoted(path)} holds more than {limit} bytes", field=str(path),
                            reason=f"larger than {limit} bytes")
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), info


#: what a file that is not a regular one is, in words (for the error)
_KINDS: Final = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
                 stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _check_regular(path: str | os.PathLike[str], info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise HostReadError(f"{_quoted(path)} is not a regular file", field=str(path),
                            reason=f"not a regular file ({kind})")


def decode_text(data: bytes, path: str | os.PathLike[str]) -> str:
    """``data`` as strict UTF-8: host paths are taken byte for byte, or refused."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})"
        raise HostReadError(f"{_quoted(path)} is {reason}", field=str(path), reason=reason) from None


def _quoted(path: str | os.PathLike[str]) -> str:
    return json.dumps(os.fsdecode(path))


def _read_error(path: str | os.PathLike[str], exc: OSError) -> HostReadError:
    reason = exc.strerror or type(exc).__name__
    return HostReadError(f"cannot read {_quoted(path)}: {reason}", field=str(path), reason=reason)


@attrs.frozen(kw_only=True)
class HostContext:
    """Where and how vmdev looks at the host. Immutable; build a new one to change it."""

    sysfs_root: Path = attrs.field(default=Path("/sys"), converter=Path)
    dev_root: Path = attrs.field(default=Path("/dev"), converter=Path)
    proc_root: Path = attrs.field(default=Path("/proc"), converter=Path)
    #: stat(2) for device nodes and other host files the families check (Kata's node-stat seam,
    #: see docs/seed-names.md); tests replace it (``FakeHost.fake_stat``).
    stat: StatFunc = os.stat
    #: made once: hooks ask for ``sysfs`` for every device
    _sysfs: SysfsReader = attrs.field(init=False, eq=False, repr=False)
    _dev_text: str = attrs.field(init=False, eq=False, repr=False)

    @_sysfs.default
    def _make_sysfs(self) -> SysfsReader:
        return SysfsReader(self.sysfs_root)

    @_dev_text.default
    def _make_dev_text(self) -> str:
        return str(self.dev_root)

    @property
    def sysfs(self) -> SysfsReader:
        return self._sysfs

    @property
    def sys_dev_prefix(self) -> Path:
        """Kata's SysDevPrefix (``/sys/dev``)."""
        return self.sysfs_root / "dev"

    @property
    def sys_iommu_path(self) -> Path:
        """Kata's SysIOMMUGroupPath (``/sys/kernel/iommu_groups``)."""
        return self.sysfs_root / "kernel" / "iommu_groups"

    @property
    def sys_bus_pci_devices_path(self) -> Path:
        """Kata's SysBusPciDevicesPath (``/sys/bus/pci/devices``)."""
        return self.sysfs_root / "bus" / "pci" / "devices"

    def dev_path(self, host_path: str) -> Path:
        """Where a ``/dev/...`` host path lives under ``dev_root`` (identity by default)."""
        if host_path.startswith("/dev/"):
            return self.dev_root / host_path[len("/dev/") :]
        return Path(host_path)

    def dev_file(self, host_path: str) -> str:
        """``str(self.dev_path(host_path))``, without a path object when none is needed."""
        if host_path.startswith("/dev/"):
            joined = _joined(self._dev_text, host_path[len("/dev/") :])
            if joined is not None:
                return joined
        return str(self.dev_path(host_path))

    def proc_path(self, relative: str) -> Path:
        return self.proc_root / relative.lstrip("/")


def host_context(sysfs_root: str | None) -> HostContext:
    """The host context of the command line's ``--sysfs-root`` (None: ``/sys``)."""
    return HostContext(sysfs_root=Path(sysfs_root or "/sys"))


# --- the node check ---------------------------------------------------------------------------------
#: the core's own resolver (Kata's GetHostPath through sysfs)
CORE_RESOLVER = "vmdev.host_path"
_NODE_TYPES = {"b": stat.S_IFBLK, "c": stat.S_IFCHR, "u": stat.S_IFCHR}


def check_node(info: DeviceInfo, host: HostContext, *, by_core: bool) -> None:
    """The numbers of the node you attach are the numbers requested.

    Whatever path a ``b``/``c``/``u`` request resolved to, a device node there must have the
    requested type and ``major:minor`` (stat through the host context), else the request is
    refused naming the device and the node: a different device is never handed over. A block
    device resolved by the core through sysfs must be such a node. A path that is not a device
    node and was resolved by a plugin (a socket of a store, a memory image) is that plugin's to
    check. A character device with no node (the fallback to the container path) stays in the
    container, as Kata does.
    """
    kind = _NODE_TYPES.get(info.dev_type)
    if kind is None or info.is_block_file or not info.host_path:
        return
    try:
        st = host.stat(host.dev_file(info.host_path))
    except OSError:
        st = None
    is_node = st is not None and stat.S_IFMT(st.st_mode) in (stat.S_IFBLK, stat.S_IFCHR)
    if st is not None and is_node:
        found = (stat.S_IFMT(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))
        if found != (kind, info.major, info.minor):
            what = "block" if found[0] == stat.S_IFBLK else "character"
            raise DeviceError(
                f"the host node {json.dumps(info.host_path)} is {what} device {found[1]}:{found[2]}, "
                f"not the requested {info.dev_type} {info.major}:{info.minor}",
                device=info.name,
                field="major:minor",
            )
        return
    if by_core and info.dev_type == "b":
        problem = "does not exist" if st is None else "is not a block device"
        raise DeviceError(
            f"sysfs names {json.dumps(info.host_path)} for block device {info.major}:{info.minor}, but it "
            f"{problem} on this host",
            device=info.name,
            field="major:minor",
        )
