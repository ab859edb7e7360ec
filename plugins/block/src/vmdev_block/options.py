"""The block options of one sandbox, typed and defaulted: :class:`BlockSettings`.

Built from the keys :mod:`vmdev_block.settings` declares, when a disk is built or rendered; kept
apart from the declarations so that loading the plugin creates no class (issue 13, cold start).
"""

from __future__ import annotations

import attrs

from vmdev.settings import SandboxSettings
from vmdev_block.constants import AIO_NATIVE
from vmdev_block.settings import (
    DEFAULT_AIO,
    DEFAULT_DRIVER,
    DEFAULT_DRIVERS,
    KEY_AIO,
    KEY_ALLOW_HOST_MOUNTED,
    KEY_BW_BURST,
    KEY_BW_RATE,
    KEY_CACHE_DIRECT,
    KEY_CACHE_NOFLUSH,
    KEY_CACHE_SET,
    KEY_DISABLE,
    KEY_DRIVER,
    KEY_LOGICAL_SECTOR,
    KEY_NUM_QUEUES,
    KEY_OPS_BURST,
    KEY_OPS_RATE,
    KEY_PHYSICAL_SECTOR,
    KEY_QUEUE_SIZE,
)


@attrs.frozen(kw_only=True)
class BlockSettings:
    """The block options of one sandbox, checked."""

    driver: str
    aio: str
    #: ``block_device_aio`` was given (Firecracker's ``io_engine`` is only set then)
    aio_explicit: bool = False
    disabled: bool = False
    cache_set: bool = False
    cache_direct: bool = False
    cache_noflush: bool = False
    #: QEMU ``logical_block_size`` / ``physical_block_size``; 0: QEMU's default
    logical_sector_size: int = 0
    physical_sector_size: int = 0
    #: Kata's disk rate limit: bits/s and bits, operations/s and operations (0: none)
    bw_rate: int = 0
    bw_burst: int = 0
    ops_rate: int = 0
    ops_burst: int = 0
    #: Cloud Hypervisor's disk queues; 0: its defaults
    num_queues: int = 0
    queue_size: int = 0
    allow_host_mounted: bool = False
    #: ``enable_iommu`` (declared by the QEMU backend for every backend): Cloud Hypervisor disks
    #: sit behind the virtual IOMMU, as Kata's clh.go sets ``disk.SetIommu(config.IOMMU)``
    iommu: bool = False
    #: the Kata runtime the file is for (``SandboxSettings.kata_runtime``): where Go and runtime-rs
    #: differ (Cloud Hypervisor disk queues), the block family follows the file's
    kata_runtime: str = "go"
    #: ``default_vcpus`` of a Cloud Hypervisor sandbox (Kata Go: one disk queue per vCPU)
    vcpus: int = 1

    @property
    def sector_sizes(self) -> dict[str, int]:
        """The QEMU block-device properties of the configured sector sizes (none for 0)."""
        sizes = {"logical_block_size": self.logical_sector_size,
                 "physical_block_size": self.physical_sector_size}
        return {key: value for key, value in sizes.items() if value}

    @property
    def direct(self) -> bool | None:
        """``cache.direct``: as configured, on for native AIO, else None (QEMU's default, off)."""
        if self.cache_set:
            return self.cache_direct
        return True if self.aio == AIO_NATIVE else None

    @property
    def no_flush(self) -> bool | None:
        return self.cache_noflush if self.cache_set else None


def block_settings(settings: SandboxSettings) -> BlockSettings:
    """The block options of ``settings`` (prepared: the core parsed the declared keys)."""
    aio = settings.value(KEY_AIO)
    return BlockSettings(
        driver=settings.value(KEY_DRIVER) or DEFAULT_DRIVERS.get(settings.hypervisor, DEFAULT_DRIVER),
        aio=aio or DEFAULT_AIO,
        aio_explicit=bool(aio),
        disabled=settings.value(KEY_DISABLE),
        cache_set=settings.value(KEY_CACHE_SET),
        cache_direct=settings.value(KEY_CACHE_DIRECT),
        cache_noflush=settings.value(KEY_CACHE_NOFLUSH),
        logical_sector_size=settings.value(KEY_LOGICAL_SECTOR),
        physical_sector_size=settings.value(KEY_PHYSICAL_SECTOR),
        bw_rate=settings.value(KEY_BW_RATE),
        bw_burst=settings.value(KEY_BW_BURST) if settings.value(KEY_BW_RATE) else 0,
        ops_rate=settings.value(KEY_OPS_RATE),
        ops_burst=settings.value(KEY_OPS_BURST) if settings.value(KEY_OPS_RATE) else 0,
        num_queues=settings.value(KEY_NUM_QUEUES),
        queue_size=settings.value(KEY_QUEUE_SIZE),
        allow_host_mounted=settings.value(KEY_ALLOW_HOST_MOUNTED),
        iommu=bool(settings.value("enable_iommu", False)),
        kata_runtime=settings.kata_runtime,
        vcpus=int(settings.value("default_vcpus", 1) or 1),
    )
