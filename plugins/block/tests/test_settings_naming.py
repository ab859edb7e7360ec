"""Settings validation (Kata's keys and texts), drive names and SCSI addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import ConfigError, DeviceError
from vmdev.settings import SandboxSettings, load_settings
from vmdev_block.config import block_settings
from vmdev_block.naming import scsi_address, scsi_id_lun, virt_drive_name


def test_the_plugin_is_found_through_its_entry_point(vmdev_plugins: Any) -> None:
    info = {i.name: i for i in vmdev_plugins("vmdev-block").list_plugins()}["block"]
    assert info.distribution == "vmdev-block"
    assert info.hooks == (
        "attach_options", "build_device", "check_settings", "device_from_mount", "resolve_host_path",
    )


@pytest.mark.parametrize(
    ("hypervisor", "driver"),
    [("qemu", "virtio-scsi"), ("cloud-hypervisor", "virtio-blk"), ("firecracker", "virtio-mmio")],
)
def test_default_driver_per_hypervisor(hypervisor: str, driver: str) -> None:
    assert block_settings(SandboxSettings(hypervisor=hypervisor)).driver == driver
    assert block_settings(SandboxSettings(hypervisor=hypervisor, options={"block_device_driver": ""})).driver == driver


def test_defaults() -> None:
    config = block_settings(SandboxSettings())
    assert (config.aio, config.aio_explicit, config.disabled, config.direct, config.no_flush) == (
        "io_uring", False, False, None, None)


def test_unknown_driver_uses_katas_text() -> None:
    with pytest.raises(ConfigError) as exc:
        block_settings(SandboxSettings(options={"block_device_driver": "ide"}))
    assert str(exc.value) == (
        "block_device_driver: Invalid hypervisor block storage driver ide specified "
        "(supported drivers: [virtio-scsi virtio-blk virtio-mmio nvdimm virtio-blk-ccw])"
    )


def test_unknown_aio_uses_katas_text() -> None:
    with pytest.raises(ConfigError) as exc:
        block_settings(SandboxSettings(options={"block_device_aio": "posix"}))
    assert str(exc.value) == (
        "block_device_aio: Invalid hypervisor block storage I/O mechanism posix specified "
        "(supported AIO: [io_uring native threads])"
    )


@pytest.mark.parametrize(
    "key", ["disable_block_device_use", "block_device_cache_set", "block_device_cache_direct",
            "block_device_cache_noflush"],
)
def test_boolean_keys_must_be_booleans(key: str) -> None:
    with pytest.raises(ConfigError, match=r"must be true or false") as exc:
        block_settings(SandboxSettings(options={key: "yes"}))
    assert exc.value.field == key


def test_native_aio_turns_direct_io_on() -> None:
    config = block_settings(SandboxSettings(options={"block_device_aio": "native"}))
    assert (config.direct, config.no_flush, config.aio_explicit) == (True, None, True)


def test_native_aio_with_direct_io_off_is_refused() -> None:
    options = {"block_device_aio": "native", "block_device_cache_set": True, "block_device_cache_direct": False}
    with pytest.raises(ConfigError, match=r"native AIO needs cache.direct=on") as exc:
        block_settings(SandboxSettings(options=options))
    assert exc.value.field == "block_device_aio"


def test_cache_keys_only_count_when_cache_set() -> None:
    loose = {"block_device_cache_direct": True, "block_device_cache_noflush": True}
    assert block_settings(SandboxSettings(options=loose)).direct is None
    config = block_settings(SandboxSettings(options={**loose, "block_device_cache_set": True}))
    assert (config.direct, config.no_flush) == (True, True)


def test_kata_configuration_file(tmp_path: Path) -> None:
    toml = tmp_path / "configuration.toml"
    toml.write_text(
        '[hypervisor.qemu]\nblock_device_driver = "virtio-blk"\nblock_device_aio = "threads"\n'
        "block_device_cache_set = true\nblock_device_cache_direct = true\nblock_device_cache_noflush = false\n"
        "disable_block_device_use = true\n"
    )
    config = block_settings(load_settings(toml))
    assert (config.driver, config.aio, config.direct, config.no_flush, config.disabled) == (
        "virtio-blk", "threads", True, False, True)


@pytest.mark.parametrize(
    ("index", "name"),
    [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa"), (27, "vdab"), (51, "vdaz"), (52, "vdba"),
     (701, "vdzz"), (702, "vdaaa"), (704, "vdaac"), (18277, "vdzzz"), (18278, "vdaaaa")],
)
def test_virt_drive_names_match_kata(index: int, name: str) -> None:
    assert virt_drive_name(index) == name


def test_virt_drive_name_limits() -> None:
    with pytest.raises(DeviceError, match=r"Index cannot be negative for drive"):
        virt_drive_name(-1)
    limit = sum(26**k for k in range(1, 31))  # the first index that needs 31 letters
    assert len(virt_drive_name(limit - 1)) == 32
    with pytest.raises(DeviceError, match=r"Index not supported"):
        virt_drive_name(limit)


@pytest.mark.parametrize(
    ("index", "address"),
    [(0, "0:0"), (200, "0:200"), (255, "0:255"), (256, "1:0"), (258, "1:2"), (512, "2:0"), (513, "2:1"),
     (65535, "255:255")],
)
def test_scsi_addresses_match_kata(index: int, address: str) -> None:
    assert scsi_address(index) == address


def test_scsi_address_limits() -> None:
    with pytest.raises(DeviceError, match=r"Index cannot be negative"):
        scsi_id_lun(-1)
    with pytest.raises(DeviceError, match=r"Index cannot be greater than 65535"):
        scsi_id_lun(65536)
