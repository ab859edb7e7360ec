"""Cloud Hypervisor and Firecracker bodies: field names and types as their API specs define them."""

from __future__ import annotations

from typing import Any

import pytest

from vmdev.errors import UnsupportedError
from vmdev.models import DeviceInfo
from vmdev.oci import OciSpec
from vmdev.planner import plan
from vmdev.settings import SandboxSettings

MIB = 1024 * 1024
#: every property each API schema defines (cloud-hypervisor.yaml DiskConfig/PmemConfig,
#: firecracker.yaml Drive/Pmem): a body must not carry anything else
CLH_DISK_FIELDS = {
    "path", "readonly", "direct", "iommu", "num_queues", "queue_size", "vhost_user", "vhost_socket",
    "rate_limiter_config", "pci_segment", "pci_device_id", "id", "serial", "rate_limit_group",
    "queue_affinity", "backing_files", "sparse", "image_type", "lock_granularity",
}
CLH_PMEM_FIELDS = {"file", "size", "iommu", "discard_writes", "pci_segment", "pci_device_id", "id"}
FC_DRIVE_FIELDS = {"drive_id", "partuuid", "is_root_device", "cache_type", "is_read_only", "path_on_host",
                   "rate_limiter", "io_engine", "socket"}
FC_PMEM_FIELDS = {"id", "path_on_host", "root_device", "read_only", "rate_limiter"}


@pytest.fixture
def disk(host: Any) -> Any:
    host.disk(8, 16, "sdb")
    return host.spec([host.device("/dev/xvdb", 8, 16)], rules=[
        {"allow": True, "type": "b", "major": 8, "minor": 16, "access": "r"}])


@pytest.fixture
def pmem(host: Any) -> tuple[Any, str]:
    source, backing = host.pmem_mount(5)
    return host.spec(mounts=[{"destination": "/pmem", "source": str(source), "type": "bind"}]), str(backing)


def test_clh_cold_disk(run: Any, disk: Any) -> None:
    result = run(disk, hypervisor="cloud-hypervisor")
    (drive_id,) = [d.id for d in result.devices]
    data = result.to_json()["cloud_hypervisor"]
    assert data["vm_config"] == {"disks": [{
        "path": "/dev/sdb", "readonly": True, "direct": False, "id": drive_id, "serial": drive_id,
        "image_type": "Raw", "num_queues": 1, "queue_size": 1024}]}  # Kata Go: a queue per vCPU of 1024
    assert set(data["vm_config"]["disks"][0]) <= CLH_DISK_FIELDS
    assert data["hotplug"] == [] and data["unplug"] == []


def test_clh_hot_disk_with_direct_io(run: Any, disk: Any) -> None:
    result = run(disk, hypervisor="cloud-hypervisor", hotplug=True,
                 options={"block_device_cache_set": True, "block_device_cache_direct": True})
    (drive_id,) = [d.id for d in result.devices]
    data = result.to_json()["cloud_hypervisor"]
    assert data["vm_config"] == {}
    (request,) = data["hotplug"]
    assert (request["method"], request["path"], request["body"]["direct"]) == ("PUT", "/api/v1/vm.add-disk", True)
    assert data["unplug"] == [{"method": "PUT", "path": "/api/v1/vm.remove-device", "body": {"id": drive_id}}]
    assert result.devices[0].hotplug


def test_clh_pmem(run: Any, pmem: tuple[Any, str]) -> None:
    oci, backing = pmem
    result = run(oci, hypervisor="cloud-hypervisor")
    (drive_id,) = [d.id for d in result.devices]
    body = result.to_json()["cloud_hypervisor"]["vm_config"]["pmem"][0]
    assert body == {"file": backing, "id": drive_id, "size": 16 * MIB}
    assert set(body) <= CLH_PMEM_FIELDS
    hot = run(oci, hypervisor="cloud-hypervisor", hotplug=True).to_json()["cloud_hypervisor"]["hotplug"]
    assert hot[0]["path"] == "/api/v1/vm.add-pmem" and hot[0]["body"]["file"] == backing


def test_clh_read_only_pmem_discards_writes(host: Any, run: Any) -> None:
    source, _ = host.pmem_mount(5)
    oci = host.spec(mounts=[{"destination": "/pmem", "source": str(source), "type": "bind", "options": ["ro"]}])
    body = run(oci, hypervisor="cloud-hypervisor").to_json()["cloud_hypervisor"]["vm_config"]["pmem"][0]
    assert body["discard_writes"] is True


@pytest.mark.parametrize("driver", ["virtio-scsi", "virtio-mmio", "virtio-blk-ccw"])
def test_clh_unsupported_drivers(run: Any, disk: Any, driver: str) -> None:
    with pytest.raises(UnsupportedError, match=f"Cloud Hypervisor cannot attach a {driver} disk") as exc:
        run(disk, hypervisor="cloud-hypervisor", options={"block_device_driver": driver})
    assert (exc.value.device, exc.value.field) == ("/dev/xvdb", "block_device_driver")


def test_clh_nvdimm_driver_gives_pmem(run: Any, disk: Any) -> None:
    config = run(disk, hypervisor="cloud-hypervisor", options={"block_device_driver": "nvdimm"}).to_json()
    assert config["cloud_hypervisor"]["vm_config"]["pmem"][0]["file"] == "/dev/sdb"


def test_firecracker_drive(run: Any, disk: Any) -> None:
    result = run(disk, hypervisor="firecracker", hotplug=True)
    (drive_id,) = [d.id for d in result.devices]
    fc_id = drive_id.replace("-", "_")
    data = result.to_json()["firecracker"]
    assert data["requests"] == [{"method": "PUT", "path": f"/drives/{fc_id}", "body": {
        "drive_id": fc_id, "path_on_host": "/dev/sdb", "is_root_device": False, "is_read_only": True}}]
    assert set(data["requests"][0]["body"]) <= FC_DRIVE_FIELDS
    assert data["hotplug"] == [] and not result.devices[0].hotplug  # Firecracker cannot hot-plug a disk


@pytest.mark.parametrize(
    ("options", "extra"),
    [({"block_device_aio": "io_uring"}, {"io_engine": "Async"}),
     ({"block_device_aio": "threads"}, {"io_engine": "Sync"}),
     ({"block_device_cache_set": True}, {"cache_type": "Writeback"}),
     ({"block_device_cache_set": True, "block_device_cache_noflush": True}, {"cache_type": "Unsafe"})],
)
def test_firecracker_cache_and_engine(run: Any, disk: Any, options: dict[str, Any], extra: dict[str, Any]) -> None:
    body = run(disk, hypervisor="firecracker", options=options).to_json()["firecracker"]["requests"][0]["body"]
    assert {k: body[k] for k in extra} == extra
    assert set(body) - set(extra) == {"drive_id", "path_on_host", "is_root_device", "is_read_only"}


def test_firecracker_refuses_native_aio_and_discard(run: Any, disk: Any, host: Any, vmdev_plugins: Any) -> None:
    with pytest.raises(UnsupportedError, match="Firecracker has no native AIO") as exc:
        run(disk, hypervisor="firecracker", options={"block_device_aio": "native"})
    assert exc.value.field == "block_device_aio"
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, discard_unmap=True)
    with pytest.raises(UnsupportedError, match="cannot discard"):
        plan(OciSpec(devices=(info,)), SandboxSettings(hypervisor="firecracker"), host=host.fake.context(),
             plugins=vmdev_plugins("vmdev-block"))


def test_firecracker_pmem(run: Any, pmem: tuple[Any, str]) -> None:
    oci, backing = pmem
    result = run(oci, hypervisor="firecracker")
    fc_id = result.devices[0].id.replace("-", "_")
    (request,) = result.to_json()["firecracker"]["requests"]
    assert request == {"method": "PUT", "path": f"/pmem/{fc_id}", "body": {
        "id": fc_id, "path_on_host": backing, "root_device": False, "read_only": False}}
    assert set(request["body"]) <= FC_PMEM_FIELDS


@pytest.mark.parametrize("driver", ["virtio-scsi", "virtio-blk", "virtio-blk-ccw"])
def test_firecracker_unsupported_drivers(run: Any, disk: Any, driver: str) -> None:
    with pytest.raises(UnsupportedError, match=f"Firecracker cannot attach a {driver} disk"):
        run(disk, hypervisor="firecracker", options={"block_device_driver": driver})


def test_virt_path_on_firecracker_skips_the_root_image(run: Any, disk: Any) -> None:
    assert run(disk, hypervisor="firecracker").to_json()["devices"][0]["drive"]["virt_path"] == "/dev/vdb"


# --- Kata's disk keys on the API hypervisors, checked against the vendored schemas (data/) ------------
#: Kata Go's RevertBytes test vector: 10 MB in its units is 10485760 bytes; in bits/s that is 80000000
RATES = {"disk_rate_limiter_bw_max_rate": 80_000_000, "disk_rate_limiter_bw_one_time_burst": 8000,
         "disk_rate_limiter_ops_max_rate": 200, "disk_rate_limiter_ops_one_time_burst": 50}
LIMITER = {"bandwidth": {"size": 10485760, "one_time_burst": 1024, "refill_time": 1000},
           "ops": {"size": 200, "one_time_burst": 50, "refill_time": 1000}}


def test_revert_bytes_matches_kata() -> None:
    from vmdev_block.limits import revert_bytes

    assert [revert_bytes(n) for n in (0, 999, 1000, 1001, 10_000_000, 1_250_000)] == [
        0, 999, 1024, 1025, 10_485_760, 1_304_576]


def test_clh_disk_rate_limiter_is_kata_s(run: Any, disk: Any, api: Any) -> None:
    data = run(disk, hypervisor="cloud-hypervisor", options=RATES).to_json()["cloud_hypervisor"]
    (body,) = data["vm_config"]["disks"]
    assert body["rate_limiter_config"] == LIMITER
    api("cloud-hypervisor", "DiskConfig")(body)
    hot = run(disk, hypervisor="cloud-hypervisor", hotplug=True, options=RATES).to_json()["cloud_hypervisor"]
    assert hot["hotplug"][0]["body"]["rate_limiter_config"] == LIMITER
    api("cloud-hypervisor", "DiskConfig")(hot["hotplug"][0]["body"])


def test_firecracker_drive_rate_limiter_is_kata_s(run: Any, disk: Any, api: Any) -> None:
    (request,) = run(disk, hypervisor="firecracker", options=RATES).to_json()["firecracker"]["requests"]
    assert request["body"]["rate_limiter"] == LIMITER
    api("firecracker", "Drive")(request["body"])


@pytest.mark.parametrize(("options", "limiter"), [
    ({"disk_rate_limiter_bw_max_rate": 8_000}, {"bandwidth": {"size": 1024, "refill_time": 1000}}),
    ({"disk_rate_limiter_ops_max_rate": 7}, {"ops": {"size": 7, "refill_time": 1000}}),
    ({"disk_rate_limiter_bw_max_rate": 7}, None),  # less than a byte a second: Kata sets no bucket
    ({"disk_rate_limiter_bw_one_time_burst": 8_000, "disk_rate_limiter_ops_one_time_burst": 5}, None),
    ({"disk_rate_limiter_bw_max_rate": 0, "disk_rate_limiter_ops_max_rate": 0}, None),
])
def test_only_what_is_set_reaches_the_limiter(
    run: Any, disk: Any, api: Any, options: dict[str, Any], limiter: Any
) -> None:
    clh = run(disk, hypervisor="cloud-hypervisor", options=options).to_json()["cloud_hypervisor"]
    fc = run(disk, hypervisor="firecracker", options=options).to_json()["firecracker"]
    clh_body, fc_body = clh["vm_config"]["disks"][0], fc["requests"][0]["body"]
    assert (clh_body.get("rate_limiter_config"), fc_body.get("rate_limiter")) == (limiter, limiter)
    api("cloud-hypervisor", "DiskConfig")(clh_body)
    api("firecracker", "Drive")(fc_body)


def test_the_largest_rates_stay_within_the_apis_int64(run: Any, disk: Any, api: Any) -> None:
    top = {key: 2**63 - 1 for key in RATES}
    body = run(disk, hypervisor="cloud-hypervisor", options=top).to_json()["cloud_hypervisor"]["vm_config"]["disks"][0]
    api("cloud-hypervisor", "DiskConfig")(body)
    api("firecracker", "Drive")(run(disk, hypervisor="firecracker", options=top).to_json()["firecracker"]
                                ["requests"][0]["body"])


def test_clh_disk_queues_come_from_runtime_rs_keys(run: Any, disk: Any, api: Any) -> None:
    options = {"num_queues": 4, "queue_size": 1024}
    body = run(disk, hypervisor="cloud-hypervisor", options=options).to_json()["cloud_hypervisor"]["vm_config"]
    assert (body["disks"][0]["num_queues"], body["disks"][0]["queue_size"]) == (4, 1024)
    api("cloud-hypervisor", "DiskConfig")(body["disks"][0])
    go = run(disk, hypervisor="cloud-hypervisor", options={"default_vcpus": 3})
    go_disk = go.to_json()["cloud_hypervisor"]["vm_config"]["disks"][0]
    assert (go_disk["num_queues"], go_disk["queue_size"]) == (3, 1024)  # Kata Go: a queue per vCPU of 1024
    rs = run(disk, hypervisor="cloud-hypervisor", runtime={"name": "virt_container"})
    rs_disk = rs.to_json()["cloud_hypervisor"]["vm_config"]["disks"][0]
    assert "num_queues" not in rs_disk and "queue_size" not in rs_disk  # runtime-rs without the keys
    fc = run(disk, hypervisor="firecracker", options=options).to_json()["firecracker"]["requests"][0]["body"]
    assert "num_queues" not in fc and "queue_size" not in fc  # Firecracker's Drive has neither


def test_pmem_bodies_carry_no_disk_keys(run: Any, pmem: tuple[Any, str], api: Any) -> None:
    oci, _ = pmem
    options = {**RATES, "num_queues": 2, "queue_size": 256}
    clh = run(oci, hypervisor="cloud-hypervisor", options=options).to_json()["cloud_hypervisor"]["vm_config"]
    assert set(clh["pmem"][0]) == {"file", "id", "size"}
    api("cloud-hypervisor", "PmemConfig")(clh["pmem"][0])
    fc = run(oci, hypervisor="firecracker", options=options).to_json()["firecracker"]["requests"][0]["body"]
    assert "rate_limiter" not in fc
    api("firecracker", "Pmem")(fc)


@pytest.mark.parametrize("hypervisor", ["cloud-hypervisor", "firecracker"])
def test_every_body_the_plugin_builds_is_valid(run: Any, host: Any, hypervisor: str, api: Any) -> None:
    """Disks (read-only and not, direct, cached, every engine) and pmem, cold and hot."""
    source, _ = host.pmem_mount(5)
    host.disk(8, 16, "sdb")
    oci = host.spec([host.device("/dev/xvdb", 8, 16)], [{"destination": "/pmem", "source": str(source),
                                                       "type": "bind", "options": ["ro"]}])
    settings: list[dict[str, Any]] = [
        {}, {"block_device_cache_set": True, "block_device_cache_direct": True, "block_device_cache_noflush": True},
        {"block_device_aio": "threads", **RATES}, {"num_queues": 1, "queue_size": 128}]
    for options in settings:
        for hot in (False, True):
            data = run(oci, hypervisor=hypervisor, hotplug=hot, options=options).to_json()
            if hypervisor == "cloud-hypervisor":
                part = data["cloud_hypervisor"]
                bodies = [("DiskConfig", b) for b in part["vm_config"].get("disks", [])]
                bodies += [("PmemConfig", b) for b in part["vm_config"].get("pmem", [])]
                bodies += [("DiskConfig" if r["path"].endswith("add-disk") else "PmemConfig", r["body"])
                           for r in part["hotplug"]]
            else:
                bodies = [("Pmem" if r["path"].startswith("/pmem/") else "Drive", r["body"])
                          for r in data["firecracker"]["requests"]]
            assert len(bodies) == 2
            for schema, body in bodies:
                api(hypervisor, schema)(body)


def test_the_schema_check_catches_a_wrong_body(api: Any) -> None:
    import jsonschema

    check = api("cloud-hypervisor", "DiskConfig")
    with pytest.raises(jsonschema.ValidationError):
        check({"path": "/dev/sdb", "rate_limiter_config": {"bandwidth": {"size": 1}}})  # no refill_time
    with pytest.raises(jsonschema.ValidationError):
        check({"path": "/dev/sdb", "readonly": "yes"})
    with pytest.raises(jsonschema.ValidationError):
        check({"path": "/dev/sdb", "ratelimiter": {}})  # not a DiskConfig field
    with pytest.raises(jsonschema.ValidationError):
        api("firecracker", "Drive")({"drive_id": "a", "is_root_device": False, "io_engine": "Native"})


def test_enable_iommu_puts_cloud_hypervisor_disks_and_the_platform_behind_the_viommu_as_kata() -> None:
    from vmdev.backends.clh import assemble
    from vmdev.settings import SandboxSettings
    from vmdev_block import BlockDrive
    from vmdev_block.options import BlockSettings
    from vmdev_block.render_clh import _clh_disk

    drive = BlockDrive(file="/dev/sdb", id="drive-1")
    assert _clh_disk(drive, BlockSettings(driver="virtio-blk", aio="threads", iommu=True))["iommu"] is True
    assert "iommu" not in _clh_disk(drive, BlockSettings(driver="virtio-blk", aio="threads"))
    on = assemble(SandboxSettings(values={"enable_iommu": True}), None, [])  # type: ignore[arg-type]
    assert on.config == {"platform": {"iommu_segments": [0]}}
    assert assemble(SandboxSettings(), None, []).config == {}  # type: ignore[arg-type]


def test_a_burst_without_its_rate_is_ignored_with_a_warning_naming_both_keys(
    prepared: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="vmdev.block"):  # preparing the settings checks them
        prepared(options={"disk_rate_limiter_ops_one_time_burst": 5})
    assert [r.getMessage() for r in caplog.records] == [
        "disk_rate_limiter_ops_one_time_burst is set but disk_rate_limiter_ops_max_rate is not: the burst is "
        "ignored (as Kata does)"]
