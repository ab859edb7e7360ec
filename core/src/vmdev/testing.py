"""Test helpers for vmdev and its plugins, loaded by pytest as the ``vmdev`` plugin.

Fixtures:

``fake_host``
    a :class:`FakeHost` rooted in ``tmp_path``: build a sysfs, ``/dev`` and
    ``/proc`` tree, then ``fake_host.context()`` gives the :class:`HostContext`.
``vmdev_plugins``
    a factory: ``vmdev_plugins("vmdev-rng")`` is a loaded plugin manager with
    only the core defaults and the named distributions (and any extra
    ``(name, plugin)`` pairs passed as ``extra=``), whatever else is installed.

No fixture touches the real host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from vmdev.host import HostContext
from vmdev.plugins import LoadPolicy, PluginManager


class FakeHost:
    """Builds a fake host tree: ``<root>/sys``, ``<root>/dev`` and ``<root>/proc``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sysfs = root / "sys"
        self.dev = root / "dev"
        self.proc = root / "proc"
        for path in (self.sysfs, self.dev, self.proc):
            path.mkdir(parents=True, exist_ok=True)

    def context(self, **changes: Any) -> HostContext:
        """A host context reading this tree (``changes`` override fields, e.g. ``stat=``)."""
        base: dict[str, Any] = {"sysfs_root": self.sysfs, "dev_root": self.dev, "proc_root": self.proc}
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
        """A character device as the kernel shows it, plus its node under the fake /dev."""
        self.dev_file(devname)
        return self.uevent("char", major, minor, f"MAJOR={major}\nMINOR={minor}\nDEVNAME={devname}\n")

    def block_device(self, major: int, minor: int, devname: str, *, devtype: str = "disk") -> Path:
        """A block device's uevent, plus its node under the fake /dev."""
        self.dev_file(devname)
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


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


PluginFactory = Callable[..., PluginManager]


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    """A fake host tree under ``tmp_path``."""
    return FakeHost(tmp_path / "host")


@pytest.fixture
def vmdev_plugins() -> PluginFactory:
    """Factory for a plugin manager that loads only the named distributions."""

    def make(
        *distributions: str, extra: Iterable[tuple[str, object]] = (), trace: bool = False
    ) -> PluginManager:
        policy = LoadPolicy(only=tuple(distributions), trace=trace)
        return PluginManager(policy, plugins=extra).load()

    return make
