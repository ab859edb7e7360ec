"""The host context: every fact vmdev reads from the host goes through here.

Kata keeps sysfs paths in package globals that tests overwrite and mocks file
access with function pointers. vmdev passes one immutable :class:`HostContext`
to every hook instead. Tests build a fake tree under a temporary directory and
point ``sysfs_root`` (and ``dev_root``/``proc_root``) at it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import attrs

from vmdev.models import DEFAULT_VHOST_USER_STORE_PATH

StatFunc = Callable[[str], os.stat_result]


@attrs.frozen
class SysfsReader:
    """Reads a sysfs-like tree below ``root``. Paths are relative to the root.

    Missing files are ``None``/empty results, never exceptions: absence is a
    normal answer in sysfs. Other I/O errors propagate.
    """

    root: Path = attrs.field(converter=Path)

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """The real file-system path of ``relative`` (what QEMU or a user would open)."""
        return self.root / os.fspath(relative).lstrip("/")

    def exists(self, relative: str | os.PathLike[str]) -> bool:
        return self.path(relative).exists()

    def read_text(self, relative: str | os.PathLike[str]) -> str | None:
        """The file's content, or None when it does not exist."""
        try:
            return self.path(relative).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_line(self, relative: str | os.PathLike[str]) -> str | None:
        """The first line, stripped (sysfs attribute files hold one value)."""
        text = self.read_text(relative)
        return None if text is None else (text.splitlines() or [""])[0].strip()

    def list_dir(self, relative: str | os.PathLike[str]) -> list[str]:
        """Sorted entry names, or an empty list when the directory does not exist."""
        try:
            return sorted(os.listdir(self.path(relative)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def size(self, relative: str | os.PathLike[str]) -> int | None:
        try:
            return self.path(relative).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def resolve(self, relative: str | os.PathLike[str]) -> str | None:
        """Follow symlinks; the result is relative to the root (``/devices/pci0000:00/...``).

        None when the target does not exist or lies outside the tree.
        """
        target = self.path(relative)
        if not target.exists():
            return None
        real = Path(os.path.realpath(target))
        root = Path(os.path.realpath(self.root))
        if real != root and root not in real.parents:
            return None
        return "/" + str(real.relative_to(root)) if real != root else "/"

    def link_name(self, relative: str | os.PathLike[str]) -> str | None:
        """The last component of a symlink's target (``driver`` -> ``vfio-pci``), or None."""
        try:
            return os.path.basename(os.readlink(self.path(relative)))
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None


@attrs.frozen(kw_only=True)
class VhostUserStore:
    """Kata's ``enable_vhost_user_store`` and ``vhost_user_store_path``."""

    enabled: bool = False
    path: Path = attrs.field(default=Path(DEFAULT_VHOST_USER_STORE_PATH), converter=Path)


@attrs.frozen(kw_only=True)
class HostContext:
    """Where and how vmdev looks at the host. Immutable; build a new one to change it."""

    sysfs_root: Path = attrs.field(default=Path("/sys"), converter=Path)
    dev_root: Path = attrs.field(default=Path("/dev"), converter=Path)
    proc_root: Path = attrs.field(default=Path("/proc"), converter=Path)
    vhost_user_store: VhostUserStore = attrs.field(factory=VhostUserStore)
    #: stat(2) for device nodes and store entries; tests replace it (Kata's GetVhostUserNodeStat).
    stat: StatFunc = os.stat

    @property
    def sysfs(self) -> SysfsReader:
        return SysfsReader(self.sysfs_root)

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

    def proc_path(self, relative: str) -> Path:
        return self.proc_root / relative.lstrip("/")
