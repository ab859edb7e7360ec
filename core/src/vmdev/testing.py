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

    def iommu_group_member(self, group: int, name: str, node: str) -> None:
        """Put the device at sysfs ``node`` into IOMMU group ``group`` under ``name``
        (the group's ``devices/<name>`` link and the device's ``iommu_group`` link)."""
        directory = f"kernel/iommu_groups/{group}"
        (self.sysfs / directory / "devices").mkdir(parents=True, exist_ok=True)
        self.symlink(f"{node}/iommu_group", f"/{directory}")
        self.symlink(f"{directory}/devices/{name}", f"/{node}")

    def mdev_device(
        self, uuid: str, parent_bdf: str, *, iommu_group: int, driver: str = "vfio_mdev"
    ) -> Path:
        """A mediated device below PCI function ``parent_bdf`` (create that first), as
        ``/sys/bus/mdev/devices/<uuid>`` with its own IOMMU group and driver link."""
        parent = self.sysfs / "bus" / "pci" / "devices" / parent_bdf
        node = "/" + os.path.relpath(os.path.realpath(parent), os.path.realpath(self.sysfs)) + f"/{uuid}"
        (self.sysfs / node.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.symlink(f"bus/mdev/devices/{uuid}", node)
        (self.sysfs / f"bus/mdev/drivers/{driver}").mkdir(parents=True, exist_ok=True)
        self.symlink(f"{node}/driver", f"/bus/mdev/drivers/{driver}")
        self.iommu_group_member(iommu_group, uuid, node.lstrip("/"))
        return self.sysfs / node.lstrip("/")

    def ap_matrix_device(self, uuid: str, queues: Iterable[str], *, iommu_group: int) -> Path:
        """An s390x AP matrix mdev ``devices/vfio_ap/matrix/<uuid>`` whose ``matrix`` file
        lists ``queues`` (APQNs such as ``05.001f``), in IOMMU group ``iommu_group``."""
        node = f"devices/vfio_ap/matrix/{uuid}"
        self.write(f"{node}/matrix", "".join(f"{queue}\n" for queue in queues))
        self.symlink(f"bus/mdev/devices/{uuid}", f"/{node}")
        self.iommu_group_member(iommu_group, uuid, node)
        return self.sysfs / node

    def vfio_cdev(self, number: int, bdf: str, *, major: int | None = 249) -> Path:
        """``class/vfio-dev/vfio<number>`` for PCI function ``bdf`` (create it first), as the
        kernel makes it when the function is bound to vfio-pci. With ``major`` (IOMMUFD
        kernels) it has ``dev`` and a uevent naming ``vfio/devices/vfio<number>``; with None
        it has neither (kernels without ``CONFIG_VFIO_DEVICE_CDEV``)."""
        function = os.path.realpath(self.sysfs / "bus" / "pci" / "devices" / bdf)
        node = os.path.relpath(function, os.path.realpath(self.sysfs)) + f"/vfio-dev/vfio{number}"
        uevent = ""
        if major is not None:
            self.write(f"{node}/dev", f"{major}:{number}\n")
            uevent = f"MAJOR={major}\nMINOR={number}\nDEVNAME=vfio/devices/vfio{number}\n"
            self.symlink(f"dev/char/{major}:{number}", f"/{node}")
        self.write(f"{node}/uevent", uevent)
        self.symlink(f"{node}/device", f"/{os.path.relpath(function, os.path.realpath(self.sysfs))}")
        self.symlink(f"class/vfio-dev/vfio{number}", f"/{node}")
        return self.sysfs / node

    def loop_device(
        self, major: int, minor: int, backing_file: str | os.PathLike[str], *, devname: str | None = None
    ) -> Path:
        """A loop block device: uevent, ``/dev`` node, ``loop/backing_file`` (as the kernel
        writes it, with a newline) and ``size`` in 512-byte sectors when the backing file exists.
        Returns the sysfs device directory (``sys/dev/block/MAJ:MIN``)."""
        name = devname or f"loop{minor}"
        self.block_device(major, minor, name)
        directory = f"dev/block/{major}:{minor}"
        self.write(f"{directory}/loop/backing_file", f"{os.fspath(backing_file)}\n")
        backing = Path(backing_file)
        if backing.is_file():
            self.write(f"{directory}/size", f"{backing.stat().st_size // 512}\n")
        return self.sysfs / directory

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
