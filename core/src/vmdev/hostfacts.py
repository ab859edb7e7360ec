"""Devices of a saved sandbox and the host facts they were built from, so that drift is seen, not hidden.

A running sandbox's device is the one the host had when it was built. If the host changes later
(a node now names another device, a disk image was replaced, a PCI function went to another
driver), rebuilding the device from the host would silently change what a running VM gets. The
device manager therefore rebuilds saved devices from their saved form (``device_from_state``)
and compares the facts recorded at build with the host's now: ``vmdev status`` shows what
changed, and ``vmdev attach`` of such a device fails naming the fact.

The core records the host node's own facts for every device with a host path (:func:`node_facts`:
``node.type`` and, for device nodes, ``node.rdev``, through :attr:`HostContext.stat`); a family
adds its own through the ``host_facts`` hook. :class:`DeviceObjects` keeps a sandbox's device
objects and does both for the device manager.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs

from vmdev.errors import DeviceError
from vmdev.host import HostContext
from vmdev.models import Device
from vmdev.state import DeviceRecord

if TYPE_CHECKING:
    from vmdev.plugins import PluginManager

#: the kind of file the host path is (``block``, ``char``, ``file``, ``fifo``, ``dir``, ``socket``,
#: ``missing``, ``unreadable``)
NODE_TYPE: Final = "node.type"
#: ``major:minor`` of a device node
NODE_RDEV: Final = "node.rdev"
#: the facts the core itself records
CORE_FACTS: Final = (NODE_TYPE, NODE_RDEV)

_TYPES: Final = (
    (stat.S_ISBLK, "block"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISREG, "file"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISSOCK, "socket"),
)


def node_facts(host_path: str, host: HostContext) -> dict[str, str]:
    """The type (and ``major:minor`` for a device node) of ``host_path`` now; none without a path."""
    if not host_path:
        return {}
    try:
        info = host.stat(str(host.dev_path(host_path)))
    except (FileNotFoundError, NotADirectoryError):
        return {NODE_TYPE: "missing"}
    except OSError:
        return {NODE_TYPE: "unreadable"}
    kind = next((name for test, name in _TYPES if test(info.st_mode)), "other")
    if kind in ("block", "char"):
        return {NODE_TYPE: kind, NODE_RDEV: f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"}
    return {NODE_TYPE: kind}


@attrs.frozen
class FactChange:
    """One recorded fact that differs now (``now`` is ``None`` when the fact is gone)."""

    fact: str
    recorded: str
    now: str | None

    def describe(self) -> str:
        now = "gone" if self.now is None else f"now {self.now!r}"
        return f"{self.fact} was {self.recorded!r}, {now}"

    def to_json(self) -> dict[str, str | None]:
        return {"fact": self.fact, "recorded": self.recorded, "now": self.now}


def changes(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[FactChange]:
    """The recorded facts that differ now, in recorded order (facts not recorded are not compared)."""
    return [FactChange(fact, value, now.get(fact)) for fact, value in recorded.items()
            if now.get(fact) != value]


def needs_device(recorded: Mapping[str, str]) -> bool:
    """Whether comparing ``recorded`` needs the family's facts (hence the device), not only the node's."""
    return any(fact not in CORE_FACTS for fact in recorded)


class DeviceObjects:
    """A sandbox's device objects by id: built in this process (:meth:`keep`), or rebuilt from
    their saved form by their family's ``device_from_state`` hook, never from the host; and the
    host facts they are built from. Safe to share between threads."""

    def __init__(self, plugins: PluginManager, host: HostContext) -> None:
        self.plugins = plugins
        self.host = host
        self._lock = threading.Lock()
        self._objects: dict[str, Device] = {}

    def keep(self, device: Device) -> None:
        with self._lock:
            self._objects[device.id] = device

    def forget(self, device_id: str) -> None:
        with self._lock:
            self._objects.pop(device_id, None)

    def of(self, record: DeviceRecord) -> Device:
        """The device of ``record``."""
        with self._lock:
            device = self._objects.get(record.id)
        if device is not None:
            return device
        device = self.plugins.device_from_state(record.kind, record.device, record.plugin, name=record.name)
        if device.id != record.id:
            raise DeviceError(
                f"plugin {record.plugin!r} rebuilds the saved device as {device.id!r}, not as the recorded "
                f"{record.id!r}",
                device=record.name,
                field="id",
            )
        with self._lock:
            return self._objects.setdefault(record.id, device)

    def facts(self, device: Device, host_path: str, name: str) -> dict[str, str]:
        """The host facts ``device`` is built from now: its node's, then its family's."""
        facts = node_facts(host_path, self.host)
        for fact, value in self.plugins.host_facts(device, self.host, name=name).items():
            facts.setdefault(fact, value)
        return facts

    def changes(self, record: DeviceRecord) -> list[FactChange]:
        """The facts recorded when ``record``'s device was built that differ now (the device is
        rebuilt only when its family recorded facts of its own)."""
        if not record.facts:
            return []
        now = node_facts(record.host_path, self.host)
        if needs_device(record.facts):
            family = self.plugins.host_facts(self.of(record), self.host, name=record.name)
            now = {**family, **now}
        return changes(record.facts, now)


__all__ = [
    "CORE_FACTS",
    "NODE_RDEV",
    "NODE_TYPE",
    "DeviceObjects",
    "FactChange",
    "changes",
    "needs_device",
    "node_facts",
]
