"""A fake QEMU for tests of hot plug: a small model of what QMP commands do to a VM.

:class:`FakeQemu` implements :class:`vmdev.live.QmpTransport` in-process; :class:`FakeQmpServer`
serves the same model on a UNIX socket in QMP's wire format (greeting, ``qmp_capabilities``,
replies and events), so the real :class:`vmdev.live.QmpSession` and the ``vmdev`` command line can
be tested without QEMU. Plugin authors can run their hot-plug command sequences against it.

The model knows PCIe ports (``pcie-root-port``, ``xio3130-downstream``) with one device each,
devices on them (or on ``pcie.0`` and the buses of controllers such as a SCSI controller's
``scsi0.0``: :attr:`FakeQemu.bus_drivers`), QOM objects, block nodes, chardevs, netdevs and file
descriptors, with QEMU's error texts for missing buses, duplicate ids, busy nodes and unknown
objects.

**References are tracked.** Every string a ``device_add``, ``object-add``, ``blockdev-add``,
``chardev-add`` or ``netdev_add`` passes (at any depth of its arguments, its own name aside) that
names an existing object, block node, chardev, netdev, file descriptor or bus is a reference to
it, whatever the property is called (``drive``, ``rng``, ``chardev``, ``memdev``, ``netdev``,
``bus``, an IOMMU backend's property...). Removing something that is referenced is refused while
the referrer exists, so a manager that removes a shared object too early fails its tests. That is
stricter than QEMU, on purpose: QEMU refuses it for busy block nodes and chardevs, IOMMU backend
objects with users and mapped memory backends, but lets other objects (an RNG backend), netdevs
and file descriptors go from under their users, which leaves a device using something the VM no
longer lists; and ``device_del`` of a controller with devices on its bus is refused here.

A ``device_del`` is acknowledged by the "guest" at once (``DEVICE_DELETED``) unless ``guest_acks``
is False. Failures are injected with :meth:`FakeQemu.fail` and :meth:`FakeQemu.disconnect_after`.
Every command is recorded in :attr:`FakeQemu.log`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from vmdev.qmp import QmpCommandError, QmpConnectionError, QmpTimeoutError

_PORTS = {"root-port": "pcie-root-port", "switch-port": "xio3130-downstream"}
#: device properties that must name an existing backend (QEMU: "can't find value")
_LINKS = ("drive", "rng", "chardev", "memdev", "netdev")
#: the arguments that name the created thing itself
_OWN_NAME = ("id", "node-name", "fdname")
#: what a reference can point to; each kind is a table of the fake
_KINDS = ("object", "node", "chardev", "netdev", "fd", "bus")
Ref = tuple[str, str]


@attrs.define
class _Failure:
    command: str
    error_class: str
    desc: str
    times: int
    when: Callable[[Mapping[str, Any]], bool] | None

    def applies(self, command: str, args: Mapping[str, Any]) -> bool:
        return self.command == command and self.times > 0 and (self.when is None or self.when(args))


@attrs.define
class FakeQemu:
    """An in-process model of a running q35 QEMU's QMP (see the module documentation)."""

    guest_acks: bool = True
    #: ``(command, arguments)`` of every command received, in order
    log: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)
    #: device id -> (QOM type, bus)
    devices: dict[str, tuple[str, str]] = attrs.Factory(dict)
    #: object id -> (QOM type, properties)
    objects: dict[str, tuple[str, dict[str, Any]]] = attrs.Factory(dict)
    nodes: dict[str, dict[str, Any]] = attrs.Factory(dict)
    chardevs: dict[str, dict[str, Any]] = attrs.Factory(dict)
    netdevs: dict[str, dict[str, Any]] = attrs.Factory(dict)
    fds: set[str] = attrs.Factory(set)
    #: ``-machine`` properties ``qom-get /machine`` answers (others: "Property ... not found")
    machine: dict[str, Any] = attrs.Factory(lambda: {"type": "pc-q35-7.2-machine"})
    #: device drivers that provide child buses, by the suffixes of their buses (a SCSI controller
    #: ``scsi0`` of driver ``D`` with ``{D: (".0",)}`` provides bus ``scsi0.0``)
    bus_drivers: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    events: list[dict[str, Any]] = attrs.Factory(list)
    pending_unplug: set[str] = attrs.Factory(set)
    #: (kind, name) of everything created -> the (kind, name)s it references (kind "device" too)
    references: dict[Ref, set[Ref]] = attrs.Factory(dict)
    _failures: list[_Failure] = attrs.Factory(list)
    _disconnect_after: int | None = None
    _disconnect_on: str | None = None
    _lock: threading.RLock = attrs.Factory(threading.RLock)

    # --- building the VM -------------------------------------------------------------------------
    def add_port(self, port_id: str, kind: str = "root-port") -> FakeQemu:
        """A hot-plug port (``root-port`` or ``switch-port``) as if on the command line."""
        self.devices[port_id] = (_PORTS[kind], "pcie.0")
        return self

    def add_device(
        self, dev_id: str, qom_type: str, bus: str = "pcie.0", *, buses: tuple[str, ...] = ()
    ) -> FakeQemu:
        """A device present from boot, on ``bus``; ``buses`` are the suffixes of the child buses it
        provides (``(".0",)`` for a SCSI controller ``scsi0``: bus ``scsi0.0``)."""
        self.devices[dev_id] = (qom_type, bus)
        if buses:
            self.bus_drivers.setdefault(qom_type, buses)
        self.references[("device", dev_id)] = {("bus", bus)} if bus in self._buses() else set()
        return self

    def add_object(self, obj_id: str, qom_type: str, **props: Any) -> FakeQemu:
        self.objects[obj_id] = (qom_type, dict(props))
        return self

    # --- failure injection -----------------------------------------------------------------------
    def fail(
        self,
        command: str,
        desc: str,
        *,
        error_class: str = "GenericError",
        times: int = 1,
        when: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` ``command``s (whose arguments satisfy ``when``) with an error."""
        self._failures.append(_Failure(command, error_class, desc, times, when))

    def disconnect_after(self, commands: int) -> None:
        """Let ``commands`` more commands through, then behave like a dead QEMU."""
        self._disconnect_after = len(self.log) + commands

    def disconnect_on(self, command: str) -> None:
        """Die (like a killed QEMU) when ``command`` arrives, before running it."""
        self._disconnect_on = command

    def ack_pending(self) -> None:
        """The guest releases every device whose unplug is pending (``DEVICE_DELETED``)."""
        with self._lock:
            for dev_id in sorted(self.pending_unplug):
                self._delete_device(dev_id)
            self.pending_unplug.clear()

    # --- what is there ---------------------------------------------------------------------------
    def leftovers(self) -> dict[str, list[str]]:
        """Everything hot plug created that is still there (ports and boot devices excluded)."""
        return {
            "devices": sorted(d for d, (t, _) in self.devices.items() if t not in _PORTS.values()),
            "objects": sorted(self.objects),
            "nodes": sorted(self.nodes),
            "chardevs": sorted(self.chardevs),
            "netdevs": sorted(self.netdevs),
        }

    # --- QmpTransport ----------------------------------------------------------------------------
    def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 30.0
    ) -> Any:
        with self._lock:
            args = dict(arguments or {})
            if command == self._disconnect_on:
                self._disconnect_after = len(self.log)
            if self._disconnect_after is not None and len(self.log) >= self._disconnect_after:
                raise QmpConnectionError(f"connection to QEMU lost during {command}: EOF", field="qmp")
            self.log.append((command, args))
            failure = next((f for f in self._failures if f.applies(command, args)), None)
            if failure is not None:
                failure.times -= 1
                raise QmpCommandError(command, failure.error_class, failure.desc)
            handler = getattr(self, "_cmd_" + command.replace("-", "_"), None)
            if handler is None:
                raise QmpCommandError(command, "CommandNotFound", f"The command {command} has not been found")
            return handler(args)

    def event_mark(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_event(
        self, name: str, match: Mapping[str, Any], *, after: int, timeout: float
    ) -> Mapping[str, Any]:
        with self._lock:
            for event in self.events[after:]:
                data = event.get("data", {})
                if event["event"] == name and all(data.get(k) == v for k, v in match.items()):
                    return event
        raise QmpTimeoutError(f"no {name} event matching {dict(match)} within {timeout:g} s", field="qmp")

    def close(self) -> None:
        pass

    # --- commands --------------------------------------------------------------------------------
    def _err(self, command: str, desc: str, error_class: str = "GenericError") -> QmpCommandError:
        return QmpCommandError(command, error_class, desc)

    def _cmd_qmp_capabilities(self, args: dict[str, Any]) -> Any:
        return {}

    def _cmd_query_status(self, args: dict[str, Any]) -> Any:
        return {"status": "running", "running": True}

    def _cmd_quit(self, args: dict[str, Any]) -> Any:
        return {}

    def _buses(self) -> dict[str, str]:
        """bus name -> the device providing it."""
        buses = {"pcie.0": ""}
        for dev_id, (qom_type, _) in self.devices.items():
            if qom_type in _PORTS.values():
                buses[dev_id] = dev_id
            for suffix in self.bus_drivers.get(qom_type, ()):
                buses[dev_id + suffix] = dev_id
        return buses

    # --- references ------------------------------------------------------------------------------
    def _table(self, kind: str) -> Mapping[str, Any]:
        tables: dict[str, Mapping[str, Any]] = {
            "object": self.objects, "node": self.nodes, "chardev": self.chardevs, "netdev": self.netdevs,
            "fd": dict.fromkeys(self.fds), "bus": self._buses(),
        }
        return tables[kind]

    def _mentions(self, args: Mapping[str, Any]) -> set[Ref]:
        """The existing things ``args`` name, at any depth, their own name aside."""
        strings: set[str] = set()

        def walk(value: Any) -> None:
            if isinstance(value, str):
                strings.add(value)
            elif isinstance(value, Mapping):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)

        for key, value in args.items():
            if key not in _OWN_NAME:
                walk(value)
        return {(kind, name) for kind in _KINDS for name in strings if name in self._table(kind)}

    def _created(self, kind: str, name: str, args: Mapping[str, Any]) -> None:
        self.references[(kind, name)] = self._mentions(args)

    def _referrers(self, kind: str, name: str) -> list[str]:
        """Who refers to ``(kind, name)``: ``kind name`` of each referrer, sorted."""
        return sorted(f"{k} {n}" for (k, n), refs in self.references.items() if (kind, name) in refs)

    def _forget(self, kind: str, name: str) -> None:
        self.references.pop((kind, name), None)

    def _cmd_qom_list(self, args: dict[str, Any]) -> Any:
        path = str(args.get("path", ""))
        props: list[dict[str, str]] = [{"name": "type", "type": "string"}]
        if path == "/machine/peripheral":
            return props + [{"name": d, "type": f"child<{t}>"} for d, (t, _) in self.devices.items()]
        if path == "/objects":
            return props + [{"name": o, "type": f"child<{t}>"} for o, (t, _) in self.objects.items()]
        parts = path.split("/")
        if len(parts) == 4 and path.startswith("/machine/peripheral/") and parts[3] in self.devices:
            if self.devices[parts[3]][0] in _PORTS.values():
                props.append({"name": parts[3], "type": "child<PCIE>"})
            return props
        if len(parts) == 5 and path.startswith("/machine/peripheral/") and parts[3] in self.devices:
            on_bus = [d for d, (_, bus) in self.devices.items() if bus == parts[4]]
            return props + [{"name": f"child[{i}]", "type": "link<pci-device>"} for i, _ in enumerate(on_bus)]
        raise self._err("qom-list", f"Device '{path}' not found", "DeviceNotFound")

    def _cmd_qom_get(self, args: dict[str, Any]) -> Any:
        path, prop = str(args.get("path")), str(args.get("property"))
        if path == "/machine" and prop in self.machine:
            return self.machine[prop]
        if path.startswith("/objects/") and path[len("/objects/"):] in self.objects:
            qom_type, props = self.objects[path[len("/objects/"):]]
            return qom_type if prop == "type" else props.get(prop, False)
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/machine/peripheral/") and name in self.devices and prop == "type":
            return self.devices[name][0]
        raise self._err("qom-get", f"Property '{prop}' not found")

    def _cmd_query_named_block_nodes(self, args: dict[str, Any]) -> Any:
        return [{"node-name": name, "drv": node.get("driver", "raw")} for name, node in self.nodes.items()]

    def _cmd_query_chardev(self, args: dict[str, Any]) -> Any:
        return [{"label": "compat_monitor0", "filename": "unix:qmp.sock,server=on"}] + [
            {"label": label, "filename": "unix"} for label in self.chardevs
        ]

    def _cmd_object_add(self, args: dict[str, Any]) -> Any:
        obj_id, qom_type = str(args.get("id", "")), str(args.get("qom-type", ""))
        if obj_id in self.objects:
            raise self._err("object-add", f"attempt to add duplicate property '{obj_id}' to object")
        self._created("object", obj_id, args)
        self.objects[obj_id] = (qom_type, {k: v for k, v in args.items() if k not in ("id", "qom-type")})
        return {}

    def _cmd_object_del(self, args: dict[str, Any]) -> Any:
        obj_id = str(args.get("id", ""))
        if obj_id not in self.objects:
            raise self._err("object-del", f"object '{obj_id}' not found")
        if self._referrers("object", obj_id):
            raise self._err("object-del", f"object '{obj_id}' is in use, can not be deleted")
        del self.objects[obj_id]
        self._forget("object", obj_id)
        return {}

    def _cmd_blockdev_add(self, args: dict[str, Any]) -> Any:
        name = str(args.get("node-name", ""))
        if name in self.nodes:
            raise self._err("blockdev-add", f"Duplicate nodes with node-name='{name}'")
        self._created("node", name, args)
        self.nodes[name] = dict(args)
        return {}

    def _cmd_blockdev_del(self, args: dict[str, Any]) -> Any:
        name = str(args.get("node-name", ""))
        if name not in self.nodes:
            raise self._err("blockdev-del", f"Failed to find node with node-name='{name}'")
        users = self._referrers("node", name)
        if users:
            raise self._err("blockdev-del", f"Node '{name}' is busy: node is used by {users[0]}")
        del self.nodes[name]
        self._forget("node", name)
        return {}

    def _cmd_chardev_add(self, args: dict[str, Any]) -> Any:
        label = str(args.get("id", ""))
        if label in self.chardevs:
            raise self._err("chardev-add", f"attempt to add duplicate property '{label}' to object")
        self._created("chardev", label, args)
        self.chardevs[label] = dict(args)
        return {}

    def _cmd_chardev_remove(self, args: dict[str, Any]) -> Any:
        label = str(args.get("id", ""))
        if label not in self.chardevs:
            raise self._err("chardev-remove", f"Chardev '{label}' not found")
        if self._referrers("chardev", label):
            raise self._err("chardev-remove", f"Chardev '{label}' is busy")
        del self.chardevs[label]
        self._forget("chardev", label)
        return {}

    def _cmd_netdev_add(self, args: dict[str, Any]) -> Any:
        name = str(args.get("id", ""))
        if name in self.netdevs:
            raise self._err("netdev_add", f"Duplicate ID '{name}' for netdev")
        self._created("netdev", name, args)
        self.netdevs[name] = dict(args)
        return {}

    def _cmd_netdev_del(self, args: dict[str, Any]) -> Any:
        name = str(args.get("id", ""))
        if name not in self.netdevs:
            raise self._err("netdev_del", f"Device '{name}' not found", "DeviceNotFound")
        users = self._referrers("netdev", name)
        if users:  # stricter than QEMU, which lets the NIC lose its peer
            raise self._err("netdev_del", f"Netdev '{name}' is in use by {users[0]}")
        del self.netdevs[name]
        self._forget("netdev", name)
        return {}

    def _cmd_getfd(self, args: dict[str, Any]) -> Any:
        self.fds.add(str(args.get("fdname", "")))
        return {}

    def _cmd_closefd(self, args: dict[str, Any]) -> Any:
        name = str(args.get("fdname", ""))
        if name not in self.fds:
            raise self._err("closefd", f"File descriptor named '{name}' not found")
        users = self._referrers("fd", name)
        if users:  # stricter than QEMU
            raise self._err("closefd", f"File descriptor named '{name}' is in use by {users[0]}")
        self.fds.discard(name)
        return {}

    def _cmd_device_add(self, args: dict[str, Any]) -> Any:
        dev_id, driver = str(args.get("id", "")), str(args.get("driver", ""))
        if dev_id and dev_id in self.devices:
            raise self._err("device_add", f"Duplicate device ID '{dev_id}'")
        bus = str(args.get("bus", "pcie.0"))
        buses = self._buses()
        if bus not in buses:
            raise self._err("device_add", f"Bus '{bus}' not found")
        if bus == "pcie.0":
            raise self._err("device_add", "Bus 'pcie.0' does not support hotplugging")
        tables: dict[str, Mapping[str, Any]] = {
            "drive": self.nodes, "chardev": self.chardevs, "netdev": self.netdevs
        }
        for key in _LINKS:
            name = args.get(key)
            if name is not None and str(name) not in tables.get(key, self.objects):
                raise self._err("device_add", f"Property '{driver}.{key}' can't find value '{name}'")
        dev_id = dev_id or f"anon{len(self.devices)}"
        self._created("device", dev_id, args)
        self.devices[dev_id] = (driver, bus)
        return {}

    def _cmd_device_del(self, args: dict[str, Any]) -> Any:
        dev_id = str(args.get("id", ""))
        if dev_id not in self.devices:
            raise self._err("device_del", f"Device '{dev_id}' not found", "DeviceNotFound")
        if dev_id in self.pending_unplug:
            raise self._err("device_del", f"Device {dev_id} is already in the process of unplug")
        children = [u for bus, owner in self._buses().items() if owner == dev_id and bus != dev_id
                    for u in self._referrers("bus", bus)]
        if children:  # stricter than QEMU, which would pull them out of the guest with it
            raise self._err("device_del", f"Device '{dev_id}' has devices on its bus: {', '.join(children)}")
        if self.guest_acks:
            self._delete_device(dev_id)
        else:
            self.pending_unplug.add(dev_id)
        return {}

    def _delete_device(self, dev_id: str) -> None:
        self.devices.pop(dev_id, None)
        self._forget("device", dev_id)
        path = f"/machine/peripheral/{dev_id}"
        self.events.append({"event": "DEVICE_DELETED", "data": {"path": path + "/virtio-backend"}})
        self.events.append({"event": "DEVICE_DELETED", "data": {"device": dev_id, "path": path}})


class FakeQmpServer:
    """Serves a :class:`FakeQemu` on a UNIX socket in QMP's wire format, one client at a time.

    ``greet=False`` accepts connections but never greets (a monitor busy with another client).
    Use it as a context manager; :meth:`kill` makes it vanish like a killed QEMU.
    """

    def __init__(self, qemu: FakeQemu, path: str | os.PathLike[str], *, greet: bool = True) -> None:
        self.qemu = qemu
        self.path = Path(path)
        self.greet = greet
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(4)
        self._sock.settimeout(0.05)  # accept() wakes up to notice kill()
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="fake-qmp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._clients.append(conn)
            with contextlib.suppress(OSError):
                self._talk(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _talk(self, conn: socket.socket) -> None:
        if not self.greet:
            self._stop.wait()
            return
        sent_events = len(self.qemu.events)
        _send(conn, {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                             "capabilities": []}})
        for message in _messages(conn):
            if self._stop.is_set():
                return
            reply: dict[str, Any] = {}
            if "id" in message:
                reply["id"] = message["id"]
            try:
                reply["return"] = self.qemu.execute(str(message["execute"]), message.get("arguments"))
            except QmpCommandError as exc:
                reply["error"] = {"class": exc.error_class, "desc": exc.desc}
            except QmpConnectionError:
                return  # a dead QEMU: drop the connection
            for event in self.qemu.events[sent_events:]:
                _send(conn, {**event, "timestamp": {"seconds": 0, "microseconds": 0}})
            sent_events = len(self.qemu.events)
            _send(conn, reply)

    def kill(self) -> None:
        """Close the socket and every connection, like a QEMU that was killed."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        for conn in self._clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._thread.join(5.0)

    def __enter__(self) -> FakeQmpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _messages(conn: socket.socket) -> Iterator[dict[str, Any]]:
    """The JSON objects a client sends (QMP is a stream of JSON values, not lines)."""
    decoder = json.JSONDecoder()
    buffer = ""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buffer += chunk.decode("utf-8")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                message, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError:
                break  # incomplete: wait for more
            buffer = buffer[end:]
            yield message


def _send(conn: socket.socket, message: Mapping[str, Any]) -> None:
    conn.sendall((json.dumps(message) + "\n").encode("utf-8"))


__all__ = ["FakeQemu", "FakeQmpServer"]
