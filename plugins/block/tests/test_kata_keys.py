"""Kata's block keys beyond the driver (issue 10): sector sizes and I/O threads on QEMU, their
checks in Kata's words, and what the other backends say about keys they cannot honour."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import ConfigError
from vmdev.qemu import split_opts
from vmdev_block.options import block_settings

SIZES = {"block_device_logical_sector_size": 512, "block_device_physical_sector_size": 4096}
THREADS = {"enable_iothreads": True, "indep_iothreads": 2}


def values(argv: tuple[str, ...], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def device_opts(argv: tuple[str, ...], head: str) -> list[list[str]]:
    return [split_opts(v) for v in values(argv, "-device") if v.startswith(head + ",")]


@pytest.fixture
def disks(host: Any) -> Any:
    host.disk(8, 16, "sdb")
    host.disk(8, 32, "sdc")
    return host.spec([host.device("/dev/xvdb", 8, 16), host.device("/dev/xvdc", 8, 32)])


# --- the keys, as Kata checks them ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 512, 1024, 4096, 65536])
def test_sector_sizes_kata_accepts(prepared: Any, size: int) -> None:
    config = block_settings(prepared(options={"block_device_logical_sector_size": size,
                                              "block_device_physical_sector_size": size}))
    assert (config.logical_sector_size, config.physical_sector_size) == (size, size)


@pytest.mark.parametrize("size", [256, 1000, 131072, 4097])
def test_a_sector_size_kata_refuses_is_its_own_text(prepared: Any, size: int) -> None:
    for key in SIZES:
        with pytest.raises(ConfigError) as exc:
            prepared(options={key: size})
        assert str(exc.value) == f"{key}: invalid {key} {size}: must be 0 or a power of 2 between 512 and 65536"


def test_a_negative_sector_size_is_refused(prepared: Any) -> None:
    with pytest.raises(ConfigError, match=r"block_device_logical_sector_size: must be a number from 0"):
        prepared(options={"block_device_logical_sector_size": -512})


def test_logical_larger_than_physical_is_katas_error(prepared: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        prepared(options={"block_device_logical_sector_size": 4096, "block_device_physical_sector_size": 512})
    assert str(exc.value) == ("block_device_logical_sector_size: invalid sector sizes: logical (4096) must not be "
                              "larger than physical (512)")
    only_logical = block_settings(prepared(options={"block_device_logical_sector_size": 4096}))
    assert only_logical.sector_sizes == {"logical_block_size": 4096}  # the other stays QEMU's


@pytest.mark.parametrize(("key", "value", "message"), [
    ("indep_iothreads", -1, "must be a number from 0 to 1024, got -1"),
    ("indep_iothreads", 1025, "must be a number from 0 to 1024, got 1025"),
    ("enable_iothreads", 1, "must be true or false, got 1"),
    ("queue_size", 100, "must be 0 or a power of 2 up to 32768, got 100"),
    ("queue_size", 65536, "must be a number from 0 to 32768, got 65536"),
    ("num_queues", 65536, "must be a number from 0 to 65535, got 65536"),
    ("disk_rate_limiter_bw_max_rate", -1, "must be a number from 0 to 9223372036854775807, got -1"),
    ("disk_rate_limiter_ops_one_time_burst", 2**63, "must be a number from 0 to 9223372036854775807"),
    ("allow_host_mounted_block_devices", "yes", "must be true or false, got 'yes'"),
])
def test_a_wrong_value_is_one_line_naming_the_key(prepared: Any, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        prepared(options={key: value})
    assert exc.value.field == key and message in str(exc.value) and "\n" not in str(exc.value)


def test_a_burst_without_its_rate_is_ignored_with_a_warning(prepared: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vmdev.block"):
        config = block_settings(prepared(options={"disk_rate_limiter_bw_one_time_burst": 8000,
                                                  "disk_rate_limiter_ops_one_time_burst": 10}))
    assert (config.bw_burst, config.ops_burst) == (0, 0)
    assert "disk_rate_limiter_bw_one_time_burst is set but disk_rate_limiter_bw_max_rate is not" in caplog.text
    assert "disk_rate_limiter_ops_one_time_burst is set but disk_rate_limiter_ops_max_rate is not" in caplog.text


def test_every_shipped_kata_configuration_sets_the_new_keys_to_values_we_take(prepared: Any) -> None:
    """Kata 4.1.0's files (Go runtime and runtime-rs) carry the new keys: all parse, none asks for
    something this plugin would refuse or change a plan for."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    corpus = Path(__file__).resolve().parents[3] / "tests" / "realworld" / "kata"
    seen: dict[str, set[Any]] = {}
    for path in sorted(corpus.glob("*/*/configuration*.toml")):
        for section in tomllib.loads(path.read_text())["hypervisor"].values():
            block_settings(prepared(options=section))
            for key in ("block_device_logical_sector_size", "enable_iothreads", "indep_iothreads",
                        "disk_rate_limiter_bw_max_rate", "num_queues", "queue_size"):
                if key in section:
                    seen.setdefault(key, set()).add(section[key])
    assert seen == {"block_device_logical_sector_size": {0}, "enable_iothreads": {False}, "indep_iothreads": {0},
                    "disk_rate_limiter_bw_max_rate": {0}, "num_queues": {1}, "queue_size": {128}}


# --- sector sizes on QEMU ------------------------------------------------------------------------


@pytest.mark.parametrize(("driver", "head"), [("virtio-blk", "virtio-blk-pci"), ("virtio-scsi", "scsi-hd")])
def test_sector_sizes_reach_every_cold_plugged_disk(run: Any, disks: Any, driver: str, head: str) -> None:
    argv = run(disks, options={"block_device_driver": driver, **SIZES}).qemu.argv
    found = device_opts(argv, head)
    assert len(found) == 2
    assert all(parts[-2:] == ["logical_block_size=512", "physical_block_size=4096"] for parts in found)


@pytest.mark.parametrize(("machine", "driver", "head"), [
    ("microvm", "virtio-mmio", "virtio-blk-device"), ("s390-ccw-virtio", "virtio-blk-ccw", "virtio-blk-ccw")])
def test_sector_sizes_on_the_other_transports(run: Any, disks: Any, machine: str, driver: str, head: str) -> None:
    argv = run(disks, machine_type=machine, options={"block_device_driver": driver, **SIZES}).qemu.argv
    assert all("logical_block_size=512" in parts for parts in device_opts(argv, head))


@pytest.mark.parametrize("driver", ["virtio-blk", "virtio-scsi", "virtio-blk-ccw"])
def test_sector_sizes_reach_the_hot_plug_device_add(run: Any, disks: Any, driver: str) -> None:
    machine = "s390-ccw-virtio" if driver == "virtio-blk-ccw" else "q35"
    result = run(disks, hotplug=True, machine_type=machine, options={"block_device_driver": driver, **SIZES})
    adds = [c.arguments for c in result.qemu.hotplug if c.execute == "device_add"]
    assert len(adds) == 2
    assert all((a["logical_block_size"], a["physical_block_size"]) == (512, 4096) for a in adds)


def test_no_sector_size_property_without_the_keys(run: Any, disks: Any) -> None:
    result = run(disks, hotplug=True, options={"block_device_driver": "virtio-blk"})
    assert not any("block_size" in key for c in result.qemu.hotplug for key in c.arguments)


# --- I/O threads on QEMU (the backend owns the keys and writes the objects) ----------------------


def test_the_scsi_controller_runs_on_its_own_iothread(run: Any, disks: Any) -> None:
    argv = run(disks, options={"enable_iothreads": True}).qemu.argv
    (controller,) = device_opts(argv, "virtio-scsi-pci")
    thread = controller[-1].removeprefix("iothread=")
    assert controller[:2] == ["virtio-scsi-pci", "id=scsi0"] and thread.startswith("iothread-")
    assert len(thread) == len("iothread-") + 16  # Kata's iothread-<16 hex digits>
    assert values(argv, "-object") == [f"iothread,id={thread}"]  # once, for both disks
    assert argv.index(f"iothread,id={thread}") < argv.index(",".join(controller))
    assert not any(p.startswith("iothread=") for parts in device_opts(argv, "scsi-hd") for p in parts)


def test_without_enable_iothreads_no_device_runs_on_one(run: Any, disks: Any) -> None:
    """Kata makes the independent threads whatever enable_iothreads says, but gives none away."""
    cases: list[tuple[dict[str, Any], int]] = [
        ({}, 0), ({"indep_iothreads": 3}, 3), ({"block_device_driver": "virtio-blk", "indep_iothreads": 3}, 3)]
    for options, count in cases:
        argv = run(disks, options=options).qemu.argv
        assert not any("iothread=" in v for v in values(argv, "-device")), options
        made = [v for v in values(argv, "-object") if v.startswith("iothread")]
        assert made == [f"iothread,id=indep_iothread_{i}" for i in range(count)]


def test_virtio_blk_disks_run_on_indep_iothread_0(run: Any, disks: Any) -> None:
    argv = run(disks, options={"block_device_driver": "virtio-blk", **THREADS}).qemu.argv
    assert values(argv, "-object") == ["iothread,id=indep_iothread_0", "iothread,id=indep_iothread_1"]
    assert all(parts[-1] == "iothread=indep_iothread_0" for parts in device_opts(argv, "virtio-blk-pci"))


def test_enable_iothreads_alone_gives_virtio_blk_no_thread(run: Any, disks: Any) -> None:
    """Kata: virtio-blk takes indep_iothread_0 only when indep_iothreads > 0 too."""
    argv = run(disks, options={"block_device_driver": "virtio-blk", "enable_iothreads": True}).qemu.argv
    assert values(argv, "-object") == []
    assert not any("iothread=" in v for v in values(argv, "-device"))


def test_a_hot_plugged_virtio_blk_names_its_iothread_and_the_boot_line_has_it(run: Any, disks: Any) -> None:
    result = run(disks, hotplug=True, options={"block_device_driver": "virtio-blk", **THREADS})
    adds = [c.arguments for c in result.qemu.hotplug if c.execute == "device_add"]
    assert [a["iothread"] for a in adds] == ["indep_iothread_0", "indep_iothread_0"]
    assert values(result.qemu.argv, "-object") == ["iothread,id=indep_iothread_0", "iothread,id=indep_iothread_1"]


@pytest.mark.parametrize(("machine", "driver", "head"), [
    ("microvm", "virtio-mmio", "virtio-blk-device"), ("s390-ccw-virtio", "virtio-blk-ccw", "virtio-blk-ccw")])
def test_only_pci_virtio_blk_disks_take_the_independent_thread(
    run: Any, disks: Any, machine: str, driver: str, head: str
) -> None:
    argv = run(disks, machine_type=machine, options={"block_device_driver": driver, **THREADS}).qemu.argv
    assert device_opts(argv, head) and not any("iothread=" in v for v in values(argv, "-device"))


def test_the_scsi_controller_takes_kata_s_virtio_options_on_ccw(run: Any, disks: Any) -> None:
    argv = run(disks, machine_type="s390-ccw-virtio", options={"enable_iommu_platform": True,
                                                               "enable_iothreads": True}).qemu.argv
    (controller,) = device_opts(argv, "virtio-scsi-ccw")
    assert [p.split("=")[0] for p in controller] == ["virtio-scsi-ccw", "id", "iothread", "iommu_platform"]
    assert not any("iommu_platform" in p for parts in device_opts(argv, "scsi-hd") for p in parts)  # disks never


# --- keys another backend honours ----------------------------------------------------------------


def test_the_disk_rate_limiter_is_noted_as_not_applied_on_qemu(run: Any, disks: Any) -> None:
    result = run(disks, options={"disk_rate_limiter_ops_max_rate": 100})
    notes = {d["note"] for d in result.to_json()["devices"]}
    assert notes == {"disk_rate_limiter_bw_max_rate/disk_rate_limiter_ops_max_rate: not applied on QEMU (Kata "
                     "applies the disk rate limiter on Cloud Hypervisor and Firecracker only)"}
    assert "note" not in run(disks).to_json()["devices"][0]


@pytest.mark.parametrize(("hypervisor", "what"), [("cloud-hypervisor", "Cloud Hypervisor's DiskConfig"),
                                                  ("firecracker", "Firecracker's Drive")])
def test_sector_sizes_are_noted_as_not_applied_elsewhere(run: Any, disks: Any, hypervisor: str, what: str) -> None:
    result = run(disks, hypervisor=hypervisor, options=SIZES)
    for device in result.to_json()["devices"]:
        assert device["note"] == (f"block_device_logical_sector_size/block_device_physical_sector_size: not "
                                  f"applied: {what} has no sector size (Kata passes them to QEMU only)")
    assert "block_size" not in str(result.to_json()[hypervisor.replace("-", "_")])
