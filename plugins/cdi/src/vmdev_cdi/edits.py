"""Applying container edits to an OCI runtime spec (Go's ``ContainerEdits.Apply``).

The OCI spec is the decoded ``config.json`` (a dict), edited in place. The sections are applied
in the reference's fixed order, each over all its entries: env, device nodes, net devices,
mounts, hooks, intelRdt, additional GIDs; so with merged edits every environment variable comes
before any device node. Device nodes are completed from the host first (Go's
``fillMissingInfo``) through a stat function that does not follow symlinks (``os.lstat`` by
default; tests pass a fake).

Differences from the Go code: the filled-in node is a copy (Go writes it back into the cached
spec, so later injections there skip the host lookup until the next rescan); fields of the OCI
spec that Go's ``oci.Spec`` type does not know are kept (Go drops them when it re-encodes). Go
decodes the OCI spec into typed structs first, so a field of the wrong type never reaches its
edits; here the document is a plain dict, and a field an edit reads or extends that has the wrong
shape (``"process": [1]``, ``"uid": "abc"``) is an :class:`~vmdev_cdi.errors.OciSpecError` naming
its JSON path (``$.process.user.uid``).
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import attrs

from vmdev_cdi.errors import CDIError, OciSpecError
from vmdev_cdi.gotext import clean, errno_text, goquote
from vmdev_cdi.model import ContainerEdits, DeviceNode, Hook, Mount, rdt_to_oci
from vmdev_cdi.validate import NO_PERMISSIONS

StatFunc = Callable[[str], os.stat_result]
OciDoc = MutableMapping[str, Any]

#: OCI hook lists by CDI hook name
HOOK_KEYS: Final = {
    "prestart": "prestart",
    "createRuntime": "createRuntime",
    "createContainer": "createContainer",
    "startContainer": "startContainer",
    "poststart": "poststart",
    "poststop": "poststop",
}
_HOST_TYPES: Final = {stat_module.S_IFBLK: "b", stat_module.S_IFCHR: "c", stat_module.S_IFIFO: "p"}


def fill_missing_info(node: DeviceNode, stat: StatFunc = os.lstat) -> DeviceNode:
    """The node with what the host knows filled in: host path, file mode, type, major:minor.

    A *minimal* node (a type, and a major or type ``p``) is taken as written: a failed lookup is
    then no error, and only the file mode is added. Otherwise the type must match the host's and
    a zero major means "take major and minor from the host".
    """
    minimal = node.type != "" and (node.major != 0 or node.type == "p")
    host_path = node.host_path or node.path
    node = attrs.evolve(node, host_path=host_path)
    try:
        info = stat(host_path)
        host_type = _HOST_TYPES.get(stat_module.S_IFMT(info.st_mode))
        reason = "" if host_type is not None else "not a device node"
    except OSError as exc:
        reason = errno_text(exc.errno)
    if reason:
        if minimal:
            return node
        raise CDIError(f"failed to stat CDI host device {goquote(host_path)}: {reason}")
    assert host_type is not None
    if node.file_mode is None:
        node = attrs.evolve(node, file_mode=info.st_mode & ~stat_module.S_IFMT(info.st_mode))
    if minimal:
        return node
    node_type = node.type or host_type
    if node_type != host_type:
        raise CDIError(f"CDI device ({goquote(node.path)}, {goquote(host_path)}), host type mismatch "
                       f"({node_type}, {host_type})")
    node = attrs.evolve(node, type=node_type)
    if node_type == "p" or node.major != 0:
        return node
    return attrs.evolve(node, major=os.major(info.st_rdev), minor=os.minor(info.st_rdev))


def apply_edits(oci: OciDoc | None, edits: ContainerEdits | None, *, stat: StatFunc = os.lstat) -> None:
    """Apply ``edits`` to the OCI spec ``oci`` in place, in the reference's order.

    An error (a device node that cannot be completed) leaves the sections applied before it in
    place, as in the reference.
    """
    if oci is None:
        raise CDIError("can't edit nil OCI Spec")
    if edits is None:
        return
    if edits.env:
        _add_env(oci, edits.env)
    for node in edits.device_nodes:
        _add_device(oci, fill_missing_info(node, stat), node.permissions)
    for net in edits.net_devices:
        net_devices = _object(_object(oci, "linux", "$"), "netDevices", "$.linux")
        net_devices[net.host_interface_name] = {"name": net.name}
    if edits.mounts:
        _add_mounts(oci, edits.mounts)
    for hook in edits.hooks:
        _array(_object(oci, "hooks", "$"), HOOK_KEYS[hook.hook_name], "$.hooks").append(hook_to_oci(hook))
    if edits.intel_rdt is not None:
        _object(oci, "linux", "$")["intelRdt"] = rdt_to_oci(edits.intel_rdt)
    for gid in edits.additional_gids:
        if gid == 0:
            continue
        user = _object(_object(oci, "process", "$"), "user", "$.process")
        gids = _array(user, "additionalGids", "$.process.user")
        if gid not in gids:
            gids.append(gid)


def _object(parent: OciDoc, key: str, where: str, device: str = "") -> OciDoc:
    """``parent[key]`` (``where`` is the parent's JSON path), created as ``{}`` when absent or
    null; any other non-object is an :class:`OciSpecError`."""
    if parent.get(key) is None:
        parent[key] = {}
    value = parent[key]
    if not isinstance(value, MutableMapping):
        raise OciSpecError("must be an object", device=device, field=f"{where}.{key}")
    return value


def _array(parent: OciDoc, key: str, where: str, device: str = "", *, of: type | None = None) -> list[Any]:
    """``parent[key]`` as :func:`_object` gives it, for an array (whose items must be ``of``)."""
    if parent.get(key) is None:
        parent[key] = []
    value = parent[key]
    if not isinstance(value, list):
        raise OciSpecError("must be an array", device=device, field=f"{where}.{key}")
    for index, item in enumerate(value):
        if of is not None and not isinstance(item, of):
            what = "an object" if of is MutableMapping else "a string"
            raise OciSpecError(f"must be {what}", device=device, field=f"{where}.{key}[{index}]")
    return value


def _add_env(oci: OciDoc, env: tuple[str, ...]) -> None:
    current: list[str] = _array(_object(oci, "process", "$"), "env", "$.process", of=str)
    index = {item.partition("=")[0]: i for i, item in enumerate(current)}
    for item in env:
        name = item.partition("=")[0]
        if name in index:
            current[index[name]] = item
        else:
            current.append(item)
            index[name] = len(current) - 1


def node_to_oci(node: DeviceNode) -> dict[str, Any]:
    """A filled node as an OCI ``linux.devices`` entry (host path and permissions are not part of it)."""
    out: dict[str, Any] = {"path": node.path, "type": node.type, "major": node.major, "minor": node.minor}
    for key, value in (("fileMode", node.file_mode), ("uid", node.uid), ("gid", node.gid)):
        if value is not None:
            out[key] = value
    return out


def _process_ids(oci: Mapping[str, Any], device: str) -> dict[str, int]:
    """``process.user``'s uid and gid (Go's ``uint32``s; absent or null is 0), checked."""
    process = oci.get("process")
    if process is None:
        return {}
    if not isinstance(process, Mapping):
        raise OciSpecError("must be an object", device=device, field="$.process")
    user = process.get("user")
    if user is None:
        return {"uid": 0, "gid": 0}
    if not isinstance(user, Mapping):
        raise OciSpecError("must be an object", device=device, field="$.process.user")
    ids: dict[str, int] = {}
    for key in ("uid", "gid"):
        value = user.get(key)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**32 - 1:
            raise OciSpecError(f"must be an integer from 0 to {2**32 - 1}", device=device,
                               field=f"$.process.user.{key}")
        ids[key] = value
    return ids


def _add_device(oci: OciDoc, node: DeviceNode, permissions: str) -> None:
    device = node_to_oci(node)
    for key, value in _process_ids(oci, node.path).items():
        if key not in device and value > 0:
            device[key] = value
    linux = _object(oci, "linux", "$", node.path)
    devices = _array(linux, "devices", "$.linux", node.path, of=MutableMapping)
    for index, existing in enumerate(devices):
        if existing.get("path") == node.path:
            del devices[index]
            break
    for index, existing in enumerate(devices):
        if existing.get("path") == node.path:
            devices[index] = device
            break
    else:
        devices.append(device)
    if node.type in ("b", "c"):
        access = {"": "rwm", NO_PERMISSIONS: ""}.get(permissions, permissions)
        rule: dict[str, Any] = {"allow": True, "type": node.type, "major": node.major, "minor": node.minor}
        if access:
            rule["access"] = access
        resources = _object(linux, "resources", "$.linux", node.path)
        _array(resources, "devices", "$.linux.resources", node.path).append(rule)


def mount_to_oci(mount: Mount, *, user_namespace: bool = False) -> dict[str, Any]:
    """An OCI mount; in a user namespace bind mounts get ``idmap`` (``rbind``: ``ridmap``)."""
    out: dict[str, Any] = {"destination": mount.container_path}
    if mount.type:
        out["type"] = mount.type
    if mount.host_path:
        out["source"] = mount.host_path
    options = list(mount.options)
    if user_namespace:
        option = "idmap" if mount.type == "bind" else ""
        for item in options:
            if item in ("idmap", "ridmap"):
                option = ""
                break
            option = {"bind": "idmap", "rbind": "ridmap"}.get(item, option)
        if option:
            options.append(option)
    if options:
        out["options"] = options
    return out


def _has_user_namespace(oci: OciDoc) -> bool:
    if oci.get("linux") is None:
        return False
    linux = _object(oci, "linux", "$")
    if linux.get("namespaces") is None:  # read only: nothing is added here
        return False
    namespaces = _array(linux, "namespaces", "$.linux", of=MutableMapping)
    return any(ns.get("type") == "user" for ns in namespaces)


def _add_mounts(oci: OciDoc, mounts: tuple[Mount, ...]) -> None:
    userns = _has_user_namespace(oci)
    current: list[dict[str, Any]] = _array(oci, "mounts", "$", of=MutableMapping)
    for mount in mounts:
        for index, existing in enumerate(current):
            if existing.get("destination") == mount.container_path:
                del current[index]
                break
        current.append(mount_to_oci(mount, user_namespace=userns))
    oci["mounts"] = sorted(current, key=lambda m: clean(str(m.get("destination") or "")).count("/"))


def hook_to_oci(hook: Hook) -> dict[str, Any]:
    out: dict[str, Any] = {"path": hook.path}
    if hook.args:
        out["args"] = list(hook.args)
    if hook.env:
        out["env"] = list(hook.env)
    if hook.timeout is not None:
        out["timeout"] = hook.timeout
    return out
