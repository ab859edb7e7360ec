"""Settings validation (Kata's keys and texts), drive names and SCSI addresses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import ConfigError, DeviceError
from vmdev.settings import load_settings
from vmdev_block.naming import scsi_address, scsi_id_lun, virt_drive_name
from vmdev_block.options import block_settings

KEYS = ("block_device_driver", "block_device_aio", "block_device_cache_set", "block_device_cache_direct",
        "block_device_cache_noflush", "disable_block_device_use")
#: the keys issue 10 added: Kata's (Go runtime and runtime-rs), and vmdev's own last (enable_iothreads and
#: indep_iothreads are the QEMU backend's: it makes the iothreads)
NEW_KEYS = {
    "block_device_logical_sector_size": "integer", "block_device_physical_sector_size": "integer",
    "disk_rate_limiter_bw_max_rate": "integer", "disk_rate_limiter_bw_one_time_burst": "integer",
    "disk_rate_limiter_ops_max_rate": "integer", "disk_rate_limiter_ops_one_time_burst": "integer",
    "num_queues": "integer", "queue_size": "integer",
}
OWN_KEYS = {"allow_host_mounted_block_devices": "boolean"}
SUPPORTED = "virtio-scsi virtio-blk virtio-mmio nvdimm virtio-blk-ccw virtio-pmem"


def test_the_plugin_is_found_through_its_entry_point(vmdev_plugins: Any) -> None:
    info = {i.name: i for i in vmdev_plugins("vmdev-block").list_plugins()}["block"]
    assert info.distribution == "vmdev-block"
    assert info.hooks == (
        "attach_options", "build_device", "check_settings", "device_from_mount", "device_from_state",
        "host_facts", "register_settings", "resolve_host_path",
    )


def test_every_key_the_plugin_reads_is_declared_as_katas(vmdev_plugins: Any) -> None:
    declared = {d.setting.name: d for d in vmdev_plugins("vmdev-block").declared_settings() if d.plugin == "block"}
    assert sorted(declared) == sorted([*KEYS, *NEW_KEYS, *OWN_KEYS])
    for name, entry in declared.items():
        setting = entry.setting
        assert (setting.kata_key, setting.section) == ("" if name in OWN_KEYS else name, "hypervisor")
        assert setting.description
        assert setting.type == {**NEW_KEYS, **OWN_KEYS}.get(name, setting.type)
        if setting.type == "integer":
            assert (setting.default, setting.minimum) == (0, 0), name
    driver = declared["block_device_driver"].setting
    assert (driver.type, driver.default, driver.flag) == ("string", "", "--block-driver")
    assert [declared[k].setting.type for k in KEYS[2:]] == ["boolean"] * 4


@pytest.mark.parametrize(
    ("hypervisor", "driver"),
    [("qemu", "virtio-scsi"), ("cloud-hypervisor", "virtio-blk"), ("firecracker", "virtio-mmio")],
)
def test_default_driver_per_hypervisor(prepared: Any, hypervisor: str, driver: str) -> None:
    assert block_settings(prepared(hypervisor=hypervisor)).driver == driver
    assert block_settings(prepared(hypervisor=hypervisor, options={"block_device_driver": ""})).driver == driver


def test_defaults(prepared: Any) -> None:
    config = block_settings(prepared())
    assert (config.aio, config.aio_explicit, config.disabled, config.direct, config.no_flush) == (
        "io_uring", False, False, None, None)


def test_unknown_driver_uses_katas_text(prepared: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        prepared(options={"block_device_driver": "ide"})
    assert str(exc.value) == (
        f"block_device_driver: Invalid hypervisor block storage driver ide specified (supported drivers: [{SUPPORTED}])"
    )


@pytest.mark.parametrize(("name", "driver"), [("virtio-blk-pci", "virtio-blk"), ("virtio-blk-mmio", "virtio-mmio")])
def test_runtime_rs_driver_names_are_aliases(prepared: Any, name: str, driver: str) -> None:
    settings = prepared(options={"block_device_driver": name})
    assert (settings.value("block_device_driver"), block_settings(settings).driver) == (driver, driver)


def test_a_driver_that_is_not_a_string_is_one_line_naming_the_key(prepared: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        prepared(options={"block_device_driver": 3})
    assert str(exc.value) == "block_device_driver: must be a string, got 3"


def test_unknown_aio_uses_katas_text(prepared: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        prepared(options={"block_device_aio": "posix"})
    assert str(exc.value) == (
        "block_device_aio: Invalid hypervisor block storage I/O mechanism posix specified "
        "(supported AIO: [io_uring native threads])"
    )


@pytest.mark.parametrize("key", KEYS[2:])
def test_boolean_keys_must_be_booleans(prepared: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=r"must be true or false, got 'yes'") as exc:
        prepared(options={key: "yes"})
    assert exc.value.field == key


def test_native_aio_turns_direct_io_on(prepared: Any) -> None:
    config = block_settings(prepared(options={"block_device_aio": "native"}))
    assert (config.direct, config.no_flush, config.aio_explicit) == (True, None, True)


def test_native_aio_with_direct_io_off_is_refused(prepared: Any) -> None:
    options = {"block_device_aio": "native", "block_device_cache_set": True, "block_device_cache_direct": False}
    with pytest.raises(ConfigError, match=r"native AIO needs cache.direct=on") as exc:
        prepared(options=options)
    assert exc.value.field == "block_device_aio"
    assert block_settings(prepared(options={**options, "block_device_aio": "threads"})).direct is False


def test_cache_keys_only_count_when_cache_set(prepared: Any) -> None:
    loose = {"block_device_cache_direct": True, "block_device_cache_noflush": True}
    assert block_settings(prepared(options=loose)).direct is None
    config = block_settings(prepared(options={**loose, "block_device_cache_set": True}))
    assert (config.direct, config.no_flush) == (True, True)


def test_kata_configuration_file(tmp_path: Path, vmdev_plugins: Any) -> None:
    toml = tmp_path / "configuration.toml"
    toml.write_text(
        '[hypervisor.qemu]\nblock_device_driver = "virtio-blk"\nblock_device_aio = "threads"\n'
        "block_device_cache_set = true\nblock_device_cache_direct = true\nblock_device_cache_noflush = false\n"
        "disable_block_device_use = true\n"
    )
    pm = vmdev_plugins("vmdev-block")
    config = block_settings(pm.prepare_settings(load_settings(toml, plugins=pm)))
    assert (config.driver, config.aio, config.direct, config.no_flush, config.disabled) == (
        "virtio-blk", "threads", True, False, True)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VMDEV_PLUGINS": "vmdev-block"}
    return subprocess.run([sys.executable, "-m", "vmdev", *args], capture_output=True, text=True, env=env,
                          check=False)


def test_the_block_driver_flag_sets_the_key_and_takes_aliases(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    mount = {"destination": "/disk", "source": str(image), "type": "bind",
             "options": ["io.katacontainers.fs-opt.block_device=file"]}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"mounts": [mount]}))
    done = _cli("plan", "--block-driver", "virtio-blk-pci", str(config))
    assert done.returncode == 0, done.stderr
    (device,) = json.loads(done.stdout)["devices"]
    assert (device["driver"], device["drive"]["virt_path"]) == ("virtio-blk", "/dev/vda")
    bad = _cli("plan", "--block-driver", "ide", str(config))
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == ("vmdev: error: block_device_driver: Invalid hypervisor block storage driver ide "
                          f"specified (supported drivers: [{SUPPORTED}])\n")


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


def test_every_shipped_kata_configuration_gives_a_block_driver(prepared: Any) -> None:
    """Kata 4.1.0's configuration files as its Makefiles render them (Go runtime and runtime-rs):
    every hypervisor section's block keys parse, and runtime-rs' driver names mean ours."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    corpus = Path(__file__).resolve().parent.parent.parent.parent / "tests" / "realworld" / "kata"
    files = sorted(corpus.glob("*/*/configuration*.toml"))
    assert len(files) >= 40, f"the repository's Kata corpus is not at {corpus}"
    seen: dict[str, str] = {}
    for path in files:
        for section in tomllib.loads(path.read_text())["hypervisor"].values():
            config = block_settings(prepared(options=section))
            given = section.get("block_device_driver", "")
            seen[given] = config.driver
            assert config.aio == "io_uring", path.name
    assert seen == {"": "virtio-scsi", "virtio-scsi": "virtio-scsi", "virtio-blk": "virtio-blk",
                    "virtio-blk-pci": "virtio-blk", "virtio-blk-mmio": "virtio-mmio",
                    "virtio-mmio": "virtio-mmio", "virtio-blk-ccw": "virtio-blk-ccw"}
