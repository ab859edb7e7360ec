"""The sandbox settings the block plugin owns: Kata's ``configuration.toml`` keys, declared.

Each key is a :class:`vmdev.declared.Setting` (:data:`SETTINGS`, registered by the plugin's
``register_settings``): the core parses and checks it once, and the plugin reads the typed value
with ``settings.value(key)``. :func:`block_settings` turns the values into :class:`BlockSettings`
(defaults applied); :func:`check_rules` holds the one rule across keys.

``block_device_driver``
    ``virtio-scsi`` | ``virtio-blk`` | ``virtio-mmio`` | ``nvdimm`` | ``virtio-blk-ccw`` (runtime-rs'
    ``virtio-blk-pci`` and ``virtio-blk-mmio`` are accepted for ``virtio-blk`` and ``virtio-mmio``).
    Unset or ``""``: the hypervisor's own driver (QEMU ``virtio-scsi`` as Kata, Cloud Hypervisor
    ``virtio-blk``, Firecracker ``virtio-mmio``: the values of Kata's per-hypervisor
    configuration files; Kata's ``virtio-scsi`` for any other backend). Flag ``--block-driver``.
``block_device_aio``
    ``io_uring`` (default, as Kata) | ``native`` | ``threads``; used on cold plug too (Kata
    forces ``threads`` there). ``native`` needs ``cache.direct=on``, which is set for it.
``block_device_cache_set``, ``block_device_cache_direct``, ``block_device_cache_noflush``
    when ``cache_set`` is true, ``cache.direct`` and ``cache.no-flush`` are rendered as given.
``disable_block_device_use``
    mounts are never turned into block devices (OCI ``type b`` devices still are, as in Kata).

An unknown driver or AIO mode is refused with Kata's own text, so a message found in Kata's
documentation or issues means the same here.
"""

from __future__ import annotations

from typing import Final

import attrs

from vmdev.declared import BOOLEAN, STRING, Setting
from vmdev.errors import ConfigError
from vmdev.settings import CLOUD_HYPERVISOR, FIRECRACKER, QEMU, SandboxSettings
from vmdev_block.constants import (
    AIO_IO_URING,
    AIO_NATIVE,
    BLOCK_AIO_MODES,
    BLOCK_DRIVERS,
    DRIVER_ALIASES,
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
#: Kata's default block driver, for a backend this plugin has no own default for
DEFAULT_DRIVER: Final = VIRTIO_SCSI


def _check_driver(value: str) -> None:
    if value and value not in BLOCK_DRIVERS:
        raise ValueError(
            f"Invalid hypervisor block storage driver {value} specified "
            f"(supported drivers: [{' '.join(BLOCK_DRIVERS)}])"
        )


def _check_aio(value: str) -> None:
    if value and value not in BLOCK_AIO_MODES:
        raise ValueError(
            f"Invalid hypervisor block storage I/O mechanism {value} specified "
            f"(supported AIO: [{' '.join(BLOCK_AIO_MODES)}])"
        )


def _flag(name: str, description: str) -> Setting:
    return Setting(name=name, type=BOOLEAN, default=False, description=description, kata_key=name)


#: every key the block plugin reads, as it declares them
SETTINGS: Final = (
    Setting(
        name=KEY_DRIVER,
        type=STRING,
        default="",
        description=f"the block driver of disks: {', '.join(BLOCK_DRIVERS)} (runtime-rs' "
        f"{', '.join(DRIVER_ALIASES)} are accepted); empty: the hypervisor's own (QEMU virtio-scsi, "
        "Cloud Hypervisor virtio-blk, Firecracker virtio-mmio)",
        kata_key=KEY_DRIVER,
        aliases=DRIVER_ALIASES,
        check=_check_driver,
        flag="--block-driver",
        flag_help="Block driver for disks (virtio-scsi, virtio-blk, virtio-mmio, nvdimm, virtio-blk-ccw)",
    ),
    Setting(
        name=KEY_AIO,
        type=STRING,
        default="",
        description=f"the AIO mode of disks: {', '.join(BLOCK_AIO_MODES)}; empty: io_uring "
        "(Firecracker then leaves io_engine unset)",
        kata_key=KEY_AIO,
        check=_check_aio,
    ),
    _flag(KEY_CACHE_SET, "apply block_device_cache_direct and block_device_cache_noflush (QEMU "
          "cache.direct and cache.no-flush, Cloud Hypervisor direct, Firecracker cache_type); else the "
          "hypervisor's defaults"),
    _flag(KEY_CACHE_DIRECT, "with block_device_cache_set: open disks with O_DIRECT (cache.direct)"),
    _flag(KEY_CACHE_NOFLUSH, "with block_device_cache_set: ignore the guest's flushes (cache.no-flush)"),
    _flag(KEY_DISABLE, "never turn mounts into block devices (OCI block devices still are)"),
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
    )


def check_rules(settings: SandboxSettings) -> None:
    """The rule across keys: native AIO needs ``cache.direct=on``; ConfigError naming the AIO key."""
    if block_settings(settings).direct is False and settings.value(KEY_AIO) == AIO_NATIVE:
        raise ConfigError(
            "native AIO needs cache.direct=on, but block_device_cache_set is true and "
            "block_device_cache_direct is false (set block_device_cache_direct = true, or use "
            "io_uring or threads)",
            field=KEY_AIO,
        )
