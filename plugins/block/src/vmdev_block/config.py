"""The sandbox settings the block plugin owns: Kata's ``configuration.toml`` keys, validated.

``block_device_driver``
    ``virtio-scsi`` | ``virtio-blk`` | ``virtio-mmio`` | ``nvdimm`` | ``virtio-blk-ccw``. Unset or
    ``""``: the hypervisor's own driver (QEMU ``virtio-scsi`` as Kata, Cloud Hypervisor
    ``virtio-blk``, Firecracker ``virtio-mmio``, which are the values of Kata's per-hypervisor
    configuration files).
``block_device_aio``
    ``io_uring`` (default, as Kata) | ``native`` | ``threads``; used on cold plug too (Kata
    forces ``threads`` there). ``native`` needs ``cache.direct=on``, which is set for it.
``block_device_cache_set``, ``block_device_cache_direct``, ``block_device_cache_noflush``
    when ``cache_set`` is true, ``cache.direct`` and ``cache.no-flush`` are rendered as given.
``disable_block_device_use``
    mounts are never turned into block devices (OCI ``type b`` devices still are, as in Kata).
"""

from __future__ import annotations

from typing import Final

import attrs

from vmdev.errors import ConfigError
from vmdev.settings import CLOUD_HYPERVISOR, FIRECRACKER, QEMU, SandboxSettings
from vmdev_block.constants import (
    AIO_IO_URING,
    AIO_NATIVE,
    BLOCK_AIO_MODES,
    BLOCK_DRIVERS,
    VIRTIO_BLOCK,
    VIRTIO_MMIO,
    VIRTIO_SCSI,
)

KEY_DRIVER: Final = "block_device_driver"
KEY_AIO: Final = "block_device_aio"
KEY_DISABLE: Final = "disable_block_device_use"
KEY_CACHE_SET: Final = "block_device_cache_set"
KEY_CACHE_DIRECT: Final = "block_device_cache_direct"
KEY_CACHE_NOFLUSH: Final = "block_device_cache_noflush"

DEFAULT_AIO: Final = AIO_IO_URING
#: the driver when ``block_device_driver`` is unset or empty, per hypervisor
DEFAULT_DRIVERS: Final = {QEMU: VIRTIO_SCSI, CLOUD_HYPERVISOR: VIRTIO_BLOCK, FIRECRACKER: VIRTIO_MMIO}


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

    @property
    def direct(self) -> bool | None:
        """``cache.direct``: as configured, on for native AIO, else None (QEMU's default, off)."""
        if self.cache_set:
            return self.cache_direct
        return True if self.aio == AIO_NATIVE else None

    @property
    def no_flush(self) -> bool | None:
        return self.cache_noflush if self.cache_set else None


def _bool(settings: SandboxSettings, key: str) -> bool:
    value = settings.option(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", field=key)
    return value


def _driver(settings: SandboxSettings) -> str:
    value = settings.option(KEY_DRIVER, "")
    if value in ("", None):
        return DEFAULT_DRIVERS[settings.hypervisor]
    if value not in BLOCK_DRIVERS:
        raise ConfigError(
            f"Invalid hypervisor block storage driver {value} specified "
            f"(supported drivers: [{' '.join(BLOCK_DRIVERS)}])",
            field=KEY_DRIVER,
        )
    return str(value)


def _aio(settings: SandboxSettings) -> str:
    value = settings.option(KEY_AIO, "")
    if value in ("", None):
        return DEFAULT_AIO
    if value not in BLOCK_AIO_MODES:
        raise ConfigError(
            f"Invalid hypervisor block storage I/O mechanism {value} specified "
            f"(supported AIO: [{' '.join(BLOCK_AIO_MODES)}])",
            field=KEY_AIO,
        )
    return str(value)


def block_settings(settings: SandboxSettings) -> BlockSettings:
    """The block options of ``settings``; :class:`ConfigError` naming the key of a bad value."""
    result = BlockSettings(
        driver=_driver(settings),
        aio=_aio(settings),
        aio_explicit=settings.option(KEY_AIO, "") not in ("", None),
        disabled=_bool(settings, KEY_DISABLE),
        cache_set=_bool(settings, KEY_CACHE_SET),
        cache_direct=_bool(settings, KEY_CACHE_DIRECT),
        cache_noflush=_bool(settings, KEY_CACHE_NOFLUSH),
    )
    if result.aio == AIO_NATIVE and result.direct is False:
        raise ConfigError(
            "native AIO needs cache.direct=on, but block_device_cache_set is true and "
            "block_device_cache_direct is false (set block_device_cache_direct = true, or use "
            "io_uring or threads)",
            field=KEY_AIO,
        )
    return result
