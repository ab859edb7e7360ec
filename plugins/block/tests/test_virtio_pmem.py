"""virtio-pmem, runtime-rs' persistent-memory driver: a real driver on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.qemu import split_opts

MIB = 1024 * 1024
FILE_OPT = "io.katacontainers.fs-opt.block_device=file"
PMEM = {"block_device_driver": "virtio-pmem"}


def option(argv: tuple[str, ...], flag: str, head: str) -> list[str]:
    for index, arg in enumerate(argv[:-1]):
        if arg == flag and argv[index + 1].startswith(head):
            return split_opts(argv[index + 1])
    raise AssertionError(f"no {flag} {head}... in {argv}")


@pytest.fixture
def image_disk(host: Any) -> Any:
    """A 16 MiB image given as a disk (Kata's block-file mount)."""
    image = host.image("disk.img", size=16 * MIB)
    return host.spec(mounts=[{"destination": "/disk", "source": str(image), "type": "bind",
                              "options": [FILE_OPT]}]), str(image)


def test_virtio_pmem_cold_plug(run: Any, image_disk: Any) -> None:
    oci, image = image_disk
    result = run(oci, memory_mib=512, options=PMEM)
    (disk_id,) = [d.id for d in result.devices]
    argv = result.qemu.argv
    assert argv[:4] == ("-machine", "q35", "-m", "512M,slots=1,maxmem=528M")  # no nvdimm=on
    assert option(argv, "-object", "memory-backend-file") == [
        "memory-backend-file", f"id=pmemmem-{disk_id}", f"mem-path={image}", f"size={16 * MIB}", "share=on"]
    assert option(argv, "-device", "virtio-pmem-pci") == [
        "virtio-pmem-pci", f"id=virtio-{disk_id}", f"memdev=pmemmem-{disk_id}"]
    device = result.to_json()["devices"][0]
    assert (device["driver"], device["qemu_driver"], device["guest_path"]) == (
        "virtio-pmem", "virtio-pmem-pci", "/dev/pmem0")
    assert (device["drive"]["nvdimm_id"], device["drive"]["virt_path"], device["drive"]["index"]) == ("0", "", 0)
    assert not any(a.startswith("-blockdev") for a in argv)


def test_the_backend_comes_before_the_device(run: Any, image_disk: Any) -> None:
    argv = run(image_disk[0], options=PMEM).qemu.argv
    objects = [i for i, a in enumerate(argv) if a == "-object"]
    devices = [i for i, a in enumerate(argv) if a == "-device" and argv[i + 1].startswith("virtio-pmem-pci")]
    assert objects and devices and objects[0] < devices[0]


def test_a_read_only_virtio_pmem_maps_the_file_read_only(run: Any, host: Any) -> None:
    image = host.image("ro.img", size=8 * MIB)
    oci = host.spec(mounts=[{"destination": "/ro", "source": str(image), "type": "bind",
                             "options": [FILE_OPT, "ro"]}])
    result = run(oci, options=PMEM)
    assert option(result.qemu.argv, "-object", "memory-backend-file")[-2:] == ["share=on", "readonly=on"]
    assert "unarmed=on" not in str(result.qemu.argv)  # nvdimm's, not virtio-pmem's
    assert "discards the guest's writes" in result.to_json()["devices"][0]["note"]


def test_virtio_pmem_hot_plug_goes_on_a_root_port_and_cannot_be_unplugged(run: Any, image_disk: Any) -> None:
    oci, image = image_disk
    result = run(oci, hotplug=True, memory_mib=256, options=PMEM)
    (disk_id,) = [d.id for d in result.devices]
    (bus,) = [d["bus"] for d in result.to_json()["devices"]]
    assert [c.to_json() for c in result.qemu.hotplug] == [
        {"execute": "object-add", "arguments": {"qom-type": "memory-backend-file", "id": f"pmemmem-{disk_id}",
                                                "mem-path": image, "size": 16 * MIB, "share": True}},
        {"execute": "device_add", "arguments": {"driver": "virtio-pmem-pci", "id": f"virtio-{disk_id}",
                                                "memdev": f"pmemmem-{disk_id}", "bus": bus}},
    ]
    assert bus.startswith("rp") and f"pcie-root-port,id={bus}" in " ".join(result.qemu.argv)
    assert result.qemu.unplug == ()
    assert result.to_json()["devices"][0]["unplug"] == "not possible: QEMU cannot hot-unplug a virtio-pmem device"
    assert "256M,slots=1,maxmem=272M" in result.qemu.argv  # the boot line has room for it


def test_virtio_pmem_hot_plug_on_pc_uses_the_root_bus(run: Any, image_disk: Any) -> None:
    result = run(image_disk[0], hotplug=True, machine_type="pc", options=PMEM)
    (add,) = [c.arguments for c in result.qemu.hotplug if c.execute == "device_add"]
    assert "bus" not in add


@pytest.mark.parametrize("machine", ["microvm", "s390-ccw-virtio"])
def test_virtio_pmem_needs_a_pci_machine(run: Any, image_disk: Any, machine: str) -> None:
    with pytest.raises(UnsupportedError, match=f"machine {machine} has no virtio-pmem") as exc:
        run(image_disk[0], machine_type=machine, options=PMEM)
    assert (exc.value.device, exc.value.field) == ("/disk", "block_device_driver")


def test_a_block_device_as_virtio_pmem(run: Any, host: Any) -> None:
    host.disk(8, 16, "sdb", size=32 * MIB)
    result = run(host.spec([host.device("/dev/xvdb", 8, 16)]), options=PMEM)
    assert option(result.qemu.argv, "-object", "memory-backend-file")[2:4] == ["mem-path=/dev/sdb", f"size={32 * MIB}"]


def test_persistent_memory_follows_the_virtio_pmem_driver(run: Any, host: Any) -> None:
    """A loop-mounted PFN image is an nvdimm (Kata Go), or virtio-pmem when that is the driver."""
    source, backing = host.pmem_mount(5)
    oci = host.spec(mounts=[{"destination": "/pmem", "source": str(source), "type": "bind"}])
    device = run(oci, options=PMEM).to_json()["devices"][0]
    assert (device["driver"], device["pmem"], device["fstype"], device["host_path"]) == (
        "virtio-pmem", True, "ext2", str(backing))
    assert run(oci).to_json()["devices"][0]["driver"] == "nvdimm"


def test_the_per_device_option_names_virtio_pmem(host: Any, prepared: Any, vmdev_plugins: Any) -> None:
    from vmdev.models import DeviceInfo
    from vmdev.oci import OciSpec
    from vmdev.planner import plan

    host.disk(8, 16, "sdb")
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16,
                      driver_options={"block-driver": "virtio-pmem"})
    result = plan(OciSpec(devices=(info,)), prepared(), host=host.fake.context(), plugins=vmdev_plugins("vmdev-block"))
    assert result.to_json()["devices"][0]["qemu_driver"] == "virtio-pmem-pci"


def test_nvdimm_and_virtio_pmem_share_the_pmem_numbers(host: Any, prepared: Any, vmdev_plugins: Any) -> None:
    from vmdev.models import DeviceInfo
    from vmdev.oci import OciSpec
    from vmdev.planner import plan

    host.disk(8, 16, "sdb")
    host.disk(8, 32, "sdc")
    infos = (DeviceInfo(container_path="/a", dev_type="b", major=8, minor=16, driver_options={"block-driver": "nvdimm"}),
             DeviceInfo(container_path="/b", dev_type="b", major=8, minor=32))
    result = plan(OciSpec(devices=infos), prepared(options=PMEM), host=host.fake.context(),
                  plugins=vmdev_plugins("vmdev-block"))
    devices = result.to_json()["devices"]
    assert [(d["driver"], d["guest_path"]) for d in devices] == [("nvdimm", "/dev/pmem0"), ("virtio-pmem", "/dev/pmem1")]
    assert "q35,nvdimm=on" in result.qemu.argv and any(a.startswith("2048M,slots=2,") for a in result.qemu.argv)


def test_a_virtio_pmem_file_must_be_whole_pages(run: Any, host: Any) -> None:
    image = host.image("odd.img", size=16 * MIB + 512)
    oci = host.spec(mounts=[{"destination": "/odd", "source": str(image), "type": "bind", "options": [FILE_OPT]}])
    with pytest.raises(DeviceError, match=r"a virtio-pmem device needs a multiple of 4096 bytes") as exc:
        run(oci, options=PMEM)
    assert (exc.value.device, exc.value.field) == ("/odd", "size")


@pytest.mark.parametrize("hypervisor", ["cloud-hypervisor", "firecracker"])
def test_virtio_pmem_is_the_pmem_device_of_the_api_hypervisors(
    run: Any, image_disk: Any, hypervisor: str, api: Any
) -> None:
    oci, image = image_disk
    result = run(oci, hypervisor=hypervisor, options=PMEM).to_json()
    (device,) = result["devices"]
    if hypervisor == "cloud-hypervisor":
        (body,) = result["cloud_hypervisor"]["vm_config"]["pmem"]
        assert body == {"file": image, "id": device["id"], "size": 16 * MIB}
        api("cloud-hypervisor", "PmemConfig")(body)
    else:
        (request,) = result["firecracker"]["requests"]
        fc_id = device["id"].replace("-", "_")
        assert request["path"] == f"/pmem/{fc_id}" and request["body"]["path_on_host"] == image
        api("firecracker", "Pmem")(request["body"])
