"""Cloud Hypervisor: ``VmConfig`` fragments, or ``vm.add-*`` requests when hot plugging.

Field names from Cloud Hypervisor's OpenAPI spec: ``disks`` (``vhost_user``/``vhost_socket``),
``fs``, ``net`` (``vhost_user``, ``vhost_socket``, ``vhost_mode``) and ``generic_vhost_user``
(vhost-user-scsi: virtio device id 8). Every device needs ``memory.shared`` (the backend process
maps the guest RAM). Cloud Hypervisor has no reconnect timeout, no virtio-fs DAX window and no
virtio-9p device (Kata: "cloud-hypervisor only supports virtio based file sharing").
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.clh import ClhAttach, ClhTarget
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_vhostuser.device import (
    VHOST_USER_BLK,
    VHOST_USER_FS,
    VHOST_USER_NET,
    VHOST_USER_SCSI,
    VhostUserDeviceAttrs,
    Virtio9pShare,
    refuse_reconnect,
)
from vmdev_vhostuser.settings import FS_CACHE_SIZE_KEY

CLH_API: Final = "/api/v1"
#: virtio device id of SCSI host adapters (Cloud Hypervisor's generic vhost-user device_type)
VIRTIO_ID_SCSI: Final = 8
#: virtio-scsi queues: control, event and one request queue, at QEMU's default size
SCSI_QUEUE_SIZES: Final = (128, 128, 128)
MIB: Final = 1024 * 1024
#: (VmConfig list key, hot-plug endpoint) per device type
CLH_KEYS: Final = {
    VHOST_USER_BLK: ("disks", "vm.add-disk"),
    VHOST_USER_FS: ("fs", "vm.add-fs"),
    VHOST_USER_NET: ("net", "vm.add-net"),
    VHOST_USER_SCSI: ("generic_vhost_user", "vm.add-generic-vhost-user"),
}


def render(device: VhostUserDeviceAttrs | Virtio9pShare, target: ClhTarget, hotplug: bool) -> ClhAttach:
    if isinstance(device, Virtio9pShare):
        raise UnsupportedError(
            "Cloud Hypervisor has no virtio-9p device (it shares files with virtio-fs only): "
            "set shared_fs = \"virtio-fs\"",
            device=device.name,
            field="shared_fs",
        )
    refuse_reconnect(device, "Cloud Hypervisor")
    key, endpoint = CLH_KEYS[device.type]
    body = _body(device)
    if device.type in (VHOST_USER_BLK, VHOST_USER_NET) and target.settings.value("enable_iommu", False):
        body["iommu"] = True  # Kata's clh.go: disk.SetIommu / net.SetIommu(config.IOMMU)
    memory = {"memory": {"size": target.settings.memory_mib * MIB, "shared": True}}
    details = {"vm_config_key": key}
    if not hotplug:
        return ClhAttach(vm_config={**memory, key: [body]}, details=details)
    return ClhAttach(
        vm_config=memory,
        hotplug=[ApiRequest("PUT", f"{CLH_API}/{endpoint}", body)],
        unplug=[ApiRequest("PUT", f"{CLH_API}/vm.remove-device", {"id": device.id})],
        hotplugged=True,
        details=details,
    )


def _body(device: VhostUserDeviceAttrs) -> dict[str, Any]:
    if device.type == VHOST_USER_BLK:
        return {"id": device.id, "vhost_user": True, "vhost_socket": device.socket_path}
    if device.type == VHOST_USER_NET:
        return {
            "id": device.id,
            "vhost_user": True,
            "vhost_socket": device.socket_path,
            "vhost_mode": "Client",
            "mac": device.mac_address,
        }
    if device.type == VHOST_USER_SCSI:
        return {
            "id": device.id,
            "socket": device.socket_path,
            "device_type": VIRTIO_ID_SCSI,
            "queue_sizes": list(SCSI_QUEUE_SIZES),
        }
    if device.cache_size:
        raise UnsupportedError(
            f"Cloud Hypervisor's virtio-fs has no DAX window; {device.cache_size} MiB were asked: "
            f"set {FS_CACHE_SIZE_KEY} = 0",
            device=device.name,
            field=FS_CACHE_SIZE_KEY,
        )
    return {
        "id": device.id,
        "tag": device.tag,
        "socket": device.socket_path,
        "num_queues": 1,
        "queue_size": device.queue_size,
    }
