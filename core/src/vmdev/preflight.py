"""Pre-flight of a plan against the real QEMU binary: ``vmdev check --qemu BINARY PLAN|OCI_CONFIG``.

A plan is rendered without ever asking a hypervisor, so an object type or property an older QEMU
lacks (one a plugin renders for a newer release) or a misspelt one shows up only when the sandbox
starts. This module asks the binary itself, without booting anything: QEMU is started with
``-machine none -S`` and QMP on stdio, and answers ``query-qmp-schema``, ``qom-list-types``,
``query-machines``, ``query-command-line-options``, ``query-chardev-backends``,
``device-list-properties`` for every device driver of the plan, ``qom-list-properties`` for every
``-object`` type and the machine type.
Each argv option and QMP command of the plan is then checked against those answers:

=============  ==================================================================================
``-device``    the driver exists; every property is one ``device-list-properties`` lists (``id``
               and ``bus`` are qdev's own); booleans are booleans
``-object``    the type is user-creatable; every property is one ``qom-list-properties`` lists
``-machine``   the machine type (or alias) exists; properties are the machine's QOM properties or
               the legacy keys of ``query-command-line-options`` (``accel``...); ``_`` = ``-``
``-m``         the keys of ``query-command-line-options`` ``memory``
``-chardev``   the backend is in ``query-chardev-backends``; keys of ``... chardev``
``-netdev``    ``netdev_add``'s QAPI schema (the ``Netdev`` union) with ``type`` = the head
``-blockdev``  ``blockdev-add``'s QAPI schema (``BlockdevOptions``) for that driver, nested keys
               (``file.filename``) included, JSON or keyval
``-fsdev``     the fs driver and the keys of ``... fsdev``
QMP            ``execute`` is a command of the schema; ``device_add`` and ``object-add`` as
               ``-device`` and ``-object``; every other command's arguments against its schema
=============  ==================================================================================

Options are split with QEMU's own rules (``,,`` is a literal comma, the first element without
``=`` is the implied key, a later one is a short-form boolean, which QEMU deprecates and which is
what an unescaped comma in a path turns into). Each mismatch names the plan device the option
belongs to: an option whose id (or an id it refers to) is one of the device's values in the plan,
or ends with the device's id (``virtio-<id>``, ``chr-<id>``), or is created by or only used by
such an option; everything else belongs to ``sandbox``.

The answers are cached per binary in ``$XDG_CACHE_HOME/vmdev/qemu-<version>-<key>.json``, where
the key digests the binary's real path, size, inode, mtime and ctime: a different binary, or the
same path after an upgrade, never reuses another's answers. Properties are asked for lazily (the
types a plan uses, added to the cache). libvirt keeps its capability cache the same way (keyed
by the binary's path and ctime); Kata asks QEMU nothing before it starts the VM.

The checks need a QEMU-like backend part (``argv`` plus QMP ``hotplug``/``unplug``), which the
StratoVirt example's backend has too; but ``--qemu`` asks a QEMU binary, so the command refuses a
plan for any other hypervisor. Where QEMU itself is wrong, the checker says so instead of
guessing: QEMU 7.2 aborts on ``qom-list-properties`` of ``microvm-machine``, so machine
properties fall back to ``-machine TYPE,help``; a type whose properties QEMU cannot list is a
note, never a mismatch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

import attrs
import click

from vmdev.cliutil import SettingsCommand, errors_as_one_line, flag_overrides, host_context
from vmdev.errors import ConfigError, UnsupportedError, VmdevError, one_line
from vmdev.qemu import split_opts

if TYPE_CHECKING:
    import subprocess

# subprocess, select, tempfile, hashlib, shutil and difflib are imported where they are used: every
# vmdev command imports this module (the CLI registers ``check``), and only ``check`` needs them

#: the version of the cache file format; another version is ignored (and rewritten)
CACHE_FORMAT: Final = 1
#: how QEMU is started for the questions: no machine, no CPU run, nothing but QMP on stdio
PROBE_ARGS: Final = ("-machine", "none", "-S", "-nodefaults", "-no-user-config", "-display", "none",
                     "-qmp", "stdio")
PROBE_TIMEOUT: Final = 30.0
SANDBOX: Final = "sandbox"
QEMU_HYPERVISOR: Final = "qemu"

#: options whose values are checked, with the key QEMU implies for the first element
IMPLIED: Final[Mapping[str, str]] = {
    "-device": "driver", "-object": "qom-type", "-machine": "type", "-m": "size", "-blockdev": "driver",
    "-chardev": "backend", "-netdev": "type", "-fsdev": "fsdriver",
}
#: options QEMU also reads as JSON when the value starts with ``{``
JSON_OPTIONS: Final = frozenset({"-device", "-object", "-blockdev", "-netdev"})
#: QEMU's options without a value (qemu-options.hx); every other option takes one
NO_VALUE_OPTIONS: Final = frozenset({
    "-S", "-s", "-snapshot", "-nodefaults", "-nographic", "-no-reboot", "-no-shutdown", "-no-user-config",
    "-enable-kvm", "-daemonize", "-mem-prealloc", "-usb", "-no-acpi", "-no-hpet", "-full-screen",
    "-portrait", "-win2k-hack", "-no-fd-bootchk", "-preconfig", "-only-migratable", "-enable-sync-profile",
    "-semihosting", "-version", "-help", "-h", "-audio-help", "-alt-grab", "-ctrl-grab", "-no-quit",
    "-old-param", "-xen-attach", "-xen-domid-restrict", "-enable-fips", "-singlestep",
})
OPTION_ALIASES: Final = {"-M": "-machine"}
#: keys qdev handles for every device, not properties of the type
DEVICE_KEYS: Final = frozenset({"driver", "id", "bus"})
OBJECT_KEYS: Final = frozenset({"qom-type", "id"})
#: ``-machine`` keys QEMU takes apart from the machine's properties (vl.c's legacy options)
LEGACY_MACHINE_KEYS: Final = frozenset({"type", "accel", "kernel-irqchip", "kvm-shadow-mem", "igd-passthru"})
#: QOM's read-only ``type`` property, listed for every object but never settable
OBJECT_READ_ONLY: Final = frozenset({"type"})
#: QEMU's -fsdev drivers (fsdev/qemu-fsdev.c; QMP cannot list them)
FSDEV_DRIVERS: Final = frozenset({"local", "proxy", "synth"})
#: arguments that name the object a step or option is about
OWN_KEYS: Final = ("id", "node-name", "fdname")
BOOL_WORDS: Final = frozenset({"on", "off", "yes", "no", "true", "false", "y", "n"})
_NUMBER: Final = re.compile(r"[+-]?(0x[0-9a-f]+|[0-9]+)", re.IGNORECASE)
_SIZE: Final = re.compile(r"[0-9]+(\.[0-9]+)?\s*[bkmgtpe]?", re.IGNORECASE)
_HELP_LINE: Final = re.compile(r"\s+([A-Za-z0-9_.-]+)=<([^>]*)>")
_VERSION_SAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


class PreflightError(VmdevError):
    """The binary could not be asked (missing, not QEMU, died, answered nonsense)."""


# --- what the binary answered --------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Listing:
    """The properties of one type (name -> QEMU's type name), or why QEMU could not list them."""

    properties: Mapping[str, str] | None = None
    error: str = ""
    source: str = "qmp"

    def to_json(self) -> dict[str, Any]:
        if self.properties is None:
            return {"error": self.error}
        return {"properties": dict(self.properties), "source": self.source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Listing:
        if "properties" in data:
            return cls(properties=dict(data["properties"]), source=str(data.get("source", "qmp")))
        return cls(error=str(data.get("error", "unknown")))


#: the property kinds: -device drivers, -object types, machine types
KINDS: Final = ("device", "object", "machine")


def _index(schema: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(entry["name"]): entry for entry in schema}


@attrs.frozen(kw_only=True)
class QemuFacts:
    """What one QEMU binary answered: the schema, its types, machines, command-line options, and the
    properties of the types asked for so far (``properties[kind][type]``)."""

    version: str
    package: str = ""
    schema: tuple[Mapping[str, Any], ...] = ()
    device_types: frozenset[str] = frozenset()
    object_types: frozenset[str] = frozenset()
    machines: Mapping[str, str] = attrs.field(factory=dict)
    command_line: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    chardev_backends: frozenset[str] = frozenset()
    properties: Mapping[str, Mapping[str, Listing]] = attrs.field(factory=dict)
    by_name: Mapping[str, Mapping[str, Any]] = attrs.field(init=False, repr=False, eq=False)

    @by_name.default
    def _by_name(self) -> Mapping[str, Mapping[str, Any]]:
        return _index(self.schema)

    def listing(self, kind: str, typename: str) -> Listing | None:
        return self.properties.get(kind, {}).get(typename)

    def machine(self, name: str) -> str | None:
        """The machine type ``name`` (or its alias) stands for, None if QEMU has none."""
        return self.machines.get(name)

    def command(self, name: str) -> Mapping[str, Any] | None:
        entry = self.by_name.get(name)
        return entry if entry is not None and entry.get("meta-type") == "command" else None

    def with_listings(self, kind: str, listings: Mapping[str, Listing]) -> QemuFacts:
        merged = {k: dict(v) for k, v in self.properties.items()}
        merged.setdefault(kind, {}).update(listings)
        return attrs.evolve(self, properties=merged)

    def missing(self, needs: Needs) -> Needs:
        """The types of ``needs`` whose properties have not been asked for yet."""
        return Needs(**{kind: frozenset(t for t in getattr(needs, kind) if self.listing(kind, t) is None)
                         for kind in KINDS})

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "package": self.package,
            "schema": list(self.schema),
            "device-types": sorted(self.device_types),
            "object-types": sorted(self.object_types),
            "machines": dict(self.machines),
            "command-line-options": {k: dict(v) for k, v in self.command_line.items()},
            "chardev-backends": sorted(self.chardev_backends),
            "properties": {kind: {t: listing.to_json() for t, listing in sorted(types.items())}
                           for kind, types in self.properties.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QemuFacts:
        """Facts as :meth:`to_json` wrote them (a cache file, or a recorded probe in tests)."""
        properties = {kind: {t: Listing.from_json(v) for t, v in types.items()}
                      for kind, types in dict(data.get("properties", {})).items()}
        return cls(
            version=str(data["version"]),
            package=str(data.get("package", "")),
            schema=tuple(data.get("schema", ())),
            device_types=frozenset(data.get("device-types", ())),
            object_types=frozenset(data.get("object-types", ())),
            machines=dict(data.get("machines", {})),
            command_line={k: dict(v) for k, v in dict(data.get("command-line-options", {})).items()},
            chardev_backends=frozenset(data.get("chardev-backends", ())),
            properties=properties,
        )


@attrs.frozen
class Needs:
    """The types whose properties a plan needs, by kind."""

    device: frozenset[str] = frozenset()
    object: frozenset[str] = frozenset()
    machine: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.device or self.object or self.machine)


# --- the plan's options and QMP commands ---------------------------------------------------------
@attrs.frozen(kw_only=True)
class PlanItem:
    """One checked option of the plan's argv (``-device``, ...), or one QMP command (``kind`` qmp).

    ``head`` is the implied first value (driver, type, backend) or the QMP command; ``props`` the
    rest (nested for ``-blockdev``); ``bare`` the elements without ``=`` after the first (QEMU reads
    ``x`` as ``x=on``); ``twice`` the keys given more than once."""

    source: str
    index: int
    kind: str
    head: str
    props: Mapping[str, Any] = attrs.field(factory=dict)
    json: bool = False
    bare: tuple[str, ...] = ()
    twice: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """The option and its head (``-device e1000``), or the QMP list, command and what it adds
        (``hotplug device_add e1000``)."""
        if self.kind == "qmp":
            key = {"device_add": "driver", "object-add": "qom-type", "blockdev-add": "driver",
                   "netdev_add": "type"}.get(self.head)
            value = self.props.get(key) if key else None
            command = f"{self.source} {self.head}"
            return f"{command} {value}" if isinstance(value, str) else command
        return f"{self.kind} {self.head}" if self.head else self.kind

    def label(self, key: str = "") -> str:
        return f"{self.subject},{key}" if key else self.subject

    @property
    def own(self) -> frozenset[str]:
        """The names this item creates or removes (its ``id``, ``node-name``, ``fdname``)."""
        return frozenset(v for k in OWN_KEYS if isinstance(v := self.props.get(k), str) and v)


@attrs.frozen(kw_only=True)
class Mismatch:
    """One problem: the plan device, the option (``-device e1000,mac``) and what is wrong."""

    device: str
    option: str
    problem: str
    source: str = "argv"
    index: int = 0

    def line(self) -> str:
        return f"vmdev: check: {one_line(self.device)}: {one_line(self.option)}: {one_line(self.problem)}"

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "option": self.option, "problem": self.problem,
                "source": self.source, "index": self.index}


@attrs.frozen(kw_only=True)
class ParsedPart:
    items: tuple[PlanItem, ...]
    problems: tuple[Mismatch, ...] = ()
    unchecked: tuple[str, ...] = ()


def parse_part(part: Mapping[str, Any]) -> ParsedPart:
    """The checked options of a QEMU-like plan part (``argv``, ``hotplug``, ``unplug``)."""
    argv = _str_list(part.get("argv", []), "argv")
    items, problems, unchecked = _parse_argv(argv)
    for source in ("hotplug", "unplug"):
        for index, step in enumerate(_steps(part.get(source, []), source)):
            items.append(PlanItem(source=source, index=index, kind="qmp", head=step[0], props=step[1],
                                  json=True))
    return ParsedPart(items=tuple(items), problems=tuple(problems), unchecked=tuple(unchecked))


def _str_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("must be a list of strings", field=f"$.qemu.{field}")
    return value


def _steps(value: Any, source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(value, list):
        raise ConfigError("must be a list of QMP commands", field=f"$.qemu.{source}")
    for index, step in enumerate(value):
        execute = step.get("execute") if isinstance(step, dict) else None
        arguments = step.get("arguments", {}) if isinstance(step, dict) else None
        if not isinstance(execute, str) or not isinstance(arguments, dict):
            raise ConfigError('must be {"execute": NAME, "arguments": {...}}',
                              field=f"$.qemu.{source}[{index}]")
        yield execute, arguments


def _parse_argv(argv: Sequence[str]) -> tuple[list[PlanItem], list[Mismatch], list[str]]:
    items: list[PlanItem] = []
    problems: list[Mismatch] = []
    unchecked: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        flag = OPTION_ALIASES.get(arg, "-" + arg.lstrip("-")) if arg.startswith("-") else ""
        if not flag or flag == "-":
            problems.append(Mismatch(device=SANDBOX, option=arg, problem="not an option: a value without one",
                                     index=index))
            index += 1
            continue
        if flag in NO_VALUE_OPTIONS:
            unchecked.append(flag)
            index += 1
            continue
        if index + 1 >= len(argv):
            problems.append(Mismatch(device=SANDBOX, option=flag, problem="needs a value", index=index))
            break
        if flag in IMPLIED:
            parsed = _parse_option(flag, argv[index + 1], index)
            if isinstance(parsed, Mismatch):
                problems.append(parsed)
            else:
                items.append(parsed)
        else:
            unchecked.append(flag)
        index += 2
    return items, problems, unchecked


def _parse_option(flag: str, value: str, index: int) -> PlanItem | Mismatch:
    implied = IMPLIED[flag]
    if flag in JSON_OPTIONS and value.lstrip().startswith("{"):
        from vmdev.strictjson import JsonError, json_value

        try:  # strict, as every document vmdev reads: nesting json.loads would stop at is refused
            data = json_value(value)
        except JsonError as exc:
            return Mismatch(device=SANDBOX, option=flag, problem=f"not valid JSON: {exc}", index=index)
        if not isinstance(data, dict):
            return Mismatch(device=SANDBOX, option=flag, problem="JSON value is not an object", index=index)
        head = data.pop(implied, "")
        return PlanItem(source="argv", index=index, kind=flag, head=str(head), props=data, json=True)
    props, bare, twice = _keyvals(split_opts(value), implied, nested=flag == "-blockdev",
                                  dashify=flag == "-machine")
    head = props.pop(implied, "")
    return PlanItem(source="argv", index=index, kind=flag, head=head if isinstance(head, str) else "",
                    props=props, bare=tuple(bare), twice=tuple(twice))


def _keyvals(parts: Sequence[str], implied: str, *, nested: bool, dashify: bool
             ) -> tuple[dict[str, Any], list[str], list[str]]:
    """QEMU's keyval: the first element without ``=`` is ``implied``; ``nested`` turns dotted keys
    into objects (``file.filename`` of ``-blockdev``); ``dashify`` is ``-machine``'s ``_`` = ``-``."""
    props: dict[str, Any] = {}
    bare: list[str] = []
    twice: list[str] = []
    for position, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if not sep:
            if position == 0:
                key, value = implied, part
            else:
                bare.append(part)
                continue
        if dashify:
            key = key.replace("_", "-")
        if not _store(props, key.split(".") if nested else [key], value):
            twice.append(key)
    return props, bare, twice


def _store(props: dict[str, Any], path: list[str], value: str) -> bool:
    node = props
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return False
        node = child
    if path[-1] in node:
        return False
    node[path[-1]] = value
    return True


# --- which device an option belongs to -----------------------------------------------------------
def device_name(device: Mapping[str, Any]) -> str:
    """What the plan and its errors call a device: its container path, else its id."""
    return str(device.get("container_path") or device.get("id") or "?")


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, Mapping):
        return set().union(*(_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def _refs(item: PlanItem, created: set[str]) -> frozenset[str]:
    """The names ``item`` refers to (``drive=``, ``bus=scsi0.0``): of the plan's options and objects
    (``created``), or of its devices."""
    values = _strings({k: v for k, v in item.props.items() if k not in OWN_KEYS})
    out = {v for v in values if v in created}
    out |= {v.rsplit(".", 1)[0] for v in values if "." in v and v.rsplit(".", 1)[0] in created}
    return frozenset(out - item.own)


def _unique(found: Iterable[int]) -> int | None:
    distinct = set(found)
    return distinct.pop() if len(distinct) == 1 else None


def attribute(items: Sequence[PlanItem], devices: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each item, the name of the plan device it belongs to, or ``sandbox``.

    Direct matches first (the item's own name, then a name it refers to, is one of the device's
    values, or ends with the device's id: ``virtio-<id>``); then, until nothing changes, an item
    takes the device of the items that create what it names, or of the only device whose items
    use what it creates (a chardev used by one device)."""
    strings = [_strings(d) for d in devices]
    ids = [str(d.get("id") or "") for d in devices]
    created: set[str] = set().union(*(item.own for item in items), (i for i in ids if i))
    refs = [_refs(item, created) for item in items]
    owner: list[int | None] = []
    for item, item_refs in zip(items, refs, strict=True):
        owner.append(_direct(item.own, strings, ids) if item.own else None)
        if owner[-1] is None:
            owner[-1] = _direct(item_refs, strings, ids)
    changed = True
    while changed:
        changed = False
        by_name = {name: o for item, o in zip(items, owner, strict=True) if o is not None
                   for name in item.own}
        for n, item in enumerate(items):
            if owner[n] is not None:
                continue
            found = _unique(by_name[x] for x in item.own | refs[n] if x in by_name)
            if found is None and item.own:
                found = _unique(o for m, o in enumerate(owner) if o is not None and item.own & refs[m])
            if found is not None:
                owner[n] = found
                changed = True
    return [device_name(devices[o]) if o is not None else SANDBOX for o in owner]


def _direct(names: frozenset[str], strings: Sequence[set[str]], ids: Sequence[str]) -> int | None:
    found = _unique(d for d, values in enumerate(strings) if names & values)
    if found is None:
        found = _unique(d for d, dev_id in enumerate(ids)
                        if dev_id and any(name.endswith(dev_id) for name in names))
    return found


# --- the checks ----------------------------------------------------------------------------------
Problem = tuple[str, str]  # (key or path, what is wrong); "" for the option as a whole


def _suggest(word: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_bool(value: Any, json_mode: bool) -> bool:
    return isinstance(value, bool) if json_mode else isinstance(value, str) and value.lower() in BOOL_WORDS


class Checker:
    """Checks parsed plan items against one binary's :class:`QemuFacts` (no I/O)."""

    def __init__(self, facts: QemuFacts) -> None:
        self.facts = facts
        self.qemu = f"QEMU {facts.version}"
        self.notes: list[Mismatch] = []

    # public
    def needs(self, items: Iterable[PlanItem]) -> Needs:
        """The types whose properties checking ``items`` needs (those the binary has)."""
        devices: set[str] = set()
        objects: set[str] = set()
        machines: set[str] = set()
        for item in items:
            kind, typename = self._typed(item)
            if kind == "device" and typename in self.facts.device_types:
                devices.add(typename)
            elif kind == "object" and typename in self.facts.object_types:
                objects.add(typename)
            elif kind == "machine" and (machine := self.facts.machine(typename)) is not None:
                machines.add(machine)
        return Needs(device=frozenset(devices), object=frozenset(objects), machine=frozenset(machines))

    def check(self, item: PlanItem) -> list[Problem]:
        problems: list[Problem] = [(key, "is given twice") for key in item.twice]
        problems += [(word, f"short-form boolean {word!r}: QEMU reads it as {word}=on (deprecated); an "
                            "unescaped comma in a value looks like this") for word in item.bare]
        if item.kind == "qmp":
            return problems + self._qmp(item)
        handler = {
            "-device": self._device, "-object": self._object, "-machine": self._machine, "-m": self._memory,
            "-chardev": self._chardev, "-netdev": self._netdev, "-blockdev": self._blockdev,
            "-fsdev": self._fsdev,
        }[item.kind]
        return problems + handler(item)

    # typing of items
    @staticmethod
    def _typed(item: PlanItem) -> tuple[str, str]:
        if item.kind == "-device" or (item.kind == "qmp" and item.head == "device_add"):
            return "device", item.head if item.kind != "qmp" else str(item.props.get("driver", ""))
        if item.kind == "-object" or (item.kind == "qmp" and item.head == "object-add"):
            return "object", item.head if item.kind != "qmp" else str(item.props.get("qom-type", ""))
        if item.kind == "-machine":
            return "machine", item.head
        return "", ""

    # QOM: devices, objects, machines
    def _device(self, item: PlanItem, driver: str | None = None, props: Mapping[str, Any] | None = None
                ) -> list[Problem]:
        driver = item.head if driver is None else driver
        props = item.props if props is None else props
        if not driver:
            return [("", "names no driver")]
        if driver not in self.facts.device_types:
            return [("", f"{self.qemu} has no device {driver!r}{_suggest(driver, self.facts.device_types)}")]
        if item.json and item.kind == "-device" and not self._json_cli():
            return [("", f"{self.qemu} reads -device only as key=value (no JSON before QEMU 6.2)")]
        return self._properties(item, "device", driver, props, DEVICE_KEYS)

    def _json_cli(self) -> bool:
        command = self.facts.command("device_add") or {}
        return "json-cli" in command.get("features", ())

    def _object(self, item: PlanItem, qom_type: str | None = None, props: Mapping[str, Any] | None = None
                ) -> list[Problem]:
        qom_type = item.head if qom_type is None else qom_type
        props = item.props if props is None else props
        if not qom_type:
            return [("", "names no object type")]
        if qom_type not in self.facts.object_types:
            hint = _suggest(qom_type, self.facts.object_types)
            return [("", f"{self.qemu} has no object type {qom_type!r}{hint}")]
        return self._properties(item, "object", qom_type, props, OBJECT_KEYS)

    def _machine(self, item: PlanItem) -> list[Problem]:
        machine = self.facts.machine(item.head) if item.head else None
        if item.head and machine is None:
            hint = _suggest(item.head, self.facts.machines)
            return [("", f"{self.qemu} has no machine {item.head!r}{hint}")]
        legacy = {k.replace("_", "-"): t for k, t in self.facts.command_line.get("machine", {}).items()}
        legacy.update({k: legacy.get(k, "string") for k in LEGACY_MACHINE_KEYS})
        if machine is None:  # no type given: QEMU's default machine; only the legacy keys are known
            return self._keys(item.props, legacy, f"{self.qemu}'s -machine")
        listing = self.facts.listing("machine", machine)
        if listing is None or listing.properties is None:
            self._note(item, f"{self.qemu} could not list the properties of machine {machine}: "
                             f"{listing.error if listing else 'not asked'}")
            return []
        known = {k.replace("_", "-"): t for k, t in listing.properties.items()}
        problems: list[Problem] = []
        for key, value in item.props.items():
            if key in legacy:
                continue
            if key not in known:
                hint = _suggest(key, set(known) | set(legacy))
                problems.append((key, f"{self.qemu}'s machine {machine} has no property {key!r}{hint}"))
            elif known[key] == "bool" and not _is_bool(value, item.json):
                problems.append((key, f"{value!r} is not on/off for the boolean property {key!r}"))
        return problems

    def _properties(self, item: PlanItem, kind: str, typename: str, props: Mapping[str, Any],
                    generic: frozenset[str]) -> list[Problem]:
        listing = self.facts.listing(kind, typename)
        if listing is None or listing.properties is None:
            self._note(item, f"{self.qemu} could not list the properties of {typename}: "
                             f"{listing.error if listing else 'not asked'}")
            return []
        known = {k: t for k, t in listing.properties.items() if kind != "object" or k not in OBJECT_READ_ONLY}
        problems: list[Problem] = []
        for key, value in props.items():
            if key in generic:
                continue
            if key not in known:
                hint = _suggest(key, known)
                problems.append((key, f"{self.qemu}'s {typename} has no property {key!r}{hint}"))
                continue
            bad = _bad_qom_value(known[key], value, json_mode=item.json)
            if bad:
                problems.append((key, f"{typename}'s property {key!r} {bad}"))
        return problems

    def _note(self, item: PlanItem, text: str) -> None:
        self.notes.append(Mismatch(device="", option=item.subject, problem=text, source=item.source,
                                   index=item.index))

    # command-line options QMP describes only as option groups
    def _keys(self, props: Mapping[str, Any], known: Mapping[str, str], what: str,
              generic: frozenset[str] = frozenset()) -> list[Problem]:
        problems: list[Problem] = []
        for key, value in props.items():
            if key in generic:
                continue
            if key not in known:
                problems.append((key, f"{what} has no key {key!r}{_suggest(key, known)}"))
            elif (bad := _bad_option_value(known[key], value)) is not None:
                problems.append((key, f"{what}'s key {key!r} {bad}"))
        return problems

    def _memory(self, item: PlanItem) -> list[Problem]:
        known = self.facts.command_line.get("memory", {})
        size = {"size": item.head} if item.head else {}
        return self._keys({**size, **item.props}, known, f"{self.qemu}'s -m")

    def _chardev(self, item: PlanItem) -> list[Problem]:
        if item.head not in self.facts.chardev_backends:
            hint = _suggest(item.head, self.facts.chardev_backends)
            return [("", f"{self.qemu} has no chardev backend {item.head!r}{hint}")]
        known = self.facts.command_line.get("chardev", {})
        return self._keys(item.props, known, f"{self.qemu}'s -chardev", frozenset({"id"}))

    def _fsdev(self, item: PlanItem) -> list[Problem]:
        if "fsdev" not in self.facts.command_line:
            return [("", f"{self.qemu} has no -fsdev (built without virtfs)")]
        if item.head not in FSDEV_DRIVERS:
            return [("", f"QEMU has no fs driver {item.head!r} (one of {', '.join(sorted(FSDEV_DRIVERS))})")]
        known = self.facts.command_line["fsdev"]
        return self._keys(item.props, known, f"{self.qemu}'s -fsdev", frozenset({"id"}))

    # QAPI: -netdev, -blockdev and QMP commands
    def _netdev(self, item: PlanItem) -> list[Problem]:
        return self._arguments(item, "netdev_add", {"type": item.head, **item.props})

    def _blockdev(self, item: PlanItem) -> list[Problem]:
        return self._arguments(item, "blockdev-add", {"driver": item.head, **item.props})

    def _arguments(self, item: PlanItem, command: str, value: Mapping[str, Any]) -> list[Problem]:
        entry = self.facts.command(command)
        if entry is None:
            return [("", f"{self.qemu} has no QMP command {command!r}{_suggest(command, self._commands())}")]
        arg_type = entry.get("arg-type")
        if not arg_type:
            return [("", f"{self.qemu}'s {command} takes no arguments")] if value else []
        walker = SchemaWalker(self.facts, f"{self.qemu}'s {command}", keyval=not item.json)
        return walker.check(value, str(arg_type))

    def _commands(self) -> list[str]:
        return [name for name, e in self.facts.by_name.items() if e.get("meta-type") == "command"]

    def _qmp(self, item: PlanItem) -> list[Problem]:
        if self.facts.command(item.head) is None:
            hint = _suggest(item.head, self._commands())
            return [("", f"{self.qemu} has no QMP command {item.head!r}{hint}")]
        if item.head == "device_add":
            return self._device(item, str(item.props.get("driver", "")), item.props)
        if item.head == "object-add":
            return self._object(item, str(item.props.get("qom-type", "")), item.props)
        return self._arguments(item, item.head, item.props)


def _bad_qom_value(qom_type: str, value: Any, *, json_mode: bool) -> str:
    """Why ``value`` cannot be set on a QOM property of ``qom_type`` ("" if it can or QEMU decides:
    integer properties have their own parsers, ``addr=03.0`` for one)."""
    if qom_type == "bool" and not _is_bool(value, json_mode):
        return f"is boolean: {value!r} is not " + ("a JSON true/false" if json_mode else "on/off")
    if json_mode and qom_type in ("str", "string") and not isinstance(value, str):
        return f"is a string: got {json.dumps(value)}"
    return ""


def _bad_option_value(kind: str, value: Any) -> str | None:
    """Why ``value`` is not of a ``query-command-line-options`` parameter type (None if it is)."""
    text = str(value)
    if kind == "boolean" and text.lower() not in BOOL_WORDS:
        return f"is boolean: {text!r} is not on/off"
    if kind == "number" and not _NUMBER.fullmatch(text):
        return f"is a number: got {text!r}"
    if kind == "size" and not _SIZE.fullmatch(text):
        return f"is a size: got {text!r}"
    return None


class SchemaWalker:
    """Checks a value against a type of QEMU's introspected QAPI schema (``query-qmp-schema``).

    ``keyval`` values come from the command line and are strings (QEMU converts them); JSON values
    must have the schema's JSON types exactly, as QMP and ``-blockdev {...}`` require."""

    def __init__(self, facts: QemuFacts, what: str, *, keyval: bool) -> None:
        self.facts = facts
        self.what = what
        self.keyval = keyval

    def check(self, value: Any, type_name: str, path: str = "", where: str = "") -> list[Problem]:
        """Problems of ``value`` at ``path``; ``where`` names the union branch it is in
        (``driver=file``), for the messages."""
        entry = self.facts.by_name.get(type_name)
        if entry is None:
            return []  # a schema that does not describe its own types: nothing to hold against
        meta = entry.get("meta-type")
        if meta == "object":
            return self._object(value, entry, path, where)
        if meta == "alternate":
            return self._alternate(value, entry, path, where)
        if meta == "array":
            return self._array(value, entry, path)
        if meta == "enum":
            return self._enum(value, entry, path)
        if meta == "builtin":
            return self._builtin(value, str(entry.get("json-type", "value")), path)
        return []

    def _members(self, entry: Mapping[str, Any], value: Mapping[str, Any], path: str, where: str
                 ) -> tuple[dict[str, Mapping[str, Any]] | None, str, list[Problem]]:
        """The members of an object type for ``value`` (a union's branch chosen by its tag), and the
        branch; None when the tag names no branch (then nothing else can be judged)."""
        members = {str(m["name"]): m for m in entry.get("members", ())}
        tag = entry.get("tag")
        branch = value.get(tag) if tag else None
        if branch is None:
            return members, where, []  # no union, or the missing tag is reported as a missing member
        cases = {str(v["case"]): str(v["type"]) for v in entry.get("variants", ())}
        if branch not in cases:
            hint = _suggest(str(branch), cases)
            return None, where, [(_join(path, str(tag)), f"{self.what} has no {tag} {branch!r}{hint}")]
        variant = self.facts.by_name.get(cases[branch], {})
        more, inner, problems = self._members(variant, value, path, f"{tag}={branch}")
        return (None if more is None else {**members, **more}), inner, problems

    def _object(self, value: Any, entry: Mapping[str, Any], path: str, where: str) -> list[Problem]:
        if not isinstance(value, Mapping):
            return [(path, f"{self.what} expects an object for {path or 'its arguments'!r}, got "
                           f"{json.dumps(value)}")]
        members, where, problems = self._members(entry, value, path, where)
        if members is None:
            return problems
        context = f"{self.what}" + (f" ({where})" if where else "")
        unknown = [key for key in value if key not in members]
        for key in unknown:
            hint = _suggest(key, members)
            problems.append((_join(path, key), f"{context} has no member {key!r}{hint}"))
        for key, item in value.items():
            if key in members:
                problems += self.check(item, str(members[key]["type"]), _join(path, key), where)
        if not unknown:  # a misspelt member is reported once, not also as the member it misses
            problems += [(_join(path, name), f"{context} requires {name!r}")
                         for name, member in members.items() if "default" not in member and name not in value]
        return problems

    def _alternate(self, value: Any, entry: Mapping[str, Any], path: str, where: str) -> list[Problem]:
        choices = [str(m["type"]) for m in entry.get("members", ())]
        attempts = [self.check(value, choice, path, where) for choice in choices if self._fits(value, choice)]
        if not attempts:
            return [(path, f"{self.what} cannot take {json.dumps(value)} for {path!r}")]
        return min(attempts, key=len)

    def _fits(self, value: Any, type_name: str) -> bool:
        """Whether ``value``'s JSON kind is the kind of ``type_name`` (which branch to check)."""
        entry = self.facts.by_name.get(type_name, {})
        meta = entry.get("meta-type")
        if meta == "object":
            return isinstance(value, Mapping)
        if meta == "array":
            return isinstance(value, list)
        if isinstance(value, (Mapping, list)):
            return False
        return self.keyval or not self._builtin(value, str(entry.get("json-type", "string")), "")

    def _array(self, value: Any, entry: Mapping[str, Any], path: str) -> list[Problem]:
        if not isinstance(value, list):
            return [] if self.keyval else [(path, f"{self.what} expects a list for {path!r}")]
        element = str(entry.get("element-type", ""))
        return [p for n, item in enumerate(value) for p in self.check(item, element, f"{path}.{n}")]

    def _enum(self, value: Any, entry: Mapping[str, Any], path: str) -> list[Problem]:
        values = [str(v) for v in entry.get("values", ())]
        values = values or [str(m["name"]) for m in entry.get("members", ())]
        if isinstance(value, str) and value in values:
            return []
        shown = f" (one of {', '.join(values)})" if len(values) <= 8 else _suggest(str(value), values)
        return [(path, f"{json.dumps(value)} is not a value {self.what} knows for {path!r}{shown}")]

    def _builtin(self, value: Any, json_type: str, path: str) -> list[Problem]:
        if self.keyval and isinstance(value, str):
            bad = {"boolean": value.lower() not in BOOL_WORDS,
                   "int": not (_NUMBER.fullmatch(value) or _SIZE.fullmatch(value)),
                   "number": not _is_float(value)}.get(json_type, False)
        else:
            bad = not {
                "string": isinstance(value, str),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "number": isinstance(value, (int, float)) and not isinstance(value, bool),
                "boolean": isinstance(value, bool),
                "null": value is None,
                "object": isinstance(value, Mapping),
            }.get(json_type, True)
        if not bad:
            return []
        return [(path, f"{self.what} expects {json_type} for {path!r}, got {json.dumps(value)}")]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- the report ----------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Report:
    """The outcome of one check: the mismatches, notes on what could not be checked, and counts."""

    mismatches: tuple[Mismatch, ...]
    notes: tuple[Mismatch, ...] = ()
    options: int = 0
    commands: int = 0
    unchecked: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "checked": {"options": self.options, "qmp": self.commands, "unchecked": list(self.unchecked)},
            "mismatches": [m.to_json() for m in self.mismatches],
            "notes": [n.to_json() for n in self.notes],
        }


def check_part(parsed: ParsedPart, devices: Sequence[Mapping[str, Any]], facts: QemuFacts) -> Report:
    """Check a parsed QEMU-like plan part against ``facts`` (they must hold the properties of the
    types :meth:`Checker.needs` names; missing ones become notes)."""
    checker = Checker(facts)
    owners = attribute(parsed.items, devices)
    mismatches = list(parsed.problems)
    for item, owner in zip(parsed.items, owners, strict=True):
        for key, problem in checker.check(item):
            mismatches.append(Mismatch(device=owner, option=item.label(key), problem=problem,
                                       source=item.source, index=item.index))
    notes = tuple(attrs.evolve(n, device=owners[_position(parsed.items, n)]) for n in checker.notes)
    return Report(
        mismatches=tuple(mismatches), notes=tuple(dict.fromkeys(notes)),
        options=sum(1 for i in parsed.items if i.kind != "qmp"),
        commands=sum(1 for i in parsed.items if i.kind == "qmp"),
        unchecked=tuple(dict.fromkeys(parsed.unchecked)),
    )


def _position(items: Sequence[PlanItem], note: Mismatch) -> int:
    return next(n for n, i in enumerate(items) if (i.source, i.index) == (note.source, note.index))


# --- asking the binary ---------------------------------------------------------------------------
class QmpAnswerError(PreflightError):
    """QEMU answered a question with an error."""


class QemuGoneError(PreflightError):
    """QEMU exited (or stopped answering) in the middle of a question."""


class Session(Protocol):
    """A QMP conversation with a stopped QEMU (:class:`QmpStdio`; tests may pass their own)."""

    version: str
    package: str

    def ask(self, execute: str, arguments: Mapping[str, Any] | None = None) -> Any: ...

    def close(self) -> None: ...


class QmpStdio:
    """QEMU with ``-machine none -S`` and QMP on stdio: questions in, answers out, nothing runs.

    Plain pipes, no QMP library: the probe must work wherever the binary does (the live driver's
    ``qemu.qmp`` is not needed here)."""

    def __init__(self, binary: str, *, timeout: float = PROBE_TIMEOUT) -> None:
        import subprocess
        import tempfile

        self._deadline = time.monotonic() + timeout
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._buffer = b""
        self._next = 0
        self._binary = binary
        try:
            proc = subprocess.Popen(
                [binary, *PROBE_ARGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                start_new_session=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise PreflightError(f"cannot start {binary}: {exc.strerror or exc}", field="qemu") from None
        self._proc: subprocess.Popen[bytes] = proc
        try:
            greeting = self._read()
            version = greeting["QMP"]["version"]
            numbers = version["qemu"]
            self.version = f"{numbers['major']}.{numbers['minor']}.{numbers['micro']}"
            self.package = str(version.get("package", "")).strip()
            self.ask("qmp_capabilities")
        except (KeyError, TypeError):
            self.close()
            raise PreflightError(f"{binary} does not greet like QEMU's QMP", field="qemu") from None
        except BaseException:
            self.close()
            raise

    def ask(self, execute: str, arguments: Mapping[str, Any] | None = None) -> Any:
        self._next += 1
        message = {"execute": execute, "arguments": dict(arguments or {}), "id": self._next}
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            raise self._gone(execute) from None
        while True:
            answer = self._read(execute)
            if answer.get("id") == self._next:
                break
        if "error" in answer:
            error = answer["error"]
            raise QmpAnswerError(f"{error.get('desc', '?')} ({error.get('class', '?')})", field=execute)
        return answer.get("return")

    def _read(self, question: str = "greeting") -> dict[str, Any]:
        import select

        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise self._gone(question, "no answer in time")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._gone(question)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            said = "does not greet like QEMU's QMP" if question == "greeting" else \
                f"answered {question} with something other than QMP"
            raise PreflightError(f"{self._binary} {said}", field="qemu")
        return message

    def _gone(self, question: str, why: str = "") -> QemuGoneError:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        said = lines[-1] if lines else why or f"exit status {self._proc.poll()}"
        return QemuGoneError(f"QEMU stopped answering {question}: {said}", field="qemu")

    def close(self) -> None:
        import subprocess

        proc = self._proc
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"execute": "quit"}\n')
                proc.stdin.flush()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self._stderr.close()


def machine_help(binary: str, machine: str) -> Listing:
    """The properties ``-machine TYPE,help`` prints: the fallback where QMP's ``qom-list-properties``
    cannot be used (QEMU 7.2 aborts on it for ``microvm``)."""
    import subprocess

    try:
        done = subprocess.run([binary, "-machine", f"{machine},help"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Listing(error=f"-machine {machine},help failed: {exc}")
    props = {m.group(1): m.group(2) for m in map(_HELP_LINE.match, done.stdout.splitlines()) if m is not None}
    if done.returncode != 0 or not props:
        said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return Listing(error=f"-machine {machine},help: {said}")
    return Listing(properties=props, source="help")


SessionFactory = Callable[[str], Session]


def _types(session: Session, implements: str) -> frozenset[str]:
    answer = session.ask("qom-list-types", {"implements": implements, "abstract": False})
    return frozenset(str(t["name"]) for t in answer)


def base_facts(session: Session) -> QemuFacts:
    """Everything but properties: one conversation, about 0.1 s."""
    machines: dict[str, str] = {}
    for machine in session.ask("query-machines"):
        machines[str(machine["name"])] = str(machine["name"])
        if machine.get("alias"):
            machines[str(machine["alias"])] = str(machine["name"])
    options = {str(o["option"]): {str(p["name"]): str(p.get("type", "string")) for p in o["parameters"]}
               for o in session.ask("query-command-line-options")}
    return QemuFacts(
        version=session.version,
        package=session.package,
        schema=tuple(session.ask("query-qmp-schema")),
        device_types=_types(session, "device"),
        object_types=_types(session, "user-creatable"),
        machines=machines,
        command_line=options,
        chardev_backends=frozenset(str(b["name"]) for b in session.ask("query-chardev-backends")),
    )


_QUESTIONS: Final = {"device": "device-list-properties", "object": "qom-list-properties",
                     "machine": "qom-list-properties"}


def _qom_name(kind: str, typename: str) -> str:
    return f"{typename}-machine" if kind == "machine" else typename


def ask_properties(binary: str, needs: Needs, start: SessionFactory, session: Session | None = None
                   ) -> dict[str, dict[str, Listing]]:
    """The listings of ``needs``: one conversation (``session`` if given; it is closed here),
    restarted when QEMU dies on a question (that type's listing is then the error; a machine's
    falls back to ``-machine TYPE,help``)."""
    out: dict[str, dict[str, Listing]] = {kind: {} for kind in KINDS}
    queue = [(kind, t) for kind in KINDS for t in sorted(getattr(needs, kind))]
    try:
        for kind, typename in queue:
            if session is None:
                session = start(binary)
            try:
                answer = session.ask(_QUESTIONS[kind], {"typename": _qom_name(kind, typename)})
                props = {str(p["name"]): str(p.get("type", "")) for p in answer}
                out[kind][typename] = Listing(properties=props)
            except QmpAnswerError as exc:
                out[kind][typename] = Listing(error=exc.message)
            except QemuGoneError as exc:
                session.close()
                session = None
                out[kind][typename] = machine_help(binary, typename) if kind == "machine" else \
                    Listing(error=exc.message)
    finally:
        if session is not None:
            session.close()
    return out


# --- the cache -----------------------------------------------------------------------------------
def resolve_binary(binary: str) -> Path:
    """The executable ``binary`` names (a path, or a name on PATH), as a real path."""
    import shutil

    found = binary if os.sep in binary else shutil.which(binary)
    if found is None:
        raise PreflightError(f"no executable {binary!r} on PATH", field="qemu")
    path = Path(os.path.realpath(found))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PreflightError(f"{binary} is not an executable file", field="qemu")
    return path


def binary_key(path: Path) -> dict[str, Any]:
    """What identifies one binary's answers: a different file, the same path rewritten, or a
    changed module directory (installing ``qemu-block-extra`` adds types) changes it."""
    st = path.stat()
    modules = [[str(d), d.stat().st_mtime_ns] for d in module_dirs(path)]
    return {"path": str(path), "size": st.st_size, "inode": st.st_ino, "device": st.st_dev,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "modules": modules}


def module_dirs(path: Path) -> list[Path]:
    """Where the binary loads its modules from: ``$QEMU_MODULE_DIR``, else (QEMU is relocatable)
    ``lib/<triplet>/qemu`` or ``lib/qemu`` beside its ``bin`` directory."""
    prefix = path.parent.parent
    env = os.environ.get("QEMU_MODULE_DIR", "")
    found = [Path(env)] if env else []
    found += [*sorted(prefix.glob("lib/*/qemu")), prefix / "lib" / "qemu", prefix / "lib64" / "qemu"]
    return [d for d in dict.fromkeys(found) if d.is_dir()]


def key_digest(key: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vmdev`` (an absolute ``XDG_CACHE_HOME`` only, as the spec says), else
    ``~/.cache/vmdev``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "vmdev"


@attrs.define
class Probe:
    """The facts of one binary, from the cache when it has them, else asked (and cached).

    ``cache_dir`` None keeps nothing. ``probed`` and ``seconds`` say whether QEMU was asked this
    time and how long that took; ``cache_file`` where the answers are kept."""

    binary: str
    cache_dir: Path | None = None
    start: SessionFactory = QmpStdio
    probed: bool = False
    seconds: float = 0.0
    cache_file: Path | None = None
    _path: Path = attrs.field(init=False)
    _key: dict[str, Any] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._path = resolve_binary(self.binary)
        self._key = binary_key(self._path)

    @property
    def path(self) -> Path:
        return self._path

    def facts(self, items: Sequence[PlanItem]) -> QemuFacts:
        """Facts that hold everything checking ``items`` needs."""
        facts = self._load()
        session: Session | None = None
        started = time.monotonic()
        try:
            if facts is None:
                session = self.start(str(self._path))
                facts = base_facts(session)
                self.probed = True
            missing = facts.missing(Checker(facts).needs(items))
            if missing:
                self.probed = True
                for kind, listings in ask_properties(str(self._path), missing, self.start, session).items():
                    facts = facts.with_listings(kind, listings)
                session = None  # ask_properties closed it
        finally:
            if session is not None:
                session.close()
        if self.probed:
            self.seconds = time.monotonic() - started
            self._save(facts)
        return facts

    def _load(self) -> QemuFacts | None:
        if self.cache_dir is None:
            return None
        for candidate in sorted(self.cache_dir.glob(f"qemu-*-{key_digest(self._key)}.json")):
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
                if data.get("format") == CACHE_FORMAT and data.get("binary") == self._key:
                    self.cache_file = candidate
                    return QemuFacts.from_json(data["facts"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
        return None

    def _save(self, facts: QemuFacts) -> None:
        if self.cache_dir is None:
            return
        version = _VERSION_SAFE.sub("_", facts.version)
        target = self.cache_dir / f"qemu-{version}-{key_digest(self._key)}.json"
        record = {"format": CACHE_FORMAT, "binary": self._key, "facts": facts.to_json()}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_atomically(target, json.dumps(record))
            self.cache_file = target
        except OSError as exc:
            click.echo(f"vmdev: check: note: cannot keep QEMU's answers in {self.cache_dir}: "
                       f"{exc.strerror or exc}", err=True)


def _write_atomically(target: Path, text: str) -> None:
    """Write ``target`` whole or not at all (concurrent checks each rename a complete file)."""
    import tempfile

    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".qemu-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- the whole check -----------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Outcome:
    """A report together with the binary that was asked and how."""

    report: Report
    binary: str
    version: str
    package: str
    probed: bool
    seconds: float
    cache_file: str | None

    def to_json(self) -> dict[str, Any]:
        qemu = {"binary": self.binary, "version": self.version, "package": self.package,
                "probed": self.probed, "probe_seconds": round(self.seconds, 3), "cache_file": self.cache_file}
        return {**self.report.to_json(), "qemu": qemu}


def check_plan(plan: Mapping[str, Any], probe: Probe) -> Outcome:
    """Check a plan (``Plan.to_json()``, or ``vmdev plan --format json`` read back) for QEMU."""
    hypervisor = plan.get("hypervisor")
    if hypervisor != QEMU_HYPERVISOR:
        raise UnsupportedError(
            f"check --qemu asks a QEMU binary, but this plan is for {hypervisor!r}; only plans for "
            f"{QEMU_HYPERVISOR!r} can be checked against one",
            field="hypervisor",
        )
    part = plan.get(QEMU_HYPERVISOR)
    if not isinstance(part, Mapping):
        raise ConfigError("a plan for qemu needs a 'qemu' object (argv, hotplug, unplug)", field="$.qemu")
    devices = plan.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, Mapping) for d in devices):
        raise ConfigError("must be a list of objects", field="$.devices")
    parsed = parse_part(part)
    facts = probe.facts(parsed.items)
    return Outcome(report=check_part(parsed, devices, facts), binary=str(probe.path), version=facts.version,
                   package=facts.package, probed=probe.probed, seconds=probe.seconds,
                   cache_file=str(probe.cache_file) if probe.cache_file else None)


def is_plan(document: Any) -> bool:
    """A plan as ``vmdev plan --format json`` prints it (an OCI config has neither key)."""
    return isinstance(document, Mapping) and "hypervisor" in document and "devices" in document


# --- the command ---------------------------------------------------------------------------------
_PLANNING: Final = ("config_file", "hypervisor", "machine_type", "sysfs_root", "memory", "hotplug")


@click.command("check", cls=SettingsCommand)
@click.option("--qemu", "binary", required=True, metavar="BINARY",
              help="The QEMU binary to ask (a path, or a name on PATH), e.g. /usr/bin/qemu-system-x86_64.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Where the binary's answers are kept (default: $XDG_CACHE_HOME/vmdev).")
@click.option("--no-cache", is_flag=True, help="Ask the binary again and keep nothing.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Sandbox settings TOML for planning an OCI config (as vmdev plan).")
@click.option("--hypervisor", help="As vmdev plan (only qemu can be checked).")
@click.option("--machine-type", help="As vmdev plan.")
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="As vmdev plan.")
@click.option("--memory", type=click.IntRange(min=1), help="As vmdev plan.")
@click.option("--hotplug/--coldplug", default=None, help="As vmdev plan.")
@click.argument("source", metavar="PLAN|OCI_CONFIG", type=click.Path(dir_okay=False))
def check_cmd(binary: str, as_json: bool, cache_dir: str | None, no_cache: bool, source: str,
              **planning: Any) -> None:
    """Check a plan against a real QEMU binary, without booting a guest: every device driver,
    property, object type, machine type and property, and QMP command the plan uses must exist
    in that binary. PLAN is `vmdev plan --format json` output, checked as it stands; an
    OCI_CONFIG is planned first, with the flags of vmdev plan. One line per mismatch on stdout
    (`vmdev: check: DEVICE: OPTION: PROBLEM`); exit 0 when clean, 1 on any mismatch or error."""
    _run_check(binary, as_json, cache_dir, no_cache, source, planning)


@errors_as_one_line
def _run_check(binary: str, as_json: bool, cache_dir: str | None, no_cache: bool, source: str,
               planning: Mapping[str, Any]) -> None:
    from vmdev.host import read_named
    from vmdev.oci import MAX_SPEC_BYTES, decode_json

    # a plan of a large spec is a few times the spec; a FIFO or /dev/zero is refused
    data = read_named(source, limit=4 * MAX_SPEC_BYTES,
                      refuse=lambda reason: ConfigError(f"cannot read: {reason}", device=source))
    document = decode_json(data, source=source)
    if is_plan(document):
        if any(planning.get(name) is not None for name in _PLANNING) or flag_overrides():
            _usage(f"{source} is a plan already: planning options apply to an OCI config only")
        plan = document
    else:
        plan = _plan_oci(document, planning)
    cache = None if no_cache else Path(cache_dir) if cache_dir else default_cache_dir()
    outcome = check_plan(plan, Probe(binary, cache_dir=cache))
    _print(outcome, as_json)
    if not outcome.report.clean:
        sys.exit(1)


def _usage(message: str) -> None:
    error = click.UsageError(message, click.get_current_context())
    error.show()
    sys.exit(error.exit_code)


def _plan_oci(document: Any, planning: Mapping[str, Any]) -> dict[str, Any]:
    """Plan an OCI config exactly as ``vmdev plan`` does (same settings, flags and plugins)."""
    from vmdev.cli import plan_settings
    from vmdev.oci import parse_spec
    from vmdev.planner import plan

    settings = plan_settings(planning.get("config_file"), hypervisor=planning.get("hypervisor"),
                             machine_type=planning.get("machine_type"), memory=planning.get("memory"),
                             hotplug=planning.get("hotplug"), flags=flag_overrides())
    if settings.hypervisor != QEMU_HYPERVISOR:
        raise UnsupportedError(
            f"check --qemu asks a QEMU binary, but these settings plan for {settings.hypervisor!r}",
            field="hypervisor",
        )
    return plan(parse_spec(document), settings, host=host_context(planning.get("sysfs_root"))).to_json()


def _print(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(outcome.to_json(), indent=2))
        return
    report = outcome.report
    for mismatch in report.mismatches:
        click.echo(mismatch.line())
    for note in report.notes:
        click.echo(f"vmdev: check: note: {note.device}: {note.option}: {one_line(note.problem)}", err=True)
    how = f"asked in {outcome.seconds:.2f} s" if outcome.probed else "cached answers"
    verdict = f"{len(report.mismatches)} mismatch(es)" if report.mismatches else "clean"
    click.echo(f"vmdev: check: {verdict}: {report.options} options and {report.commands} QMP commands "
               f"against QEMU {outcome.version} ({outcome.binary}, {how})", err=True)


__all__ = [
    "Checker",
    "Listing",
    "Mismatch",
    "Needs",
    "ParsedPart",
    "PlanItem",
    "PreflightError",
    "Probe",
    "QemuFacts",
    "QmpStdio",
    "Report",
    "SchemaWalker",
    "attribute",
    "check_cmd",
    "check_part",
    "check_plan",
    "parse_part",
]
