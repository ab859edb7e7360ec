"""Firecracker: vhost-user-blk drives only, configured before boot.

``PUT /drives/{id}`` with ``socket`` (Firecracker's swagger: ``is_read_only`` and
``path_on_host`` must be left out for a vhost-user drive). Firecracker cannot hot-plug, has no
vhost-user net, scsi or fs device, and no reconnect timeout.
"""

from __future__ import annotations

from vmdev.backends.firecracker import FirecrackerAttach, FirecrackerTarget
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_vhostuser.device import VHOST_USER_BLK, VhostUserDeviceAttrs, refuse_reconnect


def render(device: VhostUserDeviceAttrs, target: FirecrackerTarget) -> FirecrackerAttach:
    """Pre-boot ``PUT /drives/{id}``; always cold plug, whatever was asked."""
    if device.type != VHOST_USER_BLK:
        raise UnsupportedError(
            f"Firecracker has no {device.type} device (only vhost-user-blk drives)",
            device=device.name,
            field="type",
        )
    refuse_reconnect(device, "Firecracker")
    body = {"drive_id": device.id, "is_root_device": False, "socket": device.socket_path}
    return FirecrackerAttach(requests=[ApiRequest("PUT", f"/drives/{device.id}", body)])
