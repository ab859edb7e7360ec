"""Reading the device requests of an OCI runtime spec (``config.json``).

Only the parts vmdev uses are validated, strictly: ``linux.devices``,
``linux.resources.devices`` (the allow rules that make a device read-only, as
Kata's ``newLinuxDeviceInfo`` does) and ``mounts``. The first problem is
reported with its JSON path, e.g. ``$.linux.devices[1].major``.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from vmdev._convert import str_tuple
from vmdev.errors import ConfigError
from vmdev.host import read_named
from vmdev.models import OCI_DEVICE_TYPES, DeviceInfo
from vmdev.strictjson import JsonError, json_value


@attrs.frozen(kw_only=True)
class OciMount:
    """One ``mounts`` entry. Plugins may turn it into a device (``device_from_mount``)."""

    destination: str
    source: str = ""
    type: str = ""
    options: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _str_dict(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _document(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class OciSpec:
    """The parts of a ``config.json`` vmdev reads, plus the document itself.

    ``annotations`` are the spec's ``annotations`` (input sources such as CDI read theirs);
    ``document`` is the whole decoded spec, for plugins that hand an edited spec back to the
    runtime (it is not validated beyond the parts above).
    """

    devices: tuple[DeviceInfo, ...] = ()
    mounts: tuple[OciMount, ...] = ()
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_str_dict)
    document: Mapping[str, Any] = attrs.field(factory=dict, converter=_document, eq=False, repr=False)


#: the largest OCI spec read (real specs are a few KiB; a privileged one with every host device ~100 KiB)
MAX_SPEC_BYTES: Final = 16 * 1024 * 1024


def load_spec(path: str | Path) -> OciSpec:
    """Read and validate a ``config.json`` file (a regular file only: a FIFO or a device node
    named as the spec is refused, never read)."""
    return parse_spec(read_document(path))


def read_document(path: str | Path) -> Any:
    """A ``config.json`` file's JSON, read as :func:`load_spec` reads it (at most
    :data:`MAX_SPEC_BYTES`, a regular file only, strict JSON) but not yet checked as a spec:
    for a tool that edits the document and prints it back (``vmdev cdi inject``)."""
    source = str(path)
    data = read_named(source, limit=MAX_SPEC_BYTES,
                      refuse=lambda reason: ConfigError(f"cannot read OCI spec: {reason}", device=source))
    return decode_json(data, source=source)


def decode_json(data: bytes | str, *, source: str) -> Any:
    """Decode JSON strictly (:func:`json_value`); every problem one :class:`ConfigError` naming
    ``source``."""
    try:
        return json_value(data)
    except JsonError as exc:
        raise ConfigError(f"not valid JSON: {exc}", device=source, field=exc.path) from None


def parse_spec(document: Any) -> OciSpec:
    """Validate an already decoded spec document."""
    root = _Node(document, "$", "")
    root.expect(dict, "an object")
    linux = root.child("linux", dict, "an object", required=False)
    rules: list[_Node] = []
    devices: list[DeviceInfo] = []
    if linux is not None:
        resources = linux.child("resources", dict, "an object", required=False)
        allow = resources.child("devices", list, "an array", required=False) if resources else None
        rules = allow.items() if allow else []
        listed = linux.child("devices", list, "an array", required=False)
        for node in listed.items() if listed else []:
            devices.append(_device(node, rules))
    mounts_node = root.child("mounts", list, "an array", required=False)
    mounts = [_mount(node) for node in (mounts_node.items() if mounts_node else [])]
    return OciSpec(
        devices=tuple(devices), mounts=tuple(mounts), annotations=_annotations(root), document=document
    )


def _annotations(root: _Node) -> dict[str, str]:
    node = root.child("annotations", dict, "an object", required=False)
    if node is None:
        return {}
    out: dict[str, str] = {}
    for key, value in node.value.items():
        entry = _Node(value, f"{node.path}[{json.dumps(key)}]", "")
        entry.expect(str, "a string")
        _Node(key, entry.path, "").check_text(path=False)
        entry.check_text(path=False)
        out[key] = value
    return out


def _device(node: _Node, rules: list[_Node]) -> DeviceInfo:
    node.expect(dict, "an object")
    path = node.child("path", str, "a string")
    assert path is not None
    container_path = path.value
    node = node.named(container_path)
    if not container_path:
        raise node.error("path", "must not be empty")
    if not container_path.startswith("/"):
        raise node.error("path", "must be an absolute path")
    dev_type = node.child("type", str, "a string")
    assert dev_type is not None
    if dev_type.value not in OCI_DEVICE_TYPES:
        raise node.error("type", f"{dev_type.value!r} is not one of c, b, u, p")
    needs_numbers = dev_type.value != "p"
    major = _int(node, "major", required=needs_numbers, low=0)
    minor = _int(node, "minor", required=needs_numbers, low=0)
    file_mode = _file_mode(node, dev_type.value)
    uid = _int(node, "uid", required=False, low=0)
    gid = _int(node, "gid", required=False, low=0)
    read_only = _read_only(rules, dev_type.value, major or 0, minor or 0)
    return DeviceInfo(
        container_path=container_path,
        dev_type=dev_type.value,
        major=major or 0,
        minor=minor or 0,
        file_mode=file_mode,
        uid=uid,
        gid=gid,
        read_only=read_only,
    )


#: the file-type bits of st_mode that go with each OCI device type (podman writes the whole st_mode)
_TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
_TYPE_NAMES = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
               stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink",
               stat.S_IFSOCK: "a socket"}


def _file_mode(node: _Node, dev_type: str) -> int | None:
    """``fileMode`` as engines write it: permission bits, or (podman) the whole ``st_mode`` with
    its file-type bits, which must then agree with ``type``. The permission bits are kept (Kata
    copies the value unchecked and hands the type bits on to the agent)."""
    mode = _int(node, "fileMode", required=False, low=0, high=0o177777)
    if mode is None:
        return None
    kind = stat.S_IFMT(mode)
    if kind and kind != _TYPE_BITS[dev_type]:
        what = _TYPE_NAMES.get(kind, f"file type 0o{kind:o}")
        raise node.error("fileMode", f"0o{mode:o} says {what}, but type is {dev_type!r}")
    return stat.S_IMODE(mode)


def _read_only(rules: list[_Node], dev_type: str, major: int, minor: int) -> bool:
    """Kata: the first allow rule naming exactly this major:minor decides (no ``w`` = read-only)."""
    for rule in rules:
        rule.expect(dict, "an object")
        value: Mapping[str, Any] = rule.value
        if value.get("allow") is not True:
            continue
        if value.get("major") != major or value.get("minor") != minor:
            continue
        if value.get("type") not in (None, "", "a", dev_type):
            continue
        access = value.get("access") or ""
        if not isinstance(access, str):
            raise rule.error("access", "must be a string")
        return "w" not in access
    return False


def _mount(node: _Node) -> OciMount:
    node.expect(dict, "an object")
    destination = node.child("destination", str, "a string")
    assert destination is not None
    node = node.named(destination.value)
    source = node.child("source", str, "a string", required=False)
    mount_type = node.child("type", str, "a string", required=False)
    options = node.child("options", list, "an array", required=False)
    opts: list[str] = []
    for option in options.items() if options else []:
        option.expect(str, "a string")
        option.check_text(path=False)
        opts.append(option.value)
    return OciMount(
        destination=destination.value,
        source=source.value if source else "",
        type=mount_type.value if mount_type else "",
        options=tuple(opts),
    )


def _int(node: _Node, key: str, *, required: bool, low: int, high: int = 2**32 - 1) -> int | None:
    child = node.child(key, int, "an integer", required=required)
    if child is None:
        return None
    if isinstance(child.value, bool):
        raise child.error("", "must be an integer, not a boolean")
    if not low <= child.value <= high:
        raise child.error("", f"must be between {low} and {high}, got {child.value}")
    value: int = child.value
    return value


#: keys whose strings are paths
_PATH_KEYS: Final = frozenset({"path", "destination", "source"})


@attrs.frozen
class _Node:
    """A value in the document with its JSON path and the device it belongs to."""

    value: Any
    path: str
    device: str

    def named(self, device: str) -> _Node:
        return _Node(self.value, self.path, device)

    def error(self, key: str, message: str) -> ConfigError:
        path = f"{self.path}.{key}" if key else self.path
        return ConfigError(message, device=self.device, field=path)

    def expect(self, kind: type, what: str) -> None:
        if not isinstance(self.value, kind) or (kind is int and isinstance(self.value, bool)):
            raise self.error("", f"must be {what}")

    def child(self, key: str, kind: type, what: str, *, required: bool = True) -> _Node | None:
        if key not in self.value or self.value[key] is None:
            if required:
                raise self.error(key, "is required")
            return None
        node = _Node(self.value[key], f"{self.path}.{key}", self.device)
        node.expect(kind, what)
        if kind is str:
            node.check_text(path=key in _PATH_KEYS)
        return node

    def check_text(self, *, path: bool) -> None:
        """Strings must be writable (no lone surrogates, legal in JSON); paths also free of NUL
        and control characters, which no kernel path or QEMU option should carry."""
        text: str = self.value
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            raise self.error("", f"{json.dumps(text)} contains a lone surrogate (not a character)")
        if path and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            raise self.error("", f"{json.dumps(text)} contains a control character")

    def items(self) -> list[_Node]:
        return [_Node(v, f"{self.path}[{i}]", self.device) for i, v in enumerate(self.value)]
