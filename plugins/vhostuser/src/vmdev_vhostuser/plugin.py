"""The vmdev-vhostuser plugin: vhost-user blk, scsi, net and fs devices.

* Store requests: with the vhost-user store enabled (``enable_vhost_user_store``,
  ``vhost_user_store_path`` or ``--vhost-user-store``), a ``b`` device with major 241
  (vhost-user-blk) or 242 (vhost-user-scsi) is resolved through the store to its socket and built
  here, before any other plugin (``tryfirst``) sees it.
* Sandbox devices: the virtio-fs share (``shared_fs = "virtio-fs"`` with ``virtio_fs_socket``) and
  every ``vhost_user_net`` interface.
* Rendering: QEMU (``-chardev socket`` + device, shared guest RAM, or QMP hot plug), Cloud
  Hypervisor and Firecracker (see ``render_clh``).
"""

from __future__ import annotations

from collections.abc import Sequence

from vmdev import hookimpl
from vmdev.host import HostContext
from vmdev.models import Device, DeviceInfo, VhostUserDeviceAttrs
from vmdev.resources import Allocator
from vmdev.settings import SandboxSettings
from vmdev.targets import AttachOptions, ClhTarget, FirecrackerTarget, QemuTarget, RenderTarget
from vmdev_vhostuser import render_clh, render_qemu
from vmdev_vhostuser.device import sandbox_devices as build_sandbox_devices
from vmdev_vhostuser.device import store_device
from vmdev_vhostuser.host import is_store_request, store_socket
from vmdev_vhostuser.settings import read_config


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    read_config(settings)


@hookimpl(tryfirst=True)
def resolve_host_path(info: DeviceInfo, host: HostContext) -> str | None:
    if not info.container_path or not is_store_request(info, host):
        return None  # the core's default reports an empty container path
    return store_socket(info, host)


@hookimpl(tryfirst=True)
def build_device(
    info: DeviceInfo, host: HostContext, settings: SandboxSettings, alloc: Allocator
) -> Device | None:
    if not is_store_request(info, host):
        return None
    return store_device(info, read_config(settings), alloc)


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    return build_sandbox_devices(read_config(settings))


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(device, VhostUserDeviceAttrs):
        return None
    if isinstance(target, QemuTarget):
        return render_qemu.render(device, target, hotplug)
    if isinstance(target, ClhTarget):
        return render_clh.render_clh(device, target, hotplug)
    if isinstance(target, FirecrackerTarget):
        return render_clh.render_firecracker(device, target)
    return None
