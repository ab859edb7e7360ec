"""Reading the device requests of an OCI runtime spec (``config.json``).

Only the parts vmdev uses are validated, strictly: ``linux.devices``,
``linux.resources.devices`` (the allow rules that make a device read-only, as
Kata's ``newLinuxDeviceInfo`` does) and ``mounts``. The first problem is
reported with its JSON path, e.g. ``$.linux.devices[1].major``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from vmdev._convert import str_tuple
from vmdev.errors import ConfigError
from vmdev.models import OCI_DEVICE_TYPES, DeviceInfo


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


def load_spec(path: str | Path) -> OciSpec:
    """Read and validate a ``config.json`` file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read OCI spec: {exc.strerror}", device=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid JSON: {exc}", device=str(path)) from None
    return parse_spec(document)


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
        if not isinstance(value, str):
            raise _Node(value, f"{node.path}[{key!r}]", "").error("", "must be a string")
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
    file_mode = _int(node, "fileMode", required=False, low=0, high=0o7777)
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
        return node

    def items(self) -> list[_Node]:
        return [_Node(v, f"{self.path}[{i}]", self.device) for i, v in enumerate(self.value)]
