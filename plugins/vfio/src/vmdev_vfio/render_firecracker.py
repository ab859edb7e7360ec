"""Firecracker has no PCI passthrough: a VFIO request is refused with the hypervisors that have it.

(Declining would leave the core's generic "nobody renders vfio devices" error; this one says
what to use instead.)
"""

from __future__ import annotations

from vmdev.backends.firecracker import FirecrackerAttach, FirecrackerTarget
from vmdev.errors import UnsupportedError
from vmdev_vfio.device import VFIODevice


def render(device: VFIODevice, target: FirecrackerTarget, hotplug: bool) -> FirecrackerAttach:
    raise UnsupportedError(
        "Firecracker has no VFIO (PCI passthrough) support; use QEMU or Cloud Hypervisor",
        device=device.container_path,
        field="hypervisor",
    )
