"""Cloud Hypervisor: ``VmConfig.rng`` (``src``, ``iommu``). It cannot hot-plug an RNG, so the
device is always part of the boot configuration; ``""`` becomes its default ``/dev/urandom``.
``iommu`` follows ``enable_iommu`` (declared by the QEMU backend for every backend), as Kata's
``clh.go`` sets ``Rng.SetIommu(config.IOMMU)``."""

from __future__ import annotations

from vmdev.backends.clh import ClhAttach, ClhTarget
from vmdev_rng.device import RNGDev
from vmdev_rng.settings import DEFAULT_ENTROPY_SOURCE


def render(device: RNGDev, target: ClhTarget, hotplug: bool) -> ClhAttach:
    iommu = bool(target.settings.value("enable_iommu", False))
    return ClhAttach(vm_config={"rng": {"src": device.filename or DEFAULT_ENTROPY_SOURCE, "iommu": iommu}})
