"""Cloud Hypervisor (``VmConfig.devices`` / ``vm.add-device``) and Firecracker (no VFIO)."""

from __future__ import annotations

from typing import Any, Final

from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest, ClhAttach
from vmdev_vfio.device import Backend, VFIODevice

CLH_API: Final = "/api/v1"


def render_clh(device: VFIODevice, hotplug: bool, iommu: bool) -> ClhAttach:
    """One ``DeviceConfig`` per function: ``path`` is the function's sysfs directory.

    Cloud Hypervisor has one flat PCI segment: the port settings only matter to QEMU.
    It opens the function through its group even for a cdev request (the API passes a
    cdev only as a file descriptor, which a plan cannot carry).
    """
    if device.is_ap:
        raise UnsupportedError(
            "AP (s390x crypto) devices are not PCI; Cloud Hypervisor passes only PCI VFIO devices",
            device=device.container_path,
            field="host_path",
        )
    configs = [{"id": f.id, "path": f.sysfs_dev, "iommu": iommu} for f in device.functions]
    details: dict[str, Any] = {"agent_type": device.agent_type}
    if device.backend is Backend.IOMMUFD:
        details["note"] = "Cloud Hypervisor opens the function through its VFIO group"
    if hotplug and not device.cold_plug:
        return ClhAttach(
            hotplug=[ApiRequest("PUT", f"{CLH_API}/vm.add-device", config) for config in configs],
            unplug=[ApiRequest("PUT", f"{CLH_API}/vm.remove-device", {"id": f.id})
                    for f in reversed(device.functions)],
            hotplugged=True,
            details=details,
        )
    return ClhAttach(vm_config={"devices": configs}, details=details)


def refuse_firecracker(device: VFIODevice) -> UnsupportedError:
    return UnsupportedError(
        "Firecracker has no VFIO (PCI passthrough) support; use QEMU or Cloud Hypervisor",
        device=device.container_path,
        field="hypervisor",
    )
