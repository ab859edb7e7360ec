"""Firecracker: vhost-user-blk drives only, configured before boot.

``PUT /drives/{id}`` with ``socket`` (Firecracker's swagger: ``is_read_only`` and
``path_on_host`` must be left out for a vhost-user drive). Firecracker cannot hot-plug, has no
vhost-user net, scsi or fs device, no virtio-9p device, and no reconnect timeout. (Kata's
Firecracker has no file sharing and quietly adds no share whatever ``shared_fs`` says; here a share
asked for is refused.)
"""

from __future__ import annotations

from vmdev.backends.firecracker import FirecrackerAttach, FirecrackerTarget
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_vhostuser.device import VHOST_USER_BLK, VhostUserDeviceAttrs, Virtio9pShare, refuse_reconnect


def render(device: VhostUserDeviceAttrs | Virtio9pShare, target: FirecrackerTarget) -> FirecrackerAttach:
    """Pre-boot ``PUT /drives/{id}``; always cold plug, whatever was asked."""
    if isinstance(device, Virtio9pShare):
        raise UnsupportedError(
            "Firecracker has no virtio-9p device (and no file sharing at all): set shared_fs = \"none\"",
            device=device.name,
            field="shared_fs",
        )
    if device.type != VHOST_USER_BLK:
        raise UnsupportedError(
            f"Firecracker has no {device.type} device (only vhost-user-blk drives)",
            device=device.name,
            field="type",
        )
    refuse_reconnect(device, "Firecracker")
    body = {"drive_id": device.id, "is_root_device": False, "socket": device.socket_path}
    return FirecrackerAttach(requests=[ApiRequest("PUT", f"/drives/{device.id}", body)])
