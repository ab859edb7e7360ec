"""Planning: from an OCI spec and sandbox settings to devices and hypervisor options.

``plan()`` is stateless: it resolves every requested device, lets the plugins
build and render them, and merges the renderings into one result per
hypervisor. It never talks to a hypervisor.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from vmdev.errors import ConfigError, InvalidIdError, UnsupportedError
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.oci import OciSpec
from vmdev.plugins import PluginManager, get_plugin_manager
from vmdev.qemu import MemoryNeeds, OptValue, QemuAttach, QmpCommand, check_id, keyvals, opts
from vmdev.resources import Allocator
from vmdev.serialize import to_json
from vmdev.settings import CLOUD_HYPERVISOR, FIRECRACKER, QEMU, SandboxSettings
from vmdev.targets import (
    MAX_ROOT_PORTS,
    ApiRequest,
    AttachOptions,
    ClhAttach,
    FirecrackerAttach,
    QemuTarget,
    RenderTarget,
    make_target,
)

#: id of the shared guest-RAM backend created when a device needs shared memory
SHARED_RAM_ID: Final = "vmdev-ram"
#: vmdev's settings key: the PCIe root ports a QEMU plan has at least, for devices hot-plugged later
SPARE_ROOT_PORTS_KEY: Final = "hotplug_root_ports"


@attrs.frozen(kw_only=True)
class PlannedDevice:
    """One device of the plan: what was asked, what was built, how it attaches."""

    device: Device
    plugin: str
    container_path: str | None
    host_path: str
    attach: AttachOptions

    @property
    def kind(self) -> str:
        return self.device.kind

    @property
    def id(self) -> str:
        return self.device.id

    @property
    def hotplug(self) -> bool:
        return self.attach.hotplugged

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "container_path": self.container_path,
            "host_path": self.host_path,
            "kind": self.kind,
            "plugin": self.plugin,
            "id": self.id,
            "hotplug": self.hotplug,
        }
        for key, value in to_json(self.device).items():
            out.setdefault(key, value)
        for key, value in to_json(dict(self.attach.details)).items():
            out.setdefault(key, value)
        return out


@attrs.frozen(kw_only=True)
class QemuPlan:
    argv: tuple[str, ...]
    hotplug: tuple[QmpCommand, ...]
    unplug: tuple[QmpCommand, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "hotplug": [c.to_json() for c in self.hotplug],
            "unplug": [c.to_json() for c in self.unplug],
        }


@attrs.frozen(kw_only=True)
class ApiPlan:
    """Cloud Hypervisor or Firecracker: boot configuration and hot-plug requests."""

    config: Mapping[str, Any]
    requests: tuple[ApiRequest, ...]
    hotplug: tuple[ApiRequest, ...]
    unplug: tuple[ApiRequest, ...]
    config_key: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.config_key:
            out[self.config_key] = to_json(dict(self.config))
        else:
            out["requests"] = [r.to_json() for r in self.requests]
        out["hotplug"] = [r.to_json() for r in self.hotplug]
        out["unplug"] = [r.to_json() for r in self.unplug]
        return out


@attrs.frozen(kw_only=True)
class Plan:
    settings: SandboxSettings
    devices: tuple[PlannedDevice, ...]
    qemu: QemuPlan | None = None
    cloud_hypervisor: ApiPlan | None = None
    firecracker: ApiPlan | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hypervisor": self.settings.hypervisor,
            "devices": [d.to_json() for d in self.devices],
        }
        if self.qemu is not None:
            out["qemu"] = self.qemu.to_json()
        if self.cloud_hypervisor is not None:
            out["cloud_hypervisor"] = self.cloud_hypervisor.to_json()
        if self.firecracker is not None:
            out["firecracker"] = self.firecracker.to_json()
        return out

    def argv_text(self) -> str:
        if self.qemu is None:
            raise UnsupportedError(f"argv is QEMU's; this plan is for {self.settings.hypervisor}")
        return shlex.join(self.qemu.argv)


def plan(
    spec: OciSpec,
    settings: SandboxSettings | None = None,
    *,
    host: HostContext | None = None,
    plugins: PluginManager | None = None,
) -> Plan:
    """Plan every device of ``spec`` plus the sandbox's own devices for ``settings``."""
    settings = settings or SandboxSettings()
    host = host or HostContext()
    pm = plugins or get_plugin_manager()
    pm.check_settings(settings)

    requests: list[tuple[DeviceInfo, str]] = [(info, "") for info in spec.devices]
    for mount in spec.mounts:
        answer = pm.device_from_mount(mount, host, settings)
        if answer is not None:
            requests.append((answer.value, answer.plugin))
    _check_unique_paths(info for info, _ in requests)

    built: list[tuple[Device, str, str | None, str]] = []
    alloc = Allocator()
    for info, _ in requests:
        host_path = pm.resolve_host_path(info, host)
        resolved = attrs.evolve(info, host_path=host_path)
        answer = pm.build_device(resolved, host, settings, alloc)
        built.append((answer.value, answer.plugin, info.container_path, host_path))
    for answer in pm.sandbox_devices(settings, host):
        device = answer.value
        built.append((device, answer.plugin, None, str(getattr(device, "host_path", "") or "")))

    target = make_target(settings)
    planned: list[PlannedDevice] = []
    seen_ids: dict[str, str] = {}
    for device, plugin, container_path, host_path in built:
        name = container_path or device.id
        check_id(device.id, device=name, field="id")
        if device.id in seen_ids:
            raise InvalidIdError(
                f"id {device.id!r} is already used by {seen_ids[device.id]}", device=name, field="id"
            )
        seen_ids[device.id] = name
        attach = pm.attach_options(device, target, settings.hotplug, name=name)
        planned.append(
            PlannedDevice(
                device=device,
                plugin=plugin,
                container_path=container_path,
                host_path=host_path,
                attach=attach,
            )
        )
    return assemble(settings, target, tuple(planned))


def _check_unique_paths(infos: Iterable[DeviceInfo]) -> None:
    seen: set[str] = set()
    for info in infos:
        if info.container_path in seen:
            raise ConfigError("is requested twice", device=info.container_path, field="path")
        seen.add(info.container_path)


def spare_root_ports(settings: SandboxSettings) -> int:
    """The ``hotplug_root_ports`` setting (``[vmdev]`` table): how many PCIe root ports a QEMU plan
    has at least, the planned devices' ports included, so that devices can be hot-plugged into
    the running VM later (``vmdev attach``). 0 when unset. Kata's ``pcie_root_port`` does the same
    for VFIO root ports only and belongs to the VFIO plugin; a plan has the larger of the two."""
    value = settings.option(SPARE_ROOT_PORTS_KEY, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROOT_PORTS:
        raise ConfigError(
            f"must be a number of PCIe root ports from 0 to {MAX_ROOT_PORTS}, got {value!r}",
            field=SPARE_ROOT_PORTS_KEY,
        )
    return value


def assemble(settings: SandboxSettings, target: RenderTarget, devices: tuple[PlannedDevice, ...]) -> Plan:
    """Merge rendered devices into one plan (what :func:`plan` does after rendering).

    For callers that render the devices themselves, such as the device manager, which keeps
    a sandbox's allocations between plans.
    """
    if settings.hypervisor == QEMU:
        assert isinstance(target, QemuTarget)
        return Plan(settings=settings, devices=devices, qemu=_qemu_plan(settings, target, devices))
    if settings.hypervisor == CLOUD_HYPERVISOR:
        return Plan(settings=settings, devices=devices, cloud_hypervisor=_clh_plan(devices))
    assert settings.hypervisor == FIRECRACKER
    return Plan(settings=settings, devices=devices, firecracker=_fc_plan(devices))


def _qemu_plan(settings: SandboxSettings, target: QemuTarget, devices: tuple[PlannedDevice, ...]) -> QemuPlan:
    attaches = [(d, d.attach) for d in devices if isinstance(d.attach, QemuAttach)]
    machine: dict[str, Any] = {}
    owner: dict[str, str] = {}
    shared: dict[str, tuple[str, ...]] = {}
    memory = MemoryNeeds()
    for planned, attach in attaches:
        for key, value in attach.machine.items():
            if key in machine and machine[key] != value:
                raise UnsupportedError(
                    f"needs -machine {key}={value}, but {owner[key]} needs {key}={machine[key]}",
                    device=planned.container_path or planned.id,
                    field="machine",
                )
            machine[key] = value
            owner[key] = planned.container_path or planned.id
        for key, args in attach.shared_args.items():
            shared.setdefault(key, args)
        memory = MemoryNeeds(
            slots=memory.slots + attach.memory.slots,
            maxmem_extra_mib=memory.maxmem_extra_mib + attach.memory.maxmem_extra_mib,
            shared=memory.shared or attach.memory.shared,
        )
    mem = settings.memory_mib
    argv: list[str] = []
    if memory.shared:
        machine["memory-backend"] = SHARED_RAM_ID
    argv += ["-machine", opts(settings.machine_type, machine)]
    size: dict[str, Any] = {}
    if memory.slots:
        size = {"slots": memory.slots, "maxmem": f"{mem + max(memory.maxmem_extra_mib, 1)}M"}
    argv += ["-m", f"{mem}M" + ("," + keyvals(size) if size else "")]
    if memory.shared:
        backend: dict[str, OptValue | None] = {"id": SHARED_RAM_ID, "size": f"{mem}M", "share": True}
        argv += ["-object", opts("memory-backend-memfd", backend)]
    for args in shared.values():
        argv += list(args)
    spare = spare_root_ports(settings)
    if spare:
        target.topology.ensure_root_ports(spare, device="sandbox", field=SPARE_ROOT_PORTS_KEY)
    argv += target.topology_args()
    for _, attach in attaches:
        argv += list(attach.args)
    hotplug = [c for _, a in attaches for c in a.hotplug]
    unplug = [c for _, a in reversed(attaches) for c in a.unplug]
    return QemuPlan(argv=tuple(argv), hotplug=tuple(hotplug), unplug=tuple(unplug))


def _clh_plan(devices: tuple[PlannedDevice, ...]) -> ApiPlan:
    config: dict[str, Any] = {}
    hotplug: list[ApiRequest] = []
    unplug: list[ApiRequest] = []
    for planned in devices:
        attach = planned.attach
        assert isinstance(attach, ClhAttach)
        for key, value in attach.vm_config.items():
            if isinstance(value, list | tuple):
                config.setdefault(key, []).extend(value)
            elif key in config and config[key] != value:
                raise UnsupportedError(
                    f"VmConfig.{key} is already set by another device",
                    device=planned.container_path or planned.id,
                    field=key,
                )
            else:
                config[key] = value
        hotplug += attach.hotplug
        unplug[:0] = attach.unplug
    return ApiPlan(config=config, requests=(), hotplug=tuple(hotplug), unplug=tuple(unplug),
                   config_key="vm_config")


def _fc_plan(devices: tuple[PlannedDevice, ...]) -> ApiPlan:
    requests: list[ApiRequest] = []
    hotplug: list[ApiRequest] = []
    unplug: list[ApiRequest] = []
    for planned in devices:
        attach = planned.attach
        assert isinstance(attach, FirecrackerAttach)
        requests += attach.requests
        hotplug += attach.hotplug
        unplug[:0] = attach.unplug
    return ApiPlan(config={}, requests=tuple(requests), hotplug=tuple(hotplug), unplug=tuple(unplug),
                   config_key="")
