"""The vmdev-vhostuser plugin: vhost-user blk, scsi, net and fs devices (hook implementations only).

* Settings: every key is declared (:mod:`vmdev_vhostuser.settings`) and read typed
  (:mod:`vmdev_vhostuser.config` for the share and the interfaces).
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

This module is imported on every ``vmdev`` run (issue 13, cold start), so at import it loads only
``kinds.py`` and ``settings.py`` (no class, no backend): each hook first decides from the request
or the settings (store major and ``enable_vhost_user_store``, ``shared_fs``, ``vhost_user_net``,
the kind, the target's ``hypervisor``) whether the call is the family's, and only then imports the
module doing the work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

from vmdev import hookimpl
from vmdev_vhostuser import settings as keys
from vmdev_vhostuser.kinds import STORE_MAJORS, VHOST_USER_KIND, VIRTIO_9P_KIND

if TYPE_CHECKING:
    from vmdev.backends.clh import ClhTarget
    from vmdev.backends.firecracker import FirecrackerTarget
    from vmdev.backends.qemu import QemuTarget
    from vmdev.declared import Setting
    from vmdev.host import HostContext
    from vmdev.models import Device, DeviceInfo
    from vmdev.oci import OciSpec
    from vmdev.planner import Plan
    from vmdev.resources import Allocator
    from vmdev.settings import SandboxSettings
    from vmdev.targets import AttachOptions, RenderTarget
    from vmdev_vhostuser.device import VhostUserDeviceAttrs, Virtio9pShare


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in keys.declared_settings():
        register(setting)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    keys.check_settings(settings)


@hookimpl(tryfirst=True)
def resolve_host_path(info: DeviceInfo, host: HostContext, settings: SandboxSettings) -> str | None:
    if not _may_be_in_the_store(info, settings):  # the common case, decided cheaply
        return None
    from vmdev_vhostuser.host import VhostUserStore

    vhost_user_store = VhostUserStore.from_settings(settings)
    if not info.container_path or not vhost_user_store.claims(info):
        return None  # the core's default reports an empty container path
    return vhost_user_store.socket_for(info, host)


@hookimpl(tryfirst=True)
def build_device(info: DeviceInfo, settings: SandboxSettings, alloc: Allocator) -> Device | None:
    if not _may_be_in_the_store(info, settings):
        return None
    from vmdev_vhostuser.device import store_device
    from vmdev_vhostuser.host import VhostUserStore

    if not VhostUserStore.from_settings(settings).claims(info):
        return None
    return store_device(info, keys.reconnect_timeout(settings), alloc)


@hookimpl
def sandbox_devices(settings: SandboxSettings) -> Sequence[Device]:
    if not (keys.wants_share(settings) or keys.wants_net(settings)):
        return []
    from vmdev_vhostuser import config, device

    return device.sandbox_devices(
        config.shared_fs(settings),
        config.net_interfaces(settings),
        keys.reconnect_timeout(settings),
        config.ninep_share(settings),
    )


@hookimpl
def finish_plan(plan: Plan, spec: OciSpec, settings: SandboxSettings) -> Mapping[str, object] | None:
    if settings.value(keys.SHARED_FS_KEY) not in keys.VHOST_USER_FS_KINDS:
        return None  # only a vhost-user share has a daemon to plan
    from vmdev_vhostuser.config import shared_fs
    from vmdev_vhostuser.daemon import daemons_section

    return daemons_section(shared_fs(settings), [planned.device for planned in plan.devices])


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    """By the target's ``hypervisor`` name, so no backend module is imported for another backend."""
    if target.hypervisor not in ("qemu", "cloud-hypervisor", "firecracker"):
        return None
    ours = _as_ours(device)
    if ours is None:
        return None
    if target.hypervisor == "qemu":
        from vmdev_vhostuser import render_qemu

        return render_qemu.render(ours, cast("QemuTarget", target), hotplug)
    if target.hypervisor == "cloud-hypervisor":
        from vmdev_vhostuser import render_clh

        return render_clh.render(ours, cast("ClhTarget", target), hotplug)
    from vmdev_vhostuser import render_firecracker

    return render_firecracker.render(ours, cast("FirecrackerTarget", target))


@hookimpl
def device_from_state(kind: str, data: Mapping[str, object]) -> Device | None:
    if kind not in (VHOST_USER_KIND, VIRTIO_9P_KIND):
        return None
    from vmdev_vhostuser.device import from_state

    return from_state(kind, data)


@hookimpl
def host_facts(device: Device, host: HostContext) -> Mapping[str, str] | None:
    if device.kind != VHOST_USER_KIND:  # the 9p share has nothing on the host but its directory
        return None
    from vmdev_vhostuser.device import VhostUserDeviceAttrs

    if not isinstance(device, VhostUserDeviceAttrs):
        return None
    from vmdev_vhostuser.host import host_facts as store_facts

    return store_facts(device, host)


def _may_be_in_the_store(info: DeviceInfo, settings: SandboxSettings) -> bool:
    """A block request with a store pseudo major while the store is on: the only requests the
    store can claim (``VhostUserStore.claims`` decides)."""
    return info.dev_type == "b" and info.major in STORE_MAJORS and keys.store_enabled(settings)


def _as_ours(device: Device) -> VhostUserDeviceAttrs | Virtio9pShare | None:
    """``device`` if it is this family's: its kind first (no import for other families' devices),
    then its class (another plugin's device may reuse the kind name)."""
    if device.kind not in (VHOST_USER_KIND, VIRTIO_9P_KIND):
        return None
    from vmdev_vhostuser.device import VhostUserDeviceAttrs, Virtio9pShare

    return device if isinstance(device, VhostUserDeviceAttrs | Virtio9pShare) else None
