"""The plan's libvirt part: devices in order, controllers, hot-plug steps and the minimal domain."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.backend import RenderContext
from vmdev.errors import ConfigError, UnsupportedError
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import PluginManager
from vmdev.settings import SandboxSettings
from vmdev.state import PortRecord
from vmdev.testing import FakeHost
from vmdev_libvirt import LibvirtPlan
from vmdev_libvirt.target import LibvirtTarget

Make = Callable[..., Any]


def rng(filename: str = "/dev/urandom") -> Any:
    from vmdev_rng import RNGDev

    return RNGDev(filename=filename)


def blk(index: int, *, cold: bool = False, nvdimm: bool = False) -> Any:
    from vmdev_block import BlockDevice, BlockDrive

    drive_id = f"drive-{index:014x}"
    driver = "nvdimm" if nvdimm else "virtio-blk"
    drive = BlockDrive(file=f"/img/{index}.raw", id=drive_id, index=index, nvdimm_id="0" if nvdimm else "")
    return BlockDevice(id=drive_id, container_path=f"/disk{index}", host_path=f"/img/{index}.raw", driver=driver,
                       major=-1, minor=0, host_device=False, size=16 << 20, cold_plug=cold, drive=drive)


def domain_of(result: LibvirtPlan) -> ET.Element:
    return ET.fromstring(result.domain)


def buses_in_use(domain: ET.Element) -> set[str]:
    return {a.get("bus", "") for a in domain.iter("address") if a.get("type") == "pci"}


def root_ports(domain: ET.Element) -> list[str]:
    return [c.get("index", "") for c in domain.iter("controller") if c.get("model") == "pcie-root-port"]


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path)
    host.dev_file("urandom")
    return host


def test_a_plan_through_the_pipeline_gives_the_libvirt_part(pm: PluginManager, fake_host: FakeHost) -> None:
    settings = SandboxSettings(hypervisor="libvirt", options={"hotplug_root_ports": 3})
    result = plan(parse_spec({"ociVersion": "1.0.2"}), settings, host=fake_host.context(), plugins=pm)
    part = result.to_json()["libvirt"]
    assert set(part) == {"devices", "controllers", "domain", "hotplug", "unplug"}
    assert [ET.fromstring(x).tag for x in part["devices"]] == ["rng"]
    assert len(part["controllers"]) == 3
    assert result.devices[0].to_json()["libvirt_element"] == "rng"


def test_the_domain_keeps_spare_root_ports_free_and_has_acpi(renderer: Make) -> None:
    r = renderer(hotplug_root_ports=4)
    r.render(rng())
    r.render(blk(0))
    domain = domain_of(r.plan().backend)
    assert domain.find("features/acpi") is not None
    assert [c.attrib for c in domain.iter("controller") if c.get("type") == "usb"] == [
        {"type": "usb", "model": "none"}]
    assert domain.find("devices/memballoon").attrib == {"model": "none"}  # type: ignore[union-attr]
    assert root_ports(domain) == ["1", "2", "3", "4"]
    assert buses_in_use(domain) == {"0x01", "0x02"}
    for child in domain.find("devices") or []:  # every PCI device has its address: none left to libvirt
        if child.tag in ("rng", "disk"):
            assert child.find("address") is not None


def test_devices_are_listed_in_order_and_only_cold_ones_are_in_the_domain(renderer: Make) -> None:
    r = renderer(hotplug_root_ports=3)
    r.render(blk(0, cold=True))
    r.render(blk(1), hotplug=True)
    r.render(blk(2), hotplug=True)
    part = r.plan().backend
    assert [ET.fromstring(x).findtext("serial") for x in part.devices] == [
        "drive-00000000000000", "drive-00000000000001", "drive-00000000000002"]
    in_domain = [d.findtext("serial") for d in domain_of(part).iter("disk")]
    assert in_domain == ["drive-00000000000000"]
    assert [step["attach"] for step in part.hotplug] == list(part.devices[1:])
    assert [step["detach"] for step in part.unplug] == [part.devices[2], part.devices[1]]
    assert root_ports(domain_of(part)) == ["1", "2", "3"]


def test_the_boot_plans_hot_plug_ports_are_spare_for_the_device_manager(renderer: Make) -> None:
    r = renderer(hotplug_root_ports=4)
    r.render(blk(0, cold=True))
    r.render(blk(1), hotplug=True)
    r.plan()
    assert r.target.spare_ports({"/disk1"}) == [("pci.2", "root-port"), ("pci.3", "root-port"),
                                                ("pci.4", "root-port")]


def test_a_device_for_a_running_domain_takes_one_of_its_free_ports(settings: Make, pm: PluginManager) -> None:
    free = [PortRecord(id="pci.5", kind="root-port"), PortRecord(id="pci.7", kind="root-port")]
    target = LibvirtTarget(settings(), RenderContext(live_ports=lambda: free))
    first = pm.attach_options(blk(0), target, True, name="/disk0")
    second = pm.attach_options(blk(1), target, True, name="/disk1")
    buses = [ET.fromstring(a.devices[0]).find("address").get("bus") for a in (first, second)]  # type: ignore[union-attr]
    assert buses == ["0x05", "0x07"]
    assert target.ports_taken == ("pci.5", "pci.7")
    assert target.root_port_elements() == []
    with pytest.raises(UnsupportedError, match="no free pcie-root-port left in the running domain"):
        pm.attach_options(blk(2), target, True, name="/disk2")


def test_kata_settings_reach_the_domain(renderer: Make) -> None:
    r = renderer(default_vcpus=2, kernel="/k/vmlinuz", initrd="/k/initrd.img", kernel_params="console=ttyS0 x=<y>",
                 path="/usr/bin/qemu-system-x86_64", firmware="/usr/share/qemu/qboot.rom", enable_hugepages=True,
                 libvirt_domain_type="qemu", libvirt_domain_name="sandbox-1", default_memory=1024)
    r.render(rng())
    domain = domain_of(r.plan().backend)
    assert domain.attrib == {"type": "qemu"}
    assert domain.findtext("name") == "sandbox-1"
    assert domain.findtext("vcpu") == "2"
    assert [domain.findtext(f"os/{tag}") for tag in ("kernel", "initrd", "cmdline", "loader")] == [
        "/k/vmlinuz", "/k/initrd.img", "console=ttyS0 x=<y>", "/usr/share/qemu/qboot.rom"]
    assert domain.find("os/type").attrib == {"machine": "q35"}  # type: ignore[union-attr]
    assert domain.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"
    assert domain.find("memoryBacking/hugepages") is not None


def test_an_nvdimm_gives_the_domain_memory_slots_and_a_numa_cell(renderer: Make) -> None:
    r = renderer(default_vcpus=2)
    r.render(blk(0, nvdimm=True))
    domain = domain_of(r.plan().backend)
    assert domain.find("maxMemory").attrib == {"slots": "1", "unit": "MiB"}  # type: ignore[union-attr]
    assert domain.findtext("maxMemory") == str(2048 + 16)
    assert domain.find("cpu/numa/cell").attrib == {"id": "0", "cpus": "0-1", "memory": "2048", "unit": "MiB"}  # type: ignore[union-attr]


def test_vhost_user_devices_give_the_domain_shared_memfd_memory(renderer: Make) -> None:
    from vmdev_vhostuser import VhostUserDeviceAttrs

    r = renderer()
    r.render(VhostUserDeviceAttrs(dev_id="vhufs-1", socket_path="/run/fs.sock", type="vhost-user-fs-pci", tag="t"))
    backing = domain_of(r.plan().backend).find("memoryBacking")
    assert backing is not None
    assert [(c.tag, c.attrib) for c in backing] == [("source", {"type": "memfd"}), ("access", {"mode": "shared"})]


@pytest.mark.parametrize(("key", "value"), [("libvirt_domain_type", "xen"), ("libvirt_domain_name", "a/b"),
                                            ("default_vcpus", 0), ("libvirt_managed_hostdevs", "yes")])
def test_a_wrong_setting_is_one_line_naming_the_key(settings: Make, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{key: value})
    assert caught.value.field == key
    assert "\n" not in str(caught.value)


def test_more_root_ports_than_the_io_space_holds_are_refused(renderer: Make) -> None:
    r = renderer(hotplug_root_ports=16)
    r.render(rng())
    r.plan()
    with pytest.raises(UnsupportedError, match="at most 16 pcie-root-ports"):
        r.target.root_port("/one-more")


def test_vmdev_plan_hypervisor_libvirt_prints_the_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vmdev.cli import main

    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-libvirt,vmdev-rng")
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"ociVersion": "1.0.2"}))
    result = CliRunner().invoke(main, ["plan", "--hypervisor", "libvirt", str(spec)])
    assert result.exit_code == 0, result.output
    domain = ET.fromstring(json.loads(result.output)["libvirt"]["domain"])
    assert [child.tag for child in domain.find("devices") or []] == [  # type: ignore[union-attr]
        "controller", "controller", "controller", "rng", "memballoon"]
