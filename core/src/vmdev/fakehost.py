"""A fake host for tests: sysfs, ``/dev`` and ``/proc`` trees under a directory, and a stat seam.

Importable without pytest (benchmarks and other tools build fake hosts too); :mod:`vmdev.testing`
gives it to tests as the ``fake_host`` fixture. Only generic builders live here (uevents, block and
character devices, PCI functions); each family's distribution adds its own in its ``testing``
module. Nothing here touches the real host.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from vmdev.host import HostContext


class FakeHost:
    """Builds a fake host tree: ``<root>/sys``, ``<root>/dev`` and ``<root>/proc``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sysfs = root / "sys"
        self.dev = root / "dev"
        self.proc = root / "proc"
        for path in (self.sysfs, self.dev, self.proc):
            path.mkdir(parents=True, exist_ok=True)
        self._stats: dict[str, os.stat_result] = {}

    def context(self, **changes: Any) -> HostContext:
        """A host context reading this tree (``changes`` override fields, e.g. ``stat=``).

        When :meth:`fake_stat` registered entries, the context's ``stat`` is :meth:`stat`.
        """
        base: dict[str, Any] = {"sysfs_root": self.sysfs, "dev_root": self.dev, "proc_root": self.proc}
        if self._stats:
            base["stat"] = self.stat
        return HostContext(**{**base, **changes})

    # --- raw files ---------------------------------------------------------------------------
    def write(self, relative: str, content: str | bytes = "") -> Path:
        """Write a file below the sysfs root (parents created)."""
        return _write(self.sysfs / relative.lstrip("/"), content)

    def symlink(self, relative: str, target: str) -> Path:
        """Create a symlink below the sysfs root; an absolute ``target`` is taken inside the tree."""
        link = self.sysfs / relative.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        dest = self.sysfs / target.lstrip("/") if target.startswith("/") else Path(target)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(dest, link.parent) if dest.is_absolute() else dest)
        return link

    def dev_file(self, relative: str, content: str | bytes = "") -> Path:
        """A regular file standing for a node below the fake ``/dev``."""
        return _write(self.dev / relative.lstrip("/"), content)

    def proc_file(self, relative: str, content: str) -> Path:
        return _write(self.proc / relative.lstrip("/"), content)

    # --- devices -----------------------------------------------------------------------------
    def uevent(self, kind: str, major: int, minor: int, text: str) -> Path:
        """``sys/dev/{char,block}/MAJ:MIN/uevent`` with exactly ``text``."""
        if kind not in ("char", "block"):
            raise ValueError("kind must be 'char' or 'block'")
        return self.write(f"dev/{kind}/{major}:{minor}/uevent", text)

    def char_device(self, major: int, minor: int, devname: str) -> Path:
        """A character device as the kernel shows it, plus its node under the fake /dev (a
        regular file that :meth:`stat` reports as the character device ``major:minor``)."""
        node = self.dev_file(devname)
        self.fake_stat(str(node), mode=stat.S_IFCHR | 0o660, rdev=(major, minor))
        return self.uevent("char", major, minor, f"MAJOR={major}\nMINOR={minor}\nDEVNAME={devname}\n")

    def block_device(self, major: int, minor: int, devname: str, *, devtype: str = "disk") -> Path:
        """A block device's uevent, plus its node under the fake /dev (a regular file that
        :meth:`stat` reports as the block device ``major:minor``)."""
        node = self.dev_file(devname)
        self.fake_stat(str(node), mode=stat.S_IFBLK | 0o660, rdev=(major, minor))
        return self.uevent(
            "block", major, minor, f"MAJOR={major}\nMINOR={minor}\nDEVNAME={devname}\nDEVTYPE={devtype}\n"
        )

    def pci_function(
        self,
        bdf: str,
        *,
        vendor: str = "0x8086",
        device: str = "0x100e",
        class_code: str = "0x020000",
        driver: str | None = None,
        iommu_group: int | None = None,
        config_size: int = 256,
        numa_node: int = -1,
        parent: str = "pci0000:00",
    ) -> Path:
        """A PCI function under ``devices/<parent>/<bdf>`` with the links the kernel makes:
        ``bus/pci/devices/<bdf>``, ``driver``, ``iommu_group`` and the group's ``devices`` entry."""
        node = f"devices/{parent}/{bdf}"
        self.write(f"{node}/vendor", vendor + "\n")
        self.write(f"{node}/device", device + "\n")
        self.write(f"{node}/class", class_code + "\n")
        self.write(f"{node}/numa_node", f"{numa_node}\n")
        self.write(f"{node}/config", b"\0" * config_size)
        self.symlink(f"bus/pci/devices/{bdf}", f"/{node}")
        if driver is not None:
            (self.sysfs / f"bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
            self.symlink(f"{node}/driver", f"/bus/pci/drivers/{driver}")
        if iommu_group is not None:
            group = f"kernel/iommu_groups/{iommu_group}"
            (self.sysfs / group / "devices").mkdir(parents=True, exist_ok=True)
            self.symlink(f"{node}/iommu_group", f"/{group}")
            self.symlink(f"{group}/devices/{bdf}", f"/{node}")
        return self.sysfs / node

    # --- stat(2) -------------------------------------------------------------------------------
    def fake_stat(
        self,
        path: str,
        *,
        mode: int,
        rdev: tuple[int, int] | None = None,
        dev: tuple[int, int] | None = None,
        size: int = 0,
    ) -> os.stat_result:
        """Make :meth:`stat` (and so ``context().stat``) answer for ``path`` with these fields.

        ``mode`` includes the file type (``stat.S_IFBLK | 0o660``); ``rdev``/``dev`` are
        ``(major, minor)`` pairs encoded as Linux does (``os.makedev``).
        """
        st_dev = os.makedev(*dev) if dev else 0
        fields = (mode, 1, st_dev, 1, 0, 0, size, 0, 0, 0)
        result = os.stat_result(fields, {"st_rdev": os.makedev(*rdev) if rdev else 0})
        self._stats[path] = result
        return result

    def stat(self, path: str) -> os.stat_result:
        """The entry registered with :meth:`fake_stat`, else the real ``os.stat``."""
        found = self._stats.get(os.fspath(path))
        return found if found is not None else os.stat(path)


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
