"""Fixtures: a vhost-user store with real device nodes, and a planner bound to this plugin."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmdev.host import VhostUserStore
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost


class Store:
    """``<root>/block/devices`` (block nodes made with mknod) and ``<root>/block/sockets``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = root / "block" / "devices"
        self.sockets = root / "block" / "sockets"
        self.devices.mkdir(parents=True)
        self.sockets.mkdir(parents=True)

    def node(self, name: str, major: int, minor: int, *, kind: int = stat.S_IFBLK) -> Path:
        path = self.devices / name
        os.mknod(path, kind | 0o600, os.makedev(major, minor))
        return path

    def socket(self, name: str) -> Path:
        path = self.sockets / name
        os.mknod(path, stat.S_IFSOCK | 0o600)
        return path

    def device(self, name: str, major: int, minor: int) -> Path:
        """A node and its socket; returns the socket."""
        self.node(name, major, minor)
        return self.socket(name)


@pytest.fixture
def store() -> Iterator[Store]:
    # a short directory: socket paths must fit the 107 bytes of sun_path
    root = Path(tempfile.mkdtemp(prefix="vhu-"))
    try:
        yield Store(root / "store")
    finally:
        shutil.rmtree(root)


@pytest.fixture
def run(fake_host: FakeHost, store: Store, vmdev_plugins: Any) -> Any:
    pm = vmdev_plugins("vmdev-vhostuser")

    def run(
        *devices: dict[str, Any], enabled: bool = True, rules: list[Any] | None = None, **settings: Any
    ) -> Plan:
        document: dict[str, Any] = {"linux": {"devices": list(devices)}}
        if rules is not None:
            document["linux"]["resources"] = {"devices": rules}
        host = fake_host.context(vhost_user_store=VhostUserStore(enabled=enabled, path=store.root))
        settings.setdefault("memory_mib", 256)
        return plan(parse_spec(document), SandboxSettings(**settings), host=host, plugins=pm)

    return run
