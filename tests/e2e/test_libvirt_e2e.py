"""vmdev-libvirt against a real libvirtd (``qemu:///system``, domain type ``qemu`` under TCG).

1. Every element the backend renders, for every built-in family, validates against libvirt's own
   RelaxNG schemas (virt-xml-validate) in one domain, which libvirtd also accepts (``virsh define``).
2. One rig guest: the planned domain boots through libvirt, and the guest sees the planned disk
   (serial and marker) and the RNG; ``vmdev attach --hypervisor libvirt --domain`` hot-plugs a
   second disk into a spare root port, which the guest sees and ``vmdev status --domain`` finds
   present; an attach libvirt refuses (QEMU's image lock) leaves
   nothing in the domain; ``vmdev detach`` removes the disk; ``virsh dumpxml`` (live and
   persistent) holds exactly the devices the sandbox's state file has attached.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from libvirt_support import (
    dumpxml,
    require_libvirt,
    rig_domain,
    rig_settings,
    running_domain,
    state_devices,
    user_aliases,
    validate,
    virsh,
    wait_report,
    wait_serial,
)
from vmdev_cli import oci_spec, plan, run_vmdev
from vmdev_rig import Rig

MIB = 1024 * 1024
FILE_OPTION = "io.katacontainers.fs-opt.block_device=file"


@pytest.fixture(scope="module", autouse=True)
def libvirtd() -> None:
    require_libvirt()


def file_disk(destination: str, image: Path) -> dict[str, Any]:
    return {"destination": destination, "source": str(image), "type": "bind", "options": [FILE_OPTION]}


# --- 1. the schema -----------------------------------------------------------------------------------
def every_family_domain() -> str:
    """One domain with an element of every kind the backend renders (through the plugin manager)."""
    from vmdev.models import PCIePort
    from vmdev.planner import PlannedDevice, assemble
    from vmdev.plugins import LoadPolicy, get_plugin_manager
    from vmdev.settings import SandboxSettings
    from vmdev_block import BlockDevice, BlockDrive
    from vmdev_libvirt import LibvirtTarget
    from vmdev_rng import RNGDev
    from vmdev_vfio import VFIODev, VFIODevice, VFIODeviceType
    from vmdev_vfio.device import VfioBackend
    from vmdev_vhostuser import VhostUserDeviceAttrs

    def drive(index: int, driver: str, **extra: Any) -> Any:
        d = BlockDrive(file=f"/img/{index}.raw", id=f"drive-{index}", index=index, read_only=index % 2 == 1,
                       nvdimm_id="0" if driver == "nvdimm" else "")
        return BlockDevice(id=d.id, container_path=f"/d{index}", host_path=d.file, driver=driver, major=-1,
                           minor=0, host_device=index == 1, size=8 * MIB, drive=d, **extra)

    def vfio(name: str, functions: list[Any]) -> Any:
        return VFIODevice(id=name, container_path=f"/dev/vfio/{name}", host_path=f"/dev/vfio/{name}",
                          backend=VfioBackend.GROUP, iommu_group="7", functions=functions, port=PCIePort.ROOT_PORT)

    devices = [
        drive(0, "virtio-blk"), drive(1, "virtio-blk"), drive(2, "virtio-scsi"), drive(3, "virtio-scsi"),
        drive(4, "nvdimm"),
        vfio("g7", [VFIODev(id="g7-0", bdf="0000:3b:00.0"), VFIODev(id="g7-1", bdf="0000:3b:00.1")]),
        vfio("m1", [VFIODev(id="m1-0", type=VFIODeviceType.MEDIATED,
                            sysfs_dev="/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")]),
        VhostUserDeviceAttrs(dev_id="vhublk-1", socket_path="/run/blk.sock", type="vhost-user-blk-pci", index=5,
                             reconnect_time=3),
        VhostUserDeviceAttrs(dev_id="vhufs-1", socket_path="/run/fs.sock", type="vhost-user-fs-pci",
                             tag="kataShared", queue_size=1024),
        VhostUserDeviceAttrs(dev_id="vhunet-1", socket_path="/run/net.sock", type="virtio-net-pci",
                             mac_address="52:54:00:12:34:56"),
        RNGDev(),
    ]
    pm = get_plugin_manager(LoadPolicy(only=("vmdev-libvirt", "vmdev-rng", "vmdev-block", "vmdev-vfio",
                                             "vmdev-vhostuser")))
    settings = pm.prepare_settings(SandboxSettings(hypervisor="libvirt", options={
        "libvirt_domain_type": "qemu", "libvirt_domain_name": f"vmdev-e2e-schema-{os.getpid()}",
        "hotplug_root_ports": 12}))
    target = LibvirtTarget(settings)
    planned = tuple(PlannedDevice(device=d, plugin="e2e", container_path=None, host_path="",
                                  attach=pm.attach_options(d, target, False, name=d.id)) for d in devices)
    result = assemble(settings, target, planned, plugins=pm)
    domain: str = result.to_json()["libvirt"]["domain"]
    return domain


def test_every_rendered_element_validates_and_libvirtd_defines_the_domain() -> None:
    domain = every_family_domain()
    tags = [child.tag for child in ET.fromstring(domain).find("devices") or []]
    assert {"disk", "memory", "hostdev", "filesystem", "interface", "rng", "controller"} <= set(tags)
    validate(domain)
    name = ET.fromstring(domain).findtext("name") or ""
    try:
        virsh("define", "--validate", "/dev/stdin", stdin=domain)
        defined = dumpxml(name, inactive=True)
        assert user_aliases(defined) == user_aliases(ET.fromstring(domain))
    finally:
        virsh("undefine", name, check=False)


# --- 2. a real guest ---------------------------------------------------------------------------------
def vmdev_json(*args: str) -> dict[str, Any]:
    done = run_vmdev(*args, "--json")
    assert done.returncode == 0, f"vmdev {' '.join(args)} failed: {done.stderr.strip()}"
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_a_planned_domain_boots_and_vmdev_hot_plugs_through_libvirt(
    rig: Rig, make_disk: Any, tmp_path: Path
) -> None:
    name = f"vmdev-e2e-{os.getpid()}"
    first, second = make_disk("first.img", 16, "QHLVFIRST"), make_disk("second.img", 8, "QHLVHOT")
    twin = tmp_path / "twin.img"
    os.link(second, twin)  # the same image under another name: QEMU's image lock refuses it
    config = tmp_path / "libvirt.toml"
    config.write_text(rig_settings(rig, name, wait=180, block_device_driver="virtio-blk",
                                   vmdev={"hotplug_root_ports": 4}))
    state, serial = tmp_path / "sandbox.json", tmp_path / "serial.log"
    data = plan(oci_spec(mounts=[file_disk("/data", first)]), tmp_path, "--config", str(config),
                "--state", str(state))
    domain = data["libvirt"]["domain"]
    validate(domain)
    (boot_disk,) = [d for d in data["devices"] if d["kind"] == "block"]
    live = ("--hypervisor", "libvirt", "--domain", name, "--state", str(state))

    with running_domain(rig_domain(domain, serial)):
        boot = wait_report(serial, lambda r: r.tag == "boot")
        assert boot.block_by_serial(boot_disk["id"]).marker == "QHLVFIRST"
        assert boot.rng.current.startswith("virtio_rng"), boot.rng
        # each behind a root port of its own (the guest numbers the buses itself, not as libvirt's indexes)
        parents = {v.driver: v.parent for v in boot.virtio}
        assert not any(parent.startswith("0000:00:") for parent in parents.values()), parents
        assert parents["virtio_blk"][:8] != parents["virtio_rng"][:8], parents
        wait_serial(serial, "QH-READY-FOR-HOTPLUG")

        disk = ("--type", "b", "--major", "-1", "--minor", "0")
        attached = vmdev_json("attach", *live, *disk, "--host-path", str(second), "/hot")
        hot_id = attached["device"]["id"]
        seen = wait_report(serial, lambda r: r.find_block(marker="QHLVHOT") is not None)
        assert seen.block_by_marker("QHLVHOT").serial == hot_id
        for inactive in (False, True):
            assert f"ua-{hot_id}" in user_aliases(dumpxml(name, inactive=inactive))
        (port,) = attached["device"]["attachment"]["buses"]  # a spare root port of the boot plan
        status = vmdev_json("status", "--state", str(state), "--domain", name)
        (hot,) = [d for d in status["devices"] if d["id"] == hot_id]
        assert hot["present"] == [{"object": f"disk ua-{hot_id}", "present": True}], hot
        (hot_disk,) = [d for d in dumpxml(name).iter("disk") if d.find(f"alias[@name='ua-{hot_id}']") is not None]
        assert int(hot_disk.find("address").get("bus"), 16) == int(port.removeprefix("pci."))  # type: ignore[union-attr,arg-type]

        before = user_aliases(dumpxml(name)), user_aliases(dumpxml(name, inactive=True))
        refused = run_vmdev("attach", *live, *disk, "--host-path", str(twin), "/twin")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "libvirt" in refused.stderr and "lock" in refused.stderr, refused.stderr
        assert (user_aliases(dumpxml(name)), user_aliases(dumpxml(name, inactive=True))) == before
        assert "/twin" not in {d.get("container_path") for d in state_devices(state)}

        vmdev_json("detach", *live, "--id", hot_id)
        gone = wait_report(serial, lambda r: r.find_block(marker="QHLVHOT") is None and r.tag != "boot")
        assert gone.block_by_marker("QHLVFIRST").serial == boot_disk["id"]
        attached_ids = {d["id"] for d in state_devices(state) if d.get("attach_count", 0) > 0}
        for inactive in (False, True):
            assert user_aliases(dumpxml(name, inactive=inactive)) == {f"ua-{i}" for i in attached_ids}
