"""Fixtures: a vhost-user store whose nodes and sockets are faked through the stat seam, and a
planner bound to this plugin.

No test needs root: a store entry is an empty file, and what ``stat`` says about it (a block node
241:0, a socket) is registered with ``FakeHost.fake_stat``; the plugin stats only through
``HostContext.stat`` (Kata's ``GetVhostUserNodeStat``). Directory listings and symlinks are real.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmdev.host import HostContext
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.plugins import PluginManager
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost


class Store:
    """``<root>/block/devices`` and ``<root>/block/sockets``, with faked node and socket types."""

    def __init__(self, root: Path, host: FakeHost) -> None:
        self.root = root
        self.host = host
        self.devices = root / "block" / "devices"
        self.sockets = root / "block" / "sockets"
        self.devices.mkdir(parents=True)
        self.sockets.mkdir(parents=True)

    def fake(self, path: Path, kind: int, rdev: tuple[int, int] | None = None) -> Path:
        """An empty file at ``path`` that ``stat`` reports as ``kind`` (numbered ``rdev``)."""
        path.write_text("")
        self.host.fake_stat(os.path.realpath(path), mode=kind | 0o600, rdev=rdev)
        return path

    def node(self, name: str, major: int, minor: int, *, kind: int = stat.S_IFBLK) -> Path:
        return self.fake(self.devices / name, kind, (major, minor))

    def socket(self, name: str) -> Path:
        return self.fake(self.sockets / name, stat.S_IFSOCK)

    def device(self, name: str, major: int, minor: int) -> Path:
        """A node and its socket; returns the socket."""
        self.node(name, major, minor)
        return self.socket(name)

    def stat(self, path: str) -> os.stat_result:
        """stat(2) as the kernel does it: symlinks are followed, then the fake answers."""
        return self.host.stat(os.path.realpath(path))

    def context(self, **changes: Any) -> HostContext:
        return self.host.context(**{"stat": self.stat, **changes})

    def options(self, enabled: bool = True) -> dict[str, Any]:
        """The settings keys that enable this store."""
        return {"enable_vhost_user_store": enabled, "vhost_user_store_path": str(self.root)}

    def settings(self, pm: PluginManager, enabled: bool = True, **options: Any) -> SandboxSettings:
        """Prepared settings with this store (and ``options``)."""
        return pm.prepare_settings(SandboxSettings(options={**self.options(enabled), **options}))


@pytest.fixture
def store(fake_host: FakeHost) -> Iterator[Store]:
    # a short directory: socket paths must fit the 107 bytes of sun_path (and the golden corpus
    # knows /tmp/vhu-XXXXXXXX/ as a temporary directory)
    root = Path(tempfile.mkdtemp(prefix="vhu-"))
    try:
        yield Store(root / "store", fake_host)
    finally:
        shutil.rmtree(root)


@pytest.fixture
def pm(vmdev_plugins: Any) -> PluginManager:
    manager: PluginManager = vmdev_plugins("vmdev-vhostuser")
    return manager


@pytest.fixture
def run(store: Store, pm: PluginManager) -> Any:
    def run(
        *devices: dict[str, Any],
        enabled: bool = True,
        rules: list[Any] | None = None,
        options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Plan:
        document: dict[str, Any] = {"linux": {"devices": list(devices)}}
        if rules is not None:
            document["linux"]["resources"] = {"devices": rules}
        settings.setdefault("memory_mib", 256)
        merged = {**store.options(enabled), **(options or {})}
        sandbox = SandboxSettings(options=merged, **settings)
        return plan(parse_spec(document), sandbox, host=store.context(), plugins=pm)

    return run
