"""Cloud Hypervisor: ``VmConfig.rng`` (``src``, ``iommu``). It cannot hot-plug an RNG, so the
device is always part of the boot configuration; ``""`` becomes its default ``/dev/urandom``."""

from __future__ import annotations

from vmdev.backends.clh import ClhAttach, ClhTarget
from vmdev_rng.device import RNGDev
from vmdev_rng.settings import DEFAULT_ENTROPY_SOURCE


def render(device: RNGDev, target: ClhTarget, hotplug: bool) -> ClhAttach:
    return ClhAttach(vm_config={"rng": {"src": device.filename or DEFAULT_ENTROPY_SOURCE, "iommu": False}})
