"""Each built-in family's devices as libvirt elements (rendered through the real plugin manager)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest

from vmdev.errors import PluginError, UnsupportedError
from vmdev.models import PCIePort
from vmdev_libvirt.target import LibvirtAttach

Make = Callable[..., Any]


def node(attach: LibvirtAttach, index: int = 0) -> ET.Element:
    return ET.fromstring(attach.devices[index])


def attrs_at(element: ET.Element, path: str) -> dict[str, str]:
    found = element.find(path)
    assert found is not None, f"no {path} in {ET.tostring(element, encoding='unicode')}"
    return dict(found.attrib)


def guest_bus(element: ET.Element) -> str:
    return attrs_at(element, "address")["bus"]


# --- devices of each family -------------------------------------------------------------------------
def rng(filename: str = "/dev/urandom") -> Any:
    from vmdev_rng import RNGDev

    return RNGDev(filename=filename)


def disk(driver: str = "virtio-blk", *, index: int = 0, path: str = "/img/disk.raw", read_only: bool = False,
         host_device: bool = False, size: int | None = 4 << 20, virt_path: str = "", cold: bool = False,
         nvdimm_id: str = "", dev_no: str = "") -> Any:
    from vmdev_block import BlockDevice, BlockDrive

    drive_id = f"drive-{index:014x}"
    drive = BlockDrive(file=path, id=drive_id, index=index, virt_path=virt_path, read_only=read_only,
                       nvdimm_id=nvdimm_id, dev_no=dev_no, pmem=driver == "nvdimm")
    return BlockDevice(id=drive_id, container_path=f"/disk{index}", host_path=path, driver=driver,
                       major=-1 if not host_device else 7, minor=index, host_device=host_device, size=size,
                       read_only=read_only, cold_plug=cold, pmem=driver == "nvdimm", drive=drive)


def vfio(*bdfs: str, port: PCIePort = PCIePort.ROOT_PORT, mdev: str = "", backend: str = "group") -> Any:
    from vmdev_vfio import VFIODev, VFIODevice, VFIODeviceType
    from vmdev_vfio.device import VfioBackend

    if mdev:
        functions = [VFIODev(id="vfio-m-0", type=VFIODeviceType.MEDIATED, sysfs_dev=f"/sys/bus/mdev/devices/{mdev}")]
    else:
        functions = [VFIODev(id=f"vfio-x-{n}", bdf=bdf, sysfs_dev=f"/sys/bus/pci/devices/{bdf}")
                     for n, bdf in enumerate(bdfs)]
    return VFIODevice(id="vfio-x", container_path="/dev/vfio/12", host_path="/dev/vfio/12",
                      backend=VfioBackend(backend), iommu_group="12", functions=functions, port=port)


def vhost_user(kind: str, **fields: Any) -> Any:
    from vmdev_vhostuser import VhostUserDeviceAttrs

    return VhostUserDeviceAttrs(dev_id=f"vhu-{kind[:8]}", socket_path="/run/vhu/sock", type=kind, **fields)


# --- RNG ---------------------------------------------------------------------------------------------
def test_the_rng_reads_its_entropy_source_on_a_root_port_of_its_own(renderer: Make) -> None:
    element = node(renderer().render(rng()))
    assert (element.tag, element.get("model")) == ("rng", "virtio")
    assert attrs_at(element, "backend") == {"model": "random"}
    assert element.findtext("backend") == "/dev/urandom"
    assert attrs_at(element, "alias") == {"name": "ua-rng0"}
    assert attrs_at(element, "address") == {"type": "pci", "domain": "0x0000", "bus": "0x01", "slot": "0x00",
                                            "function": "0x0"}


def test_the_empty_entropy_source_is_qemus_builtin_generator(renderer: Make) -> None:
    element = node(renderer().render(rng("")))
    assert attrs_at(element, "backend") == {"model": "builtin"}
    assert not element.findtext("backend")


def test_on_pc_libvirt_places_devices_itself_and_no_root_port_is_made(renderer: Make) -> None:
    r = renderer("pc")
    assert node(r.render(rng())).find("address") is None
    assert r.plan().backend.controllers == ()


# --- block -------------------------------------------------------------------------------------------
def test_a_virtio_blk_image_is_a_file_disk_with_serial_and_readonly(renderer: Make) -> None:
    element = node(renderer().render(disk(read_only=True, virt_path="/dev/vdb", index=1)))
    assert element.attrib == {"type": "file", "device": "disk"}
    assert attrs_at(element, "driver") == {"name": "qemu", "type": "raw", "io": "io_uring"}
    assert attrs_at(element, "source") == {"file": "/img/disk.raw"}
    assert attrs_at(element, "target") == {"dev": "vdb", "bus": "virtio"}
    assert element.findtext("serial") == "drive-00000000000001"
    assert element.find("readonly") is not None
    assert guest_bus(element) == "0x01"


def test_a_block_device_node_is_a_block_disk_with_a_dev_source(renderer: Make) -> None:
    element = node(renderer().render(disk(host_device=True, path="/dev/loop3")))
    assert element.get("type") == "block"
    assert attrs_at(element, "source") == {"dev": "/dev/loop3"}
    assert element.find("readonly") is None


def test_a_host_path_with_quotes_and_markup_stays_one_attribute(renderer: Make) -> None:
    path = "/img/a'b\"<c>&d,e=f.raw"
    text = renderer().render(disk(path=path)).devices[0]
    assert attrs_at(ET.fromstring(text), "source") == {"file": path}
    assert "<c>" not in text


def test_a_path_xml_cannot_carry_is_refused_naming_the_device(renderer: Make) -> None:
    with pytest.raises(UnsupportedError) as caught:
        renderer().render(disk(path="/img/a\x01b.raw"))
    assert (caught.value.device, caught.value.field) == ("/disk0", "host_path")


def test_scsi_disks_share_one_controller_at_kata_addresses(renderer: Make) -> None:
    r = renderer()
    first = r.render(disk("virtio-scsi", index=0))
    second = r.render(disk("virtio-scsi", index=257))
    assert attrs_at(node(second), "target") == {"dev": "sdix", "bus": "scsi"}
    assert attrs_at(node(second), "address") == {"type": "drive", "controller": "0", "bus": "0", "target": "1",
                                                 "unit": "1"}
    assert first.controllers == second.controllers
    controller = ET.fromstring(first.controllers["scsi0"])
    assert controller.attrib == {"type": "scsi", "index": "0", "model": "virtio-scsi"}
    plan = r.plan().backend
    assert sum(c.count("virtio-scsi") for c in plan.controllers) == 1
    assert len([c for c in plan.controllers if "pcie-root-port" in c]) == 1


def test_block_cache_and_aio_settings_map_to_libvirt_modes(renderer: Make) -> None:
    def driver(**options: Any) -> dict[str, str]:
        return attrs_at(node(renderer(**options).render(disk())), "driver")

    assert driver(block_device_aio="native")["cache"] == "none"
    assert driver(block_device_aio="threads")["io"] == "threads"
    assert "cache" not in driver()
    flags = {"block_device_cache_set": True}
    assert driver(**flags, block_device_cache_noflush=True)["cache"] == "unsafe"
    assert driver(**flags)["cache"] == "writeback"
    with pytest.raises(UnsupportedError) as caught:
        driver(**flags, block_device_cache_direct=True, block_device_cache_noflush=True)
    assert caught.value.field == "block_device_cache_noflush"


def test_virtio_mmio_has_no_libvirt_form(renderer: Make) -> None:
    with pytest.raises(UnsupportedError, match="virtio-mmio"):
        renderer().render(disk("virtio-mmio"))


def test_ccw_disks_sit_at_their_device_number_on_s390x(renderer: Make) -> None:
    element = node(renderer("s390-ccw-virtio").render(disk("virtio-blk-ccw", dev_no="0.0.1002",
                                                           virt_path="/dev/vdc", index=2)))
    assert attrs_at(element, "address") == {"type": "ccw", "cssid": "0xfe", "ssid": "0x0", "devno": "0x1002"}
    with pytest.raises(UnsupportedError, match="does not fit machine"):
        renderer().render(disk("virtio-blk-ccw", dev_no="0.0.1000"))


def test_an_nvdimm_is_a_shared_memory_device_that_stays_once_hot_plugged(renderer: Make) -> None:
    attach = renderer().render(disk("nvdimm", size=8 << 20, nvdimm_id="0", read_only=True), hotplug=True)
    element = node(attach)
    assert element.attrib == {"model": "nvdimm", "access": "shared"}
    assert element.findtext("source/path") == "/img/disk.raw"
    assert element.findtext("target/size") == "8192"
    assert element.find("target/readonly") is not None
    assert (attach.memory.slots, attach.memory.maxmem_extra_mib) == (1, 8)
    assert attach.hotplug and attach.unplug == ()


# --- VFIO --------------------------------------------------------------------------------------------
def test_a_pci_function_is_an_unmanaged_vfio_hostdev(renderer: Make) -> None:
    element = node(renderer().render(vfio("0000:3b:00.1")))
    assert element.attrib == {"mode": "subsystem", "type": "pci", "managed": "no"}
    assert attrs_at(element, "driver") == {"name": "vfio"}
    assert attrs_at(element, "source/address") == {"domain": "0x0000", "bus": "0x3b", "slot": "0x00",
                                                   "function": "0x1"}
    assert guest_bus(element) == "0x01"


def test_the_managed_setting_lets_libvirt_bind_the_function(renderer: Make) -> None:
    element = node(renderer(libvirt_managed_hostdevs=True).render(vfio("0000:3b:00.0")))
    assert element.get("managed") == "yes"


def test_a_groups_functions_share_one_root_port_as_one_multifunction_slot(renderer: Make) -> None:
    attach = renderer().render(vfio("0000:05:00.0", "0000:05:00.1"))
    first, second = (attrs_at(node(attach, i), "address") for i in (0, 1))
    assert (first["bus"], first["function"], first.get("multifunction")) == ("0x01", "0x0", "on")
    assert (second["bus"], second["function"], second.get("multifunction")) == ("0x01", "0x1", None)


def test_a_multifunction_group_is_not_hot_plugged(renderer: Make) -> None:
    with pytest.raises(UnsupportedError, match="multi-function") as caught:
        renderer().render(vfio("0000:05:00.0", "0000:05:00.1"), hotplug=True)
    assert caught.value.field == "hotplug"


def test_a_mediated_device_is_an_mdev_hostdev_by_uuid(renderer: Make) -> None:
    uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
    element = node(renderer().render(vfio(mdev=uuid)))
    assert element.attrib == {"mode": "subsystem", "type": "mdev", "model": "vfio-pci"}
    assert attrs_at(element, "source/address") == {"uuid": uuid}


def test_switch_ports_and_iommufd_are_refused_not_changed(renderer: Make) -> None:
    with pytest.raises(UnsupportedError, match="switch-port"):
        renderer().render(vfio("0000:05:00.0", port=PCIePort.SWITCH_PORT))
    with pytest.raises(UnsupportedError, match="group API"):
        renderer().render(vfio("0000:05:00.0", backend="iommufd"))


# --- vhost-user --------------------------------------------------------------------------------------
def test_a_vhost_user_blk_disk_needs_shared_memory(renderer: Make) -> None:
    attach = renderer().render(vhost_user("vhost-user-blk-pci", index=2, reconnect_time=5))
    element = node(attach)
    assert element.attrib == {"type": "vhostuser", "device": "disk"}
    assert attrs_at(element, "source") == {"type": "unix", "path": "/run/vhu/sock"}
    assert attrs_at(element, "source/reconnect") == {"enabled": "yes", "timeout": "5"}
    assert attrs_at(element, "target") == {"dev": "vdc", "bus": "virtio"}
    assert attach.memory.shared


def test_virtio_fs_is_a_filesystem_on_the_daemons_socket(renderer: Make) -> None:
    element = node(renderer().render(vhost_user("vhost-user-fs-pci", tag="kataShared", queue_size=1024)))
    assert element.attrib == {"type": "mount"}
    assert attrs_at(element, "driver") == {"type": "virtiofs", "queue": "1024"}
    assert attrs_at(element, "source") == {"socket": "/run/vhu/sock"}
    assert attrs_at(element, "target") == {"dir": "kataShared"}


def test_vhost_user_net_is_a_vhostuser_interface(renderer: Make) -> None:
    element = node(renderer().render(vhost_user("virtio-net-pci", mac_address="52:54:00:AA:BB:CC")))
    assert element.attrib == {"type": "vhostuser"}
    assert attrs_at(element, "mac") == {"address": "52:54:00:aa:bb:cc"}
    assert attrs_at(element, "source") == {"type": "unix", "path": "/run/vhu/sock", "mode": "client"}
    assert attrs_at(element, "model") == {"type": "virtio"}


def test_vhost_user_scsi_and_a_dax_window_are_refused(renderer: Make) -> None:
    with pytest.raises(UnsupportedError, match="no vhost-user-scsi-pci"):
        renderer().render(vhost_user("vhost-user-scsi-pci"))
    with pytest.raises(UnsupportedError, match="DAX"):
        renderer().render(vhost_user("vhost-user-fs-pci", tag="t", cache_size=64))


# --- from both sides ---------------------------------------------------------------------------------
def test_a_device_no_plugin_renders_for_libvirt_is_the_cores_error(renderer: Make) -> None:
    import attrs

    @attrs.frozen
    class Watchdog:
        kind = "watchdog"
        id: str = "wd0"

    with pytest.raises(PluginError, match="no plugin renders watchdog devices for the libvirt backend"):
        renderer().render(Watchdog())


def test_a_family_plugin_that_renders_itself_wins(pm: Any, settings: Make) -> None:
    from vmdev import hookimpl
    from vmdev.plugins import LoadPolicy, PluginManager
    from vmdev_libvirt import LibvirtAttach, LibvirtTarget, element

    class OwnRng:
        @hookimpl
        def attach_options(self, device: Any, target: Any, hotplug: bool) -> Any:
            if isinstance(target, LibvirtTarget) and getattr(device, "kind", "") == "rng":
                return LibvirtAttach(devices=[element("rng", {"model": "virtio"},
                                                      element("backend", {"model": "builtin"}))])
            return None

    own = PluginManager(LoadPolicy(only=("vmdev-libvirt", "vmdev-rng")), plugins=[("own-rng", OwnRng())]).load()
    target = LibvirtTarget(own.prepare_settings(settings()))
    attach = own.attach_options(rng(), target, False, name="rng0")
    assert attach.devices == ('<rng model="virtio"><backend model="builtin" /></rng>',)


def test_a_family_that_is_not_installed_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from vmdev_libvirt import families

    real_import = builtins.__import__

    def no_block(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("vmdev_block"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    families.model.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_block)
    monkeypatch.setattr(families.importlib, "import_module",
                        lambda name: no_block(name, fromlist=["x"]) if name.startswith("vmdev_block")
                        else real_import(name, fromlist=["x"]))
    try:
        assert families.model("vmdev_block", "BlockDevice") is None
        assert families.renderer(rng()) is not None
        assert families.renderer(object()) is None
    finally:
        families.model.cache_clear()
