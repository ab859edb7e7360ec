"""``vmdev doctor``: is this host ready to pass a ``/dev/vfio`` path to a VM?

For a group ``/dev/vfio/<g>``: the IOMMU is on, vfio-pci is loaded, the group exists, every
function is bound to vfio-pci (bridges aside), the group is viable (no function in use by a
host driver), and ``/dev/vfio/<g>`` and ``/dev/vfio/vfio`` are character devices this user
can open. For a cdev ``/dev/vfio/devices/vfio<N>``: the same for its one function, plus the
kernel's cdev support and ``/dev/iommu``. Without a path, every node under ``/dev/vfio``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import click

from vmdev.cliutil import errors_as_one_line
from vmdev.errors import VmdevError
from vmdev.host import HostContext
from vmdev_vfio import host as vfio_host
from vmdev_vfio.device import CDEV_DIR, CONTROL_NODE, IOMMU_NODE, VFIO_DIR
from vmdev_vfio.host import VFIODeviceType

#: drivers a group may hold and stay viable (the kernel's vfio_dev_driver_allowed)
VIABLE_DRIVERS: Final = ("pci-stub", "pcieport")


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@attrs.frozen
class Diagnosis:
    path: str
    kind: str
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "ready": self.ready,
                "checks": [c.to_json() for c in self.checks]}


def diagnose(path: str, host: HostContext) -> Diagnosis:
    """Every check for one ``/dev/vfio`` path (never raises for host problems)."""
    checks = [_iommu_check(host), _driver_loaded_check(host)]
    if path.startswith(CDEV_DIR):
        kind = "cdev"
        checks += _cdev_checks(path, host)
    elif path.startswith(VFIO_DIR) and path != CONTROL_NODE and path[len(VFIO_DIR):].isdigit():
        kind = "group"
        checks += _group_checks(path, host)
    else:
        kind = "unknown"
        problem = f"{path} is neither /dev/vfio/<group> nor /dev/vfio/devices/vfio<N>"
        checks.append(Check("path", False, problem))
    return Diagnosis(path=path, kind=kind, checks=tuple(checks))


def vfio_nodes(host: HostContext) -> list[str]:
    """Every group and cdev node under ``/dev/vfio`` (the control node aside)."""
    base = host.dev_path(VFIO_DIR)
    groups = sorted((p.name for p in _entries(base) if p.name.isdigit()), key=int)
    cdevs = sorted((p.name for p in _entries(base / "devices")), key=lambda n: (len(n), n))
    return [VFIO_DIR + g for g in groups] + [CDEV_DIR + c for c in cdevs]


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


# --- checks --------------------------------------------------------------------------------
def _iommu_check(host: HostContext) -> Check:
    groups = host.sysfs.list_dir("kernel/iommu_groups")
    units = host.sysfs.list_dir("class/iommu")
    if not groups:
        return Check("iommu", False, "no IOMMU groups: turn the IOMMU on (intel_iommu=on or "
                     "amd_iommu=on on the kernel command line, VT-d/AMD-Vi in the firmware)")
    return Check("iommu", True, f"{len(groups)} IOMMU groups" + (f" ({', '.join(units)})" if units else ""))


def _driver_loaded_check(host: HostContext) -> Check:
    if host.sysfs.exists(f"bus/pci/drivers/{vfio_host.VFIO_PCI}"):
        return Check("vfio-pci", True, "the vfio-pci driver is loaded")
    return Check("vfio-pci", False, "the vfio-pci driver is not loaded: modprobe vfio-pci")


def _group_checks(path: str, host: HostContext) -> list[Check]:
    group = path[len(VFIO_DIR):]
    try:
        members = vfio_host.group_members(host, group, device=path)
    except VmdevError as exc:
        return [Check("group", False, exc.message), _node_check(host, path, "node"),
                _node_check(host, CONTROL_NODE, "control")]
    functions = [m.function for m in members if m.type is VFIODeviceType.NORMAL and m.function]
    bridges = [f for f in functions if f.bridge]
    passed = len(members) - len(bridges)
    checks = [Check("group", passed > 0, f"IOMMU group {group}: {len(members)} devices, {passed} to pass"
                    + (f", {len(bridges)} bridge(s) skipped" if bridges else ""))]
    checks += [_member_check(m) for m in members]
    checks.append(_viable_check(group, functions))
    checks += [_node_check(host, path, "node"), _node_check(host, CONTROL_NODE, "control")]
    return checks


def _cdev_checks(path: str, host: HostContext) -> list[Check]:
    name = path[len(CDEV_DIR):]
    try:
        function = vfio_host.cdev_function(host, name, device=path)
    except VmdevError as exc:
        return [Check("cdev", False, exc.message), _node_check(host, path, "node"),
                _node_check(host, IOMMU_NODE, "iommufd")]
    checks = [Check("cdev", True, f"{name} is {function.bdf}, IOMMU group {function.iommu_group or '?'}")]
    checks.append(_function_check(function))
    group_functions: list[vfio_host.PciFunction] = []
    if function.iommu_group:
        try:
            members = vfio_host.group_members(host, function.iommu_group, device=path)
            group_functions = [m.function for m in members if m.function is not None]
        except VmdevError as exc:
            checks.append(Check("viable", False, exc.message))
    if group_functions:
        checks.append(_viable_check(function.iommu_group, group_functions))
    checks += [_node_check(host, path, "node"), _node_check(host, IOMMU_NODE, "iommufd")]
    return checks


def _member_check(member: vfio_host.GroupMember) -> Check:
    if member.type is VFIODeviceType.AP:
        return Check(member.name, True, f"AP matrix device, queues {', '.join(member.ap_devices)}")
    if member.type is VFIODeviceType.MEDIATED:
        parent = member.function.bdf if member.function else "?"
        return Check(member.name, True, f"mediated device of {parent}")
    assert member.function is not None
    return _function_check(member.function)


def _function_check(function: vfio_host.PciFunction) -> Check:
    ids = f"{function.vendor_id}:{function.device_id} class {function.class_}"
    kind = "PCIe" if function.is_pcie else "PCI"
    if function.bridge:
        return Check(function.bdf, True, f"{ids}, {function.bridge}: skipped")
    if function.vfio_bound:
        return Check(function.bdf, True, f"{ids} ({kind}), bound to {function.driver}")
    bound = f"bound to {function.driver}" if function.driver else "bound to no driver"
    return Check(function.bdf, False, f"{ids} ({kind}), {bound}: bind it to vfio-pci "
                 f"(echo vfio-pci > {function.sysfs_dev}/driver_override, then unbind and drivers_probe)")


def _viable_check(group: str, functions: list[vfio_host.PciFunction]) -> Check:
    busy = [f for f in functions
            if f.driver and not f.vfio_bound and f.driver not in VIABLE_DRIVERS and not f.bridge]
    if busy:
        users = ", ".join(f"{f.bdf} ({f.driver})" for f in busy)
        return Check("viable", False, f"group {group} is not viable: host drivers use {users}")
    return Check("viable", True, f"group {group} is viable (no function in use by a host driver)")


def _node_check(host: HostContext, path: str, name: str) -> Check:
    real = host.dev_path(path)
    try:
        info = host.stat(str(real))
    except OSError as exc:
        return Check(name, False, f"{path}: {exc.strerror or exc}")
    if not stat.S_ISCHR(info.st_mode):
        return Check(name, False, f"{path} is not a character device")
    rdev = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    if not os.access(real, os.R_OK | os.W_OK):
        return Check(name, False, f"{path} ({rdev}) is not readable and writable by uid {os.geteuid()}")
    return Check(name, True, f"{path} ({rdev}) is a character device this user can open")


# --- command line --------------------------------------------------------------------------
def render_text(diagnoses: list[Diagnosis], echo: Callable[[str], None]) -> None:
    for diagnosis in diagnoses:
        echo(f"{diagnosis.path}: {'ready' if diagnosis.ready else 'NOT READY'}")
        width = max(len(c.name) for c in diagnosis.checks)
        for check in diagnosis.checks:
            echo(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name.ljust(width)}  {check.detail}")


@click.command("doctor")
@click.argument("paths", nargs=-1)
@click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys.")
@click.option("--dev-root", type=click.Path(file_okay=False), help="Instead of /dev.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def doctor_command(
    paths: tuple[str, ...], sysfs_root: str | None, dev_root: str | None, as_json: bool
) -> None:
    """Check that the host is ready to pass VFIO devices (/dev/vfio/<group>, /dev/vfio/devices/vfioN).

    Without PATHS, every group and cdev under /dev/vfio. Exits 1 when one is not ready.
    """
    host = HostContext(sysfs_root=Path(sysfs_root or "/sys"), dev_root=Path(dev_root or "/dev"))
    targets = list(paths) or vfio_nodes(host)
    diagnoses = [diagnose(path, host) for path in targets]
    if not diagnoses:
        diagnoses = [Diagnosis(path=VFIO_DIR, kind="none", checks=(
            _iommu_check(host), _driver_loaded_check(host),
            Check("nodes", False, "no VFIO group or cdev under /dev/vfio: bind a device to vfio-pci"),
        ))]
    if as_json:
        click.echo(json.dumps([d.to_json() for d in diagnoses], indent=2))
    else:
        render_text(diagnoses, click.echo)
    if not all(d.ready for d in diagnoses):
        sys.exit(1)
