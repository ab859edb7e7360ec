"""Planning: from an OCI spec and sandbox settings to devices and hypervisor options.

``plan()`` is stateless: it collects every requested device, lets the plugins
resolve, build and render them, and the backend merges the renderings into its
part of the plan. It never talks to a hypervisor. :class:`Pipeline` is the one
implementation of those steps; the device manager drives it too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from vmdev.backend import Backend, BackendPlan, RenderContext
from vmdev.errors import ConfigError, InvalidIdError, PluginError, UnsupportedError
from vmdev.host import CORE_RESOLVER, HostContext, check_node
from vmdev.models import DEVICE_GENERIC, Device, DeviceInfo, device_key
from vmdev.plugins import PluginManager, get_plugin_manager
from vmdev.qemu import check_id
from vmdev.resources import Allocator
from vmdev.serialize import to_json
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget

if TYPE_CHECKING:
    from vmdev.oci import OciSpec


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

    @property
    def name(self) -> str:
        """What error messages call this device."""
        return self.container_path or self.id

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


def _extras(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class Plan:
    """A planned sandbox: its devices, the backend's part (``backend``, printed under the
    backend's ``plan_key``) and the sections plugins added (``extras``, ``finish_plan``)."""

    settings: SandboxSettings
    devices: tuple[PlannedDevice, ...]
    backend: BackendPlan
    plan_key: str
    extras: Mapping[str, Any] = attrs.field(factory=dict, converter=_extras)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hypervisor": self.settings.hypervisor,
            "devices": [d.to_json() for d in self.devices],
            self.plan_key: dict(self.backend.to_json()),
        }
        out.update(to_json(dict(self.extras)))
        return out

    def part(self, plan_key: str) -> Any:
        """The backend's part if this plan is for the backend printed as ``plan_key``, else None."""
        return self.backend if plan_key == self.plan_key else None

    # conveniences for the built-in backends' parts
    @property
    def qemu(self) -> Any:
        return self.part("qemu")

    @property
    def cloud_hypervisor(self) -> Any:
        return self.part("cloud_hypervisor")

    @property
    def firecracker(self) -> Any:
        return self.part("firecracker")

    def argv_text(self) -> str:
        argv = getattr(self.backend, "argv", None)
        if argv is None:
            raise UnsupportedError(
                f"this plan is for {self.settings.hypervisor}, which takes no command-line arguments",
                field="format",
            )
        import shlex  # only --format argv and text print it

        return shlex.join(argv)


# --- the pipeline ------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Request:
    """One device request and where it came from: ``source`` is the input plugin (``""``: the OCI
    spec's ``linux.devices``), ``hook`` the hook that made it (``device_from_mount``,
    ``device_requests``; ``""`` for the spec's own devices)."""

    info: DeviceInfo
    source: str = ""
    hook: str = ""


@attrs.frozen(kw_only=True)
class Built:
    """A built device before rendering."""

    device: Device
    plugin: str
    container_path: str | None
    host_path: str

    @property
    def name(self) -> str:
        return self.container_path or self.device.id


@attrs.frozen
class Pipeline:
    """Request collection, resolution, building, id checks and rendering: written once, driven
    by :func:`plan` (a stateless plan) and by the device manager (a sandbox's books).

    ``settings`` must be prepared (:meth:`PluginManager.prepare_settings`).
    """

    pm: PluginManager
    settings: SandboxSettings
    host: HostContext

    @classmethod
    def start(
        cls, settings: SandboxSettings, host: HostContext | None = None, plugins: PluginManager | None = None
    ) -> Pipeline:
        pm = plugins or get_plugin_manager()
        return cls(pm, pm.prepare_settings(settings), host or HostContext())

    @property
    def backend(self) -> Backend:
        return self.pm.backend(self.settings.hypervisor)

    def requests(self, spec: OciSpec) -> list[Request]:
        """The OCI spec's devices, then its mounts that plugins turn into devices, then the
        input-source plugins' requests; one container path may be requested once."""
        out = [Request(info=info) for info in spec.devices]
        for index, mount in enumerate(spec.mounts):
            answer = self.pm.device_from_mount(mount, self.host, self.settings)
            if answer is not None:
                _check_mount_destination(answer.value.container_path, index)
                out.append(Request(info=answer.value, source=answer.plugin, hook="device_from_mount"))
        for answer in self.pm.device_requests(spec, self.settings, self.host):
            out.append(Request(info=answer.value, source=answer.plugin, hook="device_requests"))
        seen: set[str] = set()
        for request in out:
            if request.info.container_path in seen:
                raise ConfigError("is requested twice", device=request.info.container_path, field="path")
            seen.add(request.info.container_path)
        return out

    def resolve(self, info: DeviceInfo) -> DeviceInfo:
        """``info`` with its host path; a device node there must be the one requested."""
        return self.resolve_by(info)[0]

    def resolve_by(self, info: DeviceInfo) -> tuple[DeviceInfo, str]:
        """:meth:`resolve`, and the plugin that resolved the host path (:data:`CORE_RESOLVER`)."""
        answer = self.pm.resolve_host_path_answer(info, self.host, self.settings)
        resolved = attrs.evolve(info, host_path=answer.value)
        check_node(resolved, self.host, by_core=answer.plugin == CORE_RESOLVER)
        return resolved, answer.plugin

    def build(self, info: DeviceInfo, alloc: Allocator) -> Built:
        """Build a resolved request; its id is checked."""
        answer = self.pm.build_device(info, self.host, self.settings, alloc)
        check_id(answer.value.id, device=info.name, field="id")
        return Built(device=answer.value, plugin=answer.plugin, container_path=info.container_path,
                     host_path=info.host_path)

    def sandbox_devices(self) -> list[Built]:
        out = []
        for answer in self.pm.sandbox_devices(self.settings, self.host):
            device = answer.value
            check_id(device.id, device=device.id, field="id")
            out.append(Built(device=device, plugin=answer.plugin, container_path=None,
                             host_path=str(getattr(device, "host_path", "") or "")))
        return out

    def target(self, context: RenderContext | None = None) -> RenderTarget:
        return self.backend.target(self.settings, context or RenderContext())

    def render(self, built: Built, target: RenderTarget, *, hotplug: bool) -> PlannedDevice:
        attach = self.pm.attach_options(built.device, target, hotplug, name=built.name)
        return PlannedDevice(device=built.device, plugin=built.plugin, container_path=built.container_path,
                             host_path=built.host_path, attach=attach)

    def assemble(
        self, target: RenderTarget, devices: tuple[PlannedDevice, ...], spec: OciSpec | None = None
    ) -> Plan:
        backend = self.backend
        result = Plan(settings=self.settings, devices=devices, plan_key=backend.plan_key,
                      backend=backend.assemble(self.settings, target, devices))
        if spec is None:
            return result
        extras = self.pm.finish_plan(result, spec, self.settings, self.host)
        clash = set(extras) & set(result.to_json())
        if clash:
            raise PluginError(f"a plugin's plan section {sorted(clash)[0]!r} is a name the plan has already")
        return attrs.evolve(result, extras=extras) if extras else result


def _check_mount_destination(path: str, index: int) -> None:
    """A mount that becomes a device is named by its destination, which must then be a path in the
    container as ``linux.devices`` paths must (runc takes a relative destination as relative to
    the root; a device with an empty or relative name has no place in the guest)."""
    if not path.startswith("/"):
        raise ConfigError(f"must be an absolute path to become a device, got {json.dumps(path)}",
                          device=path or f"mount {index}", field=f"$.mounts[{index}].destination")


def check_unique_ids(built: Iterable[Built]) -> None:
    """Two devices of one plan must not share an id."""
    seen: dict[str, str] = {}
    for item in built:
        if item.device.id in seen:
            raise InvalidIdError(
                f"id {item.device.id!r} is already used by {seen[item.device.id]}",
                device=item.name,
                field="id",
            )
        seen[item.device.id] = item.name


def check_attached_once(requests: Iterable[tuple[DeviceInfo, str]]) -> None:
    """Two requests of one plan must not attach one device (a block device, an image file, a
    passed-through host device) to the VM twice: two disks on one block device are two writers of
    one file system. Kata finds the device it made for the first request and attaches it once for
    both container paths; a plan has one container path per device, so it refuses the second
    request instead of dropping it (the device manager, which counts references, shares the device
    as Kata does). A generic device stays in the container, so any number of paths may name it.
    ``requests``: each resolved request with the kind of the device built from it."""
    seen: dict[str, str] = {}
    for info, kind in requests:
        if kind == DEVICE_GENERIC:
            continue
        key = device_key(info)
        if key in seen:
            raise attached_twice(info.name, key, seen[key])
        seen[key] = info.name


def attached_twice(name: str, key: str, first: str) -> ConfigError:
    """The error of :func:`check_attached_once` (the device manager's boot plan raises it too)."""
    return ConfigError(f"is the same device ({key}) as {json.dumps(first)}: a plan attaches a device to the "
                       "VM once; name it once", device=name, field="path")


def plan(
    spec: OciSpec,
    settings: SandboxSettings | None = None,
    *,
    host: HostContext | None = None,
    plugins: PluginManager | None = None,
) -> Plan:
    """Plan every device of ``spec`` plus the sandbox's own devices for ``settings``."""
    pipeline = Pipeline.start(settings or SandboxSettings(), host, plugins)
    alloc = Allocator()
    resolved = [pipeline.resolve(r.info) for r in pipeline.requests(spec)]
    built = [pipeline.build(info, alloc) for info in resolved]
    check_attached_once(zip(resolved, (b.device.kind for b in built), strict=True))
    built += pipeline.sandbox_devices()
    check_unique_ids(built)
    target = pipeline.target()
    planned = tuple(pipeline.render(b, target, hotplug=pipeline.settings.hotplug) for b in built)
    return pipeline.assemble(target, planned, spec)


def assemble(settings: SandboxSettings, target: RenderTarget, devices: tuple[PlannedDevice, ...],
             *, plugins: PluginManager | None = None) -> Plan:
    """Merge rendered devices into one plan with the settings' backend (what :func:`plan` does after
    rendering), for callers that render the devices themselves."""
    pm = plugins or get_plugin_manager()
    backend = pm.backend(settings.hypervisor)
    return Plan(settings=settings, devices=devices, plan_key=backend.plan_key,
                backend=backend.assemble(settings, target, devices))


def spare_root_ports(settings: SandboxSettings) -> int:
    """Moved to :func:`vmdev.backends.qemu.spare_root_ports` (QEMU's setting)."""
    from vmdev.backends.qemu import spare_root_ports as qemu_spare_root_ports

    return qemu_spare_root_ports(settings)
