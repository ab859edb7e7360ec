"""Cloud Hypervisor: one ``DeviceConfig`` per function (``VmConfig.devices`` / ``vm.add-device``)."""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.clh import ClhAttach, ClhTarget
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_vfio.config import read_config
from vmdev_vfio.device import VfioBackend, VFIODevice

CLH_API: Final = "/api/v1"


def render(device: VFIODevice, target: ClhTarget, hotplug: bool) -> ClhAttach:
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
    iommu = read_config(target.settings).iommu
    configs = [{"id": f.id, "path": f.sysfs_dev, "iommu": iommu} for f in device.functions]
    details: dict[str, Any] = {"agent_type": device.agent_type}
    if device.backend is VfioBackend.IOMMUFD:
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
