"""Semantic validation of a spec and its edits, in the Go library's order and with its texts.

The first error wins. Not validated, as in the reference: mount options and types, hook
arguments and timeouts, environment names beyond the ``=`` rule, absolute paths, ids, device
numbers, group ids; spec and device annotations (a no-op in the reference's ``pkg/cdi``; only
the JSON-schema path checks annotation keys, see :mod:`vmdev_cdi.schema`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from vmdev_cdi.errors import CDIError
from vmdev_cdi.gotext import goquote
from vmdev_cdi.model import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, LinuxNetDevice, Mount
from vmdev_cdi.names import validate_device_name

HOOK_NAMES: Final = (
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"
)
NODE_TYPES: Final = ("", "b", "c", "u", "p")
#: ``permissions: none`` asks for empty cgroup permissions
NO_PERMISSIONS: Final = "none"


def validate_env(env: Iterable[str]) -> None:
    for item in env:
        if item.find("=") <= 0:
            raise CDIError(f"invalid environment variable {goquote(item)}")


def validate_node(node: DeviceNode) -> None:
    if not node.path:
        raise CDIError("invalid (empty) device path")
    if node.type not in NODE_TYPES:
        raise CDIError(f"device {goquote(node.path)}: invalid type {goquote(node.type)}")
    if node.permissions not in ("", NO_PERMISSIONS) and node.permissions.strip("rwm"):
        raise CDIError(f"device {goquote(node.path)}: invalid permissions {goquote(node.permissions)}")


def validate_hook(hook: Hook) -> None:
    if hook.hook_name not in HOOK_NAMES:
        raise CDIError(f"invalid hook name {goquote(hook.hook_name)}")
    if not hook.path:
        raise CDIError(f"invalid hook {goquote(hook.hook_name)} with empty path")
    try:
        validate_env(hook.env)
    except CDIError as exc:
        raise CDIError(f"invalid hook {goquote(hook.hook_name)}: {exc.message}") from None


def validate_mount(mount: Mount) -> None:
    if not mount.host_path:
        raise CDIError("invalid mount, empty host path")
    if not mount.container_path:
        raise CDIError("invalid mount, empty container path")


def validate_intel_rdt(rdt: IntelRdt) -> None:
    """``closID`` must be a valid file name; ``/`` is the root CLOS."""
    clos = rdt.clos_id
    if clos == "/":
        return
    too_long = len(clos.encode("utf-8", "surrogateescape")) >= 4096
    if too_long or clos in (".", "..") or "/" in clos or "\n" in clos:
        raise CDIError("invalid ClosID")


def validate_net_devices(devices: Iterable[LinuxNetDevice]) -> None:
    hosts: dict[str, str] = {}
    names: dict[str, str] = {}
    for dev in devices:
        if not dev.host_interface_name:
            raise CDIError("invalid linux net device, empty HostInterfaceName")
        if not dev.name:
            raise CDIError("invalid linux net device, empty Name")
        if dev.host_interface_name in hosts:
            raise CDIError(
                f"invalid linux net device, duplicate HostInterfaceName {goquote(dev.host_interface_name)} "
                f"with names {goquote(dev.name)} and {goquote(hosts[dev.host_interface_name])}"
            )
        hosts[dev.host_interface_name] = dev.name
        if dev.name in names:
            raise CDIError(
                f"invalid linux net device, duplicate Name {goquote(dev.name)} with HostInterfaceName "
                f"{goquote(dev.host_interface_name)} and {goquote(names[dev.name])}"
            )
        names[dev.name] = dev.host_interface_name


def validate_edits(edits: ContainerEdits | None) -> None:
    """Go's ``ContainerEdits.Validate``."""
    if edits is None:
        return
    try:
        validate_env(edits.env)
    except CDIError as exc:
        raise CDIError(f"invalid container edits: {exc.message}") from None
    for node in edits.device_nodes:
        validate_node(node)
    for hook in edits.hooks:
        validate_hook(hook)
    for mount in edits.mounts:
        validate_mount(mount)
    if edits.intel_rdt is not None:
        validate_intel_rdt(edits.intel_rdt)
    validate_net_devices(edits.net_devices)


def validate_device(device: Device) -> None:
    """Go's ``Device.validate``: name, non-empty edits, then the edits."""
    validate_device_name(device.name)
    if device.container_edits.is_empty():
        raise CDIError("invalid device, empty device edits")
    try:
        validate_edits(device.container_edits)
    except CDIError as exc:
        raise CDIError(f"invalid device {goquote(device.name)}: {exc.message}") from None
