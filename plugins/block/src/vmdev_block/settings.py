"""The sandbox settings the block plugin owns: Kata's ``configuration.toml`` keys, declared.

Each key is a :class:`vmdev.declared.Setting` (:data:`SETTINGS`, registered by the plugin's
``register_settings``): the core parses and checks it once, and the plugin reads the typed value
with ``settings.value(key)``. :func:`vmdev_block.options.block_settings` turns the values into
:class:`~vmdev_block.options.BlockSettings` (defaults applied); :func:`check_rules` holds the rules
across keys. This module defines no class and imports only the core's declarations: the plugin
imports it on every run to register the keys (issue 13, cold start).

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
``block_device_logical_sector_size``, ``block_device_physical_sector_size``
    0 (QEMU's default) or a power of 2 from 512 to 65536, logical not above physical (Kata's
    checks and texts): QEMU's ``logical_block_size``/``physical_block_size`` of every disk, cold
    and hot. Cloud Hypervisor and Firecracker have no such field (Kata passes them to QEMU only).
``enable_iothreads``, ``indep_iothreads``
    not declared here: the QEMU backend owns them and makes the ``-object iothread`` options
    (``QemuTarget.iothread``/``independent_iothread``); the SCSI controller and virtio-blk PCI
    disks ask it for theirs (:mod:`vmdev_block.render_qemu`).
``disk_rate_limiter_bw_max_rate``, ``disk_rate_limiter_bw_one_time_burst``,
``disk_rate_limiter_ops_max_rate``, ``disk_rate_limiter_ops_one_time_burst``
    Cloud Hypervisor's ``rate_limiter_config`` and Firecracker's ``rate_limiter`` of every disk
    (bandwidth in bits/s, Kata's unit, converted as Kata converts it; see :mod:`vmdev_block.limits`).
``num_queues``, ``queue_size``
    runtime-rs' virtio-blk queues of Cloud Hypervisor disks; 0: Cloud Hypervisor's defaults.
``allow_host_mounted_block_devices``
    vmdev's own: let a writable disk be one the host has mounted read-write (refused otherwise).

An unknown driver or AIO mode is refused with Kata's own text, so a message found in Kata's
documentation or issues means the same here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from vmdev.declared import BOOLEAN, INTEGER, STRING, Setting
from vmdev.errors import ConfigError
from vmdev.settings import CLOUD_HYPERVISOR, FIRECRACKER, QEMU, SandboxSettings
from vmdev_block.constants import (
    AIO_IO_URING,
    AIO_NATIVE,
    BLOCK_AIO_MODES,
    BLOCK_FILE_OPTION,
    DRIVER_ALIASES,
    SUPPORTED_DRIVERS,
    VIRTIO_BLOCK,
    VIRTIO_MMIO,
    VIRTIO_SCSI,
)

if TYPE_CHECKING:
    from vmdev.oci import OciMount

KEY_DRIVER: Final = "block_device_driver"
KEY_AIO: Final = "block_device_aio"
KEY_DISABLE: Final = "disable_block_device_use"
KEY_CACHE_SET: Final = "block_device_cache_set"
KEY_CACHE_DIRECT: Final = "block_device_cache_direct"
KEY_CACHE_NOFLUSH: Final = "block_device_cache_noflush"
KEY_LOGICAL_SECTOR: Final = "block_device_logical_sector_size"
KEY_PHYSICAL_SECTOR: Final = "block_device_physical_sector_size"
KEY_BW_RATE: Final = "disk_rate_limiter_bw_max_rate"
KEY_BW_BURST: Final = "disk_rate_limiter_bw_one_time_burst"
KEY_OPS_RATE: Final = "disk_rate_limiter_ops_max_rate"
KEY_OPS_BURST: Final = "disk_rate_limiter_ops_one_time_burst"
KEY_NUM_QUEUES: Final = "num_queues"
KEY_QUEUE_SIZE: Final = "queue_size"
KEY_ALLOW_HOST_MOUNTED: Final = "allow_host_mounted_block_devices"
#: the rate-limiter keys and the one-time burst each one's rate gates
RATE_KEYS: Final = ((KEY_BW_RATE, KEY_BW_BURST), (KEY_OPS_RATE, KEY_OPS_BURST))

#: Kata's sector sizes: 0, or a power of 2 in this range
SECTOR_SIZE_MIN: Final = 512
SECTOR_SIZE_MAX: Final = 65536
#: the largest rate or burst: the APIs' token buckets are int64 (Kata Go's keys are int64 too)
MAX_RATE: Final = 2**63 - 1
#: virtio-blk's num_queues is a 16-bit field
MAX_NUM_QUEUES: Final = 65535
#: the largest split virtqueue (virtio 1.x), which Cloud Hypervisor's disks use
MAX_QUEUE_SIZE: Final = 32768

DEFAULT_AIO: Final = AIO_IO_URING
#: the driver when ``block_device_driver`` is unset or empty, per hypervisor
DEFAULT_DRIVERS: Final = {QEMU: VIRTIO_SCSI, CLOUD_HYPERVISOR: VIRTIO_BLOCK, FIRECRACKER: VIRTIO_MMIO}
#: Kata's default block driver, for a backend this plugin has no own default for
DEFAULT_DRIVER: Final = VIRTIO_SCSI


def _check_driver(value: str) -> None:
    if value and value not in SUPPORTED_DRIVERS:
        raise ValueError(
            f"Invalid hypervisor block storage driver {value} specified "
            f"(supported drivers: [{' '.join(SUPPORTED_DRIVERS)}])"
        )


def _check_aio(value: str) -> None:
    if value and value not in BLOCK_AIO_MODES:
        raise ValueError(
            f"Invalid hypervisor block storage I/O mechanism {value} specified "
            f"(supported AIO: [{' '.join(BLOCK_AIO_MODES)}])"
        )


def _check_sector_size(name: str) -> Callable[[int], None]:
    def check(value: int) -> None:
        if value and (value < SECTOR_SIZE_MIN or value > SECTOR_SIZE_MAX or value & (value - 1)):
            raise ValueError(f"invalid {name} {value}: must be 0 or a power of 2 between "
                             f"{SECTOR_SIZE_MIN} and {SECTOR_SIZE_MAX}")

    return check


def _check_queue_size(value: int) -> None:
    if value & (value - 1):
        raise ValueError(f"must be 0 or a power of 2 up to {MAX_QUEUE_SIZE}, got {value}")


def _flag(name: str, description: str) -> Setting:
    return Setting(name=name, type=BOOLEAN, default=False, description=description, kata_key=name)


def _integer(name: str, description: str, maximum: int | None, **extra: Any) -> Setting:
    return Setting(name=name, type=INTEGER, default=0, description=description, kata_key=name,
                   minimum=0, maximum=maximum, **extra)


def _sector(name: str, which: str) -> Setting:
    return _integer(name, f"the {which} sector size, in bytes, QEMU reports for every disk "
                    f"({which}_block_size): 0 (QEMU's default) or a power of 2 from {SECTOR_SIZE_MIN} to "
                    f"{SECTOR_SIZE_MAX}", None, check=_check_sector_size(name))  # the check gives Kata's text


def _rate(name: str, what: str) -> Setting:
    return _integer(name, f"{what} of every Cloud Hypervisor and Firecracker disk; 0: no limit", MAX_RATE)


#: every key the block plugin reads, as it declares them
SETTINGS: Final = (
    Setting(
        name=KEY_DRIVER,
        type=STRING,
        default="",
        description=f"the block driver of disks: {', '.join(SUPPORTED_DRIVERS)} (runtime-rs' "
        f"{', '.join(DRIVER_ALIASES)} are accepted); empty: the hypervisor's own (QEMU virtio-scsi, "
        "Cloud Hypervisor virtio-blk, Firecracker virtio-mmio)",
        kata_key=KEY_DRIVER,
        aliases=DRIVER_ALIASES,
        check=_check_driver,
        flag="--block-driver",
        flag_help="Block driver for disks (virtio-scsi, virtio-blk, virtio-mmio, nvdimm, virtio-blk-ccw, "
        "virtio-pmem)",
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
    _sector(KEY_LOGICAL_SECTOR, "logical"),
    _sector(KEY_PHYSICAL_SECTOR, "physical"),
    _rate(KEY_BW_RATE, "the bandwidth limit in bits/s (Kata converts it to bytes/s in 1024 steps)"),
    _rate(KEY_BW_BURST, "the one-time bandwidth burst in bits, with disk_rate_limiter_bw_max_rate"),
    _rate(KEY_OPS_RATE, "the operations limit in operations/s"),
    _rate(KEY_OPS_BURST, "the one-time burst in operations, with disk_rate_limiter_ops_max_rate"),
    _integer(KEY_NUM_QUEUES, "virtio-blk queues of every Cloud Hypervisor disk; 0: Cloud Hypervisor's "
             "default (1)", MAX_NUM_QUEUES),
    _integer(KEY_QUEUE_SIZE, "virtqueue size of every Cloud Hypervisor disk, a power of 2; 0: Cloud "
             "Hypervisor's default (128)", MAX_QUEUE_SIZE, check=_check_queue_size),
    Setting(name=KEY_ALLOW_HOST_MOUNTED, type=BOOLEAN, default=False, kata_key="",
            description="let a writable disk be a block device the host has mounted read-write "
            "(/proc/self/mountinfo); refused otherwise, since two kernels writing one file system "
            "corrupt it"),
)


def check_rules(settings: SandboxSettings) -> None:
    """The rules across keys, each a ConfigError naming a key: native AIO needs
    ``cache.direct=on``; the logical sector size must not exceed the physical one (Kata's text).
    A one-time burst without its rate is ignored with a warning, as Kata does."""
    # cache.direct is off only when the cache keys apply and say so (BlockSettings.direct)
    direct_off = settings.value(KEY_CACHE_SET) and not settings.value(KEY_CACHE_DIRECT)
    if direct_off and settings.value(KEY_AIO) == AIO_NATIVE:
        raise ConfigError(
            "native AIO needs cache.direct=on, but block_device_cache_set is true and "
            "block_device_cache_direct is false (set block_device_cache_direct = true, or use "
            "io_uring or threads)",
            field=KEY_AIO,
        )
    logical, physical = settings.value(KEY_LOGICAL_SECTOR), settings.value(KEY_PHYSICAL_SECTOR)
    if logical and physical and logical > physical:
        raise ConfigError(
            f"invalid sector sizes: logical ({logical}) must not be larger than physical ({physical})",
            field=KEY_LOGICAL_SECTOR,
        )
    for rate, burst in RATE_KEYS:
        if settings.value(burst) and not settings.value(rate):
            import logging  # only to warn: every plan imports this module

            logging.getLogger("vmdev.block").warning(
                "%s is set but %s is not: the burst is ignored (as Kata does)", burst, rate
            )


# --- which mounts may be disks (the plugin asks before importing vmdev_block.mounts) -------------
def is_block_file_mount(mount: OciMount) -> bool:
    return any(opt == BLOCK_FILE_OPTION or opt.startswith(BLOCK_FILE_OPTION + "=") for opt in mount.options)


def may_be_a_disk(mount: OciMount, settings: SandboxSettings) -> bool:
    """Whether ``mount`` is looked at all: a bind mount or a block-file mount with a source, and
    mounts not disabled. Asks nothing of the host."""
    if settings.value(KEY_DISABLE) or not mount.source:
        return False
    return mount.type == "bind" or is_block_file_mount(mount)
