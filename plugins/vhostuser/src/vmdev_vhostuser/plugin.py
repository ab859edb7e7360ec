"""The vmdev-vhostuser plugin: vhost-user blk, scsi, net and fs devices (hook implementations only).

* Settings: every key is declared (:mod:`vmdev_vhostuser.settings`) and read typed.
* Store requests: with the vhost-user store enabled (``enable_vhost_user_store``,
  ``vhost_user_store_path`` or ``--vhost-user-store DIR``), a ``b`` device with major 241
  (vhost-user-blk) or 242 (vhost-user-scsi) is resolved through the store to its socket and built
  here, before any other plugin (``tryfirst``) sees it (:mod:`vmdev_vhostuser.host`).
* Sandbox devices: the shared file system (``shared_fs``: virtio-fs on a planned virtiofsd or on
  ``virtio_fs_socket``, virtio-9p) and every ``vhost_user_net`` interface.
* The plan's ``daemons`` section: the virtiofsd a virtio-fs share needs (:mod:`vmdev_vhostuser.daemon`).
* Rendering: QEMU, Cloud Hypervisor and Firecracker (``render_<backend>``).
* Saved sandboxes: devices are rebuilt from their saved form; the host facts of a store device
  are its socket and its store node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from vmdev import hookimpl
from vmdev.backends.clh import ClhTarget
from vmdev.backends.firecracker import FirecrackerTarget
from vmdev.backends.qemu import QemuTarget
from vmdev.declared import Setting
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo
from vmdev.resources import Allocator
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, RenderTarget
from vmdev_vhostuser import daemon as daemons
from vmdev_vhostuser import device as devices
from vmdev_vhostuser import host as store
from vmdev_vhostuser import render_clh, render_firecracker, render_qemu
from vmdev_vhostuser import settings as keys
from vmdev_vhostuser.device import VhostUserDeviceAttrs, Virtio9pShare

if TYPE_CHECKING:
    from vmdev.oci import OciSpec
    from vmdev.planner import Plan


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in keys.declared_settings():
        register(setting)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    keys.check_settings(settings)


@hookimpl(tryfirst=True)
def resolve_host_path(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> str | None:
    if info.dev_type != "b" or info.major not in devices.STORE_MAJORS:  # the common case, decided cheaply
        return None
    vhost_user_store = store.VhostUserStore.from_settings(settings)
    if not info.container_path or not vhost_user_store.claims(info):
        return None  # the core's default reports an empty container path
    return vhost_user_store.socket_for(info, host)


@hookimpl(tryfirst=True)
def build_device(info: DeviceInfo, settings: SandboxSettings, alloc: Allocator) -> Device | None:
    if info.dev_type != "b" or info.major not in devices.STORE_MAJORS:
        return None
    if not store.VhostUserStore.from_settings(settings).claims(info):
        return None
    return devices.store_device(info, keys.reconnect_timeout(settings), alloc)


@hookimpl
def sandbox_devices(settings: SandboxSettings) -> Sequence[Device]:
    return devices.sandbox_devices(
        keys.shared_fs(settings),
        keys.net_interfaces(settings),
        keys.reconnect_timeout(settings),
        keys.ninep_share(settings),
    )


@hookimpl
def finish_plan(plan: Plan, spec: OciSpec, settings: SandboxSettings) -> Mapping[str, object] | None:
    return daemons.daemons_section(keys.shared_fs(settings), [planned.device for planned in plan.devices])


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(device, VhostUserDeviceAttrs | Virtio9pShare):
        return None
    if isinstance(target, QemuTarget):
        return render_qemu.render(device, target, hotplug)
    if isinstance(target, ClhTarget):
        return render_clh.render(device, target, hotplug)
    if isinstance(target, FirecrackerTarget):
        return render_firecracker.render(device, target)
    return None


@hookimpl
def device_from_state(kind: str, data: Mapping[str, object]) -> Device | None:
    return devices.from_state(kind, data)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    if not isinstance(device, VhostUserDeviceAttrs):
        return None
    return store.host_facts(device, host)
