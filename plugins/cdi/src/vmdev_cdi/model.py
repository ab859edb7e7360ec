"""The CDI spec document (the Go library's ``specs-go`` types) as frozen attrs classes.

Field names are the Python spelling of the JSON keys (``hostPath`` is ``host_path``). ``None``
stands for Go's nil where the reference tells nil from empty: an absent ``intelRdt`` versus
``intelRdt: {}`` (the latter needs version 0.7.0), ``schemata`` absent versus ``[]`` (1.1.0),
``fileMode``/``uid``/``gid``/``timeout`` unset versus 0, and a spec without ``devices``.

:func:`to_go` writes a document back as Go's encoders do (struct field order, ``omitempty``),
for JSON (``json.Marshal``: a struct is never omitted) or YAML (``yaml.v3``: an all-zero struct
marked ``omitempty`` is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs


def _strs(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


def _opt_strs(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _ints(value: Iterable[int] | None) -> tuple[int, ...]:
    return tuple(value or ())


def _str_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class DeviceNode:
    path: str = ""
    host_path: str = ""
    type: str = ""
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None


@attrs.frozen(kw_only=True)
class Mount:
    host_path: str = ""
    container_path: str = ""
    options: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    type: str = ""


@attrs.frozen(kw_only=True)
class Hook:
    hook_name: str = ""
    path: str = ""
    args: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    env: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    timeout: int | None = None


@attrs.frozen(kw_only=True)
class IntelRdt:
    clos_id: str = ""
    l3_cache_schema: str = ""
    mem_bw_schema: str = ""
    schemata: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_strs)
    enable_monitoring: bool = False


@attrs.frozen(kw_only=True)
class LinuxNetDevice:
    host_interface_name: str = ""
    name: str = ""


def _nodes(value: Iterable[DeviceNode] | None) -> tuple[DeviceNode, ...]:
    return tuple(value or ())


def _nets(value: Iterable[LinuxNetDevice] | None) -> tuple[LinuxNetDevice, ...]:
    return tuple(value or ())


def _hooks(value: Iterable[Hook] | None) -> tuple[Hook, ...]:
    return tuple(value or ())


def _mounts(value: Iterable[Mount] | None) -> tuple[Mount, ...]:
    return tuple(value or ())


@attrs.frozen(kw_only=True)
class ContainerEdits:
    """What a spec or a device changes in the container's OCI spec."""

    env: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    device_nodes: tuple[DeviceNode, ...] = attrs.field(default=(), converter=_nodes)
    net_devices: tuple[LinuxNetDevice, ...] = attrs.field(default=(), converter=_nets)
    hooks: tuple[Hook, ...] = attrs.field(default=(), converter=_hooks)
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_mounts)
    intel_rdt: IntelRdt | None = None
    additional_gids: tuple[int, ...] = attrs.field(default=(), converter=_ints)

    def is_empty(self) -> bool:
        """Go's ``isEmpty``: no list has items and ``intelRdt`` is absent (invalid for a device)."""
        lists = (self.env, self.device_nodes, self.hooks, self.mounts, self.additional_gids, self.net_devices)
        return not any(lists) and self.intel_rdt is None

    def append(self, other: ContainerEdits | None) -> ContainerEdits:
        """Go's ``Append``: lists concatenated (no de-duplication), a later ``intelRdt`` replaces."""
        if other is None:
            return self
        return ContainerEdits(
            env=self.env + other.env,
            device_nodes=self.device_nodes + other.device_nodes,
            net_devices=self.net_devices + other.net_devices,
            hooks=self.hooks + other.hooks,
            mounts=self.mounts + other.mounts,
            intel_rdt=other.intel_rdt if other.intel_rdt is not None else self.intel_rdt,
            additional_gids=self.additional_gids + other.additional_gids,
        )


@attrs.frozen(kw_only=True)
class Device:
    name: str = ""
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    container_edits: ContainerEdits = attrs.field(factory=ContainerEdits)


def _devices(value: Iterable[Device] | None) -> tuple[Device, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class SpecDocument:
    """One CDI spec file's content (Go ``specs.Spec``)."""

    cdi_version: str = ""
    kind: str = ""
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    devices: tuple[Device, ...] | None = attrs.field(default=None, converter=_devices)
    container_edits: ContainerEdits = attrs.field(factory=ContainerEdits)

    def device_list(self) -> tuple[Device, ...]:
        return self.devices or ()


# --- Go's encoders ----------------------------------------------------------------------------
def to_go(doc: SpecDocument, *, yaml: bool = False) -> dict[str, Any]:
    """The document as Go writes it: ``json.Marshal`` (``yaml=False``) or ``yaml.v3``."""
    out: dict[str, Any] = {"cdiVersion": doc.cdi_version, "kind": doc.kind}
    if doc.annotations:
        out["annotations"] = dict(sorted(doc.annotations.items()))
    if doc.devices is None:
        out["devices"] = [] if yaml else None
    else:
        out["devices"] = [_device(d) for d in doc.devices]
    edits = edits_to_go(doc.container_edits)
    if edits or not yaml:
        out["containerEdits"] = edits
    return out


def _device(device: Device) -> dict[str, Any]:
    out: dict[str, Any] = {"name": device.name}
    if device.annotations:
        out["annotations"] = dict(sorted(device.annotations.items()))
    out["containerEdits"] = edits_to_go(device.container_edits)
    return out


def edits_to_go(edits: ContainerEdits) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if edits.env:
        out["env"] = list(edits.env)
    if edits.device_nodes:
        out["deviceNodes"] = [node_to_go(n) for n in edits.device_nodes]
    if edits.net_devices:
        out["netDevices"] = [{"hostInterfaceName": n.host_interface_name, "name": n.name}
                             for n in edits.net_devices]
    if edits.hooks:
        out["hooks"] = [_hook(h) for h in edits.hooks]
    if edits.mounts:
        out["mounts"] = [_mount(m) for m in edits.mounts]
    if edits.intel_rdt is not None:
        out["intelRdt"] = rdt_to_oci(edits.intel_rdt)
    if edits.additional_gids:
        out["additionalGids"] = list(edits.additional_gids)
    return out


def node_to_go(node: DeviceNode) -> dict[str, Any]:
    out: dict[str, Any] = {"path": node.path}
    for key, value in (("hostPath", node.host_path), ("type", node.type), ("major", node.major),
                       ("minor", node.minor)):
        if value:
            out[key] = value
    if node.file_mode is not None:
        out["fileMode"] = node.file_mode
    if node.permissions:
        out["permissions"] = node.permissions
    if node.uid is not None:
        out["uid"] = node.uid
    if node.gid is not None:
        out["gid"] = node.gid
    return out


def _hook(hook: Hook) -> dict[str, Any]:
    out: dict[str, Any] = {"hookName": hook.hook_name, "path": hook.path}
    if hook.args:
        out["args"] = list(hook.args)
    if hook.env:
        out["env"] = list(hook.env)
    if hook.timeout is not None:
        out["timeout"] = hook.timeout
    return out


def _mount(mount: Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"hostPath": mount.host_path, "containerPath": mount.container_path}
    if mount.options:
        out["options"] = list(mount.options)
    if mount.type:
        out["type"] = mount.type
    return out


def rdt_to_oci(rdt: IntelRdt) -> dict[str, Any]:
    """``intelRdt`` as the OCI spec (and the CDI spec) writes it: empty values are left out."""
    out: dict[str, Any] = {}
    for key, value in (("closID", rdt.clos_id), ("l3CacheSchema", rdt.l3_cache_schema),
                       ("memBwSchema", rdt.mem_bw_schema)):
        if value:
            out[key] = value
    if rdt.schemata:
        out["schemata"] = list(rdt.schemata)
    if rdt.enable_monitoring:
        out["enableMonitoring"] = True
    return out
