"""The planner with the core alone and with a vendor plugin registered through the hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest

from vmdev import hookimpl
from vmdev.backends.clh import ClhAttach
from vmdev.backends.firecracker import FirecrackerAttach
from vmdev.backends.qemu import SHARED_RAM_ID, QemuTarget
from vmdev.errors import ConfigError, InvalidIdError, UnsupportedError
from vmdev.models import Device, DeviceInfo
from vmdev.oci import OciMount, parse_spec
from vmdev.planner import plan
from vmdev.qemu import MemoryNeeds, QemuAttach, QmpCommand, opts, split_opts
from vmdev.settings import SandboxSettings
from vmdev.targets import ApiRequest, RenderTarget
from vmdev.testing import FakeHost


def spec(*devices: dict[str, Any], mounts: list[dict[str, Any]] | None = None) -> Any:
    return parse_spec({"linux": {"devices": list(devices)}, "mounts": mounts or []})


NULL = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}
FUSE = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}


def test_generic_devices_stay_in_the_container(fake_host: FakeHost, vmdev_plugins) -> None:
    fake_host.char_device(1, 3, "null")
    result = plan(spec(NULL, FUSE), host=fake_host.context(), plugins=vmdev_plugins())
    assert [(d.kind, d.container_path, d.host_path, d.plugin) for d in result.devices] == [
        ("generic", "/dev/null", "/dev/null", "vmdev.generic"),
        ("generic", "/dev/fuse", "/dev/fuse", "vmdev.generic"),
    ]
    assert result.qemu is not None
    assert list(result.qemu.argv) == ["-machine", "q35", "-m", "2048M"]
    data = result.to_json()
    assert set(data) == {"hypervisor", "devices", "qemu"}
    assert data["devices"][0]["dev_type"] == "c" and data["devices"][0]["hotplug"] is False


def test_a_container_path_listed_twice_is_refused(fake_host: FakeHost, vmdev_plugins) -> None:
    with pytest.raises(ConfigError, match="requested twice") as exc:
        plan(spec(NULL, NULL), host=fake_host.context(), plugins=vmdev_plugins())
    assert exc.value.device == "/dev/null"


@attrs.frozen
class Widget:
    """A vendor device family used to exercise the core's merging rules."""

    kind: ClassVar[str] = "widget"
    id: str
    size_mib: int = 0
    shared: bool = False
    machine: tuple[tuple[str, str], ...] = ()


class WidgetPlugin:
    """What a vendor ships: claims /dev/widget*, adds machine needs, renders every hypervisor."""

    @hookimpl
    def build_device(self, info: DeviceInfo) -> Device | None:
        if not info.container_path.startswith("/dev/widget"):
            return None
        n = info.minor
        machine = (("nvdimm", "on"),) if n < 10 else (("nvdimm", "off"),)
        return Widget(id=info.container_path.rsplit("/", 1)[-1], size_mib=64 * (n + 1), shared=n == 1,
                      machine=machine)

    @hookimpl
    def device_from_mount(self, mount: OciMount) -> DeviceInfo | None:
        if mount.source.startswith("/widgets/"):
            return DeviceInfo(container_path=mount.destination, dev_type="c", major=500, minor=2)
        return None

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget, hotplug: bool) -> Any:
        if not isinstance(device, Widget):
            return None
        if isinstance(target, QemuTarget):
            if hotplug:
                bus = target.hotplug_bus(device.id)
                return QemuAttach(
                    hotplug=[QmpCommand("device_add", {"driver": "widget", "id": device.id, "bus": bus})],
                    unplug=[QmpCommand("device_del", {"id": device.id})],
                    hotplugged=True,
                )
            return QemuAttach(
                args=["-device", opts("widget", {"id": device.id})],
                shared_args={"ctl": ("-device", "widget-controller")},
                machine=dict(device.machine),
                memory=MemoryNeeds(slots=1, maxmem_extra_mib=device.size_mib, shared=device.shared),
            )
        if target.hypervisor == "cloud-hypervisor":
            return ClhAttach(vm_config={"devices": [{"path": f"/w/{device.id}"}]},
                             hotplug=[ApiRequest("PUT", "/api/v1/vm.add-device", {"path": device.id})])
        return FirecrackerAttach(requests=[ApiRequest("PUT", f"/widgets/{device.id}", {})])


def widgets(*minors: int) -> list[dict[str, Any]]:
    return [{"path": f"/dev/widget{m}", "type": "c", "major": 500, "minor": m} for m in minors]


def run(fake_host: FakeHost, vmdev_plugins, *devices: dict[str, Any], **settings: Any) -> Any:
    pm = vmdev_plugins(extra=[("widget", WidgetPlugin())])
    return plan(spec(*devices), SandboxSettings(**settings), host=fake_host.context(), plugins=pm)


def test_vendor_plugin_machine_memory_and_shared_args_are_merged(fake_host: FakeHost, vmdev_plugins) -> None:
    result = run(fake_host, vmdev_plugins, *widgets(0, 1), memory_mib=512)
    argv = list(result.qemu.argv)
    assert argv[:4] == ["-machine", f"q35,nvdimm=on,memory-backend={SHARED_RAM_ID}", "-m", "512M,slots=2,maxmem=704M"]
    assert argv[4:6] == ["-object", f"memory-backend-memfd,id={SHARED_RAM_ID},size=512M,share=on"]
    assert argv.count("widget-controller") == 1
    assert argv[-4:] == ["-device", "widget,id=widget0", "-device", "widget,id=widget1"]
    assert [d.plugin for d in result.devices] == ["widget", "widget"]


def test_one_device_named_at_two_container_paths_is_attached_once_or_refused(
    fake_host: FakeHost, vmdev_plugins: Any
) -> None:
    """A widget (attached to the VM) at two paths would be two devices on one host device; /dev/null
    (generic: it stays in the container) may be named at as many paths as the spec likes."""
    twice = [{"path": "/dev/widget3", "type": "c", "major": 500, "minor": 3},
             {"path": "/dev/widget3-again", "type": "c", "major": 500, "minor": 3}]
    with pytest.raises(ConfigError) as exc:
        run(fake_host, vmdev_plugins, *twice)
    assert (exc.value.device, exc.value.field) == ("/dev/widget3-again", "path")
    assert str(exc.value) == ('/dev/widget3-again: path: is the same device (char 500:3) as "/dev/widget3": a plan '
                              "attaches a device to the VM once; name it once")
    fake_host.char_device(1, 3, "null")
    result = run(fake_host, vmdev_plugins, NULL, {**NULL, "path": "/dev/null2"}, *widgets(4))
    assert [(d.kind, d.container_path) for d in result.devices] == [
        ("generic", "/dev/null"), ("generic", "/dev/null2"), ("widget", "/dev/widget4")]


@pytest.mark.parametrize("destination", ["", "widget", "dev/widget"])
def test_a_mount_that_becomes_a_device_needs_an_absolute_destination(
    fake_host: FakeHost, vmdev_plugins: Any, destination: str
) -> None:
    pm = vmdev_plugins(extra=[("widget", WidgetPlugin())])
    mounts = [{"destination": "tmp", "type": "tmpfs", "source": "tmpfs"},  # not a device: not vmdev's concern
              {"destination": destination, "source": "/widgets/w"}]
    with pytest.raises(ConfigError) as exc:
        plan(spec(mounts=mounts), host=fake_host.context(), plugins=pm)
    assert exc.value.field == "$.mounts[1].destination" and "must be an absolute path" in str(exc.value)


def test_conflicting_machine_needs_are_an_error(fake_host: FakeHost, vmdev_plugins) -> None:
    with pytest.raises(UnsupportedError, match="nvdimm=off, but /dev/widget0 needs nvdimm=on") as exc:
        run(fake_host, vmdev_plugins, *widgets(0, 12))
    assert exc.value.device == "/dev/widget12"


def test_hotplug_allocates_root_ports_and_orders_unplug_in_reverse(fake_host: FakeHost, vmdev_plugins) -> None:
    result = run(fake_host, vmdev_plugins, *widgets(0, 1), hotplug=True)
    argv = list(result.qemu.argv)
    ports = [split_opts(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]
    assert ports == [
        ["pcie-root-port", "id=rp0", "bus=pcie.0", "chassis=1", "slot=1"],
        ["pcie-root-port", "id=rp1", "bus=pcie.0", "chassis=2", "slot=2"],
    ]
    assert [c.arguments["bus"] for c in result.qemu.hotplug] == ["rp0", "rp1"]
    assert [c.arguments["id"] for c in result.qemu.unplug] == ["widget1", "widget0"]
    assert all(d.hotplug for d in result.devices)


def test_hotplug_is_refused_on_microvm_and_capped_by_io_space(fake_host: FakeHost, vmdev_plugins) -> None:
    with pytest.raises(UnsupportedError, match="no hot plug"):
        run(fake_host, vmdev_plugins, *widgets(0), hotplug=True, machine_type="microvm")
    with pytest.raises(UnsupportedError, match="more than 16 PCIe root ports") as exc:
        run(fake_host, vmdev_plugins, *widgets(*range(17)), hotplug=True)
    assert exc.value.device == "widget16"


def test_pc_machine_hotplugs_without_root_ports(fake_host: FakeHost, vmdev_plugins) -> None:
    result = run(fake_host, vmdev_plugins, *widgets(0), hotplug=True, machine_type="pc")
    assert "pcie-root-port" not in " ".join(result.qemu.argv)
    assert result.qemu.hotplug[0].arguments["bus"] is None


def test_mounts_become_devices_through_plugins(fake_host: FakeHost, vmdev_plugins) -> None:
    pm = vmdev_plugins(extra=[("widget", WidgetPlugin())])
    result = plan(spec(mounts=[{"destination": "/dev/widget-m", "source": "/widgets/a"},
                               {"destination": "/data", "source": "/srv"}]),
                  host=fake_host.context(), plugins=pm)
    assert [d.container_path for d in result.devices] == ["/dev/widget-m"]


def test_duplicate_ids_are_refused(fake_host: FakeHost, vmdev_plugins) -> None:
    devices = [{"path": "/dev/widget0", "type": "c", "major": 500, "minor": 0},
               {"path": "/dev/x/widget0", "type": "c", "major": 500, "minor": 0}]
    pm = vmdev_plugins(extra=[("widget", WidgetPlugin())])
    # /dev/x/widget0 is not claimed (prefix differs) -> generic; make both widgets instead:
    devices[1]["path"] = "/dev/widget0"
    with pytest.raises(ConfigError):
        plan(spec(*devices), host=fake_host.context(), plugins=pm)
    bad = [{"path": "/dev/widget,0", "type": "c", "major": 500, "minor": 0}]
    with pytest.raises(InvalidIdError, match="not a valid QEMU id") as exc:
        plan(spec(*bad), host=fake_host.context(), plugins=pm)
    assert exc.value.device == "/dev/widget,0"


def test_cloud_hypervisor_and_firecracker_shapes(fake_host: FakeHost, vmdev_plugins) -> None:
    clh = run(fake_host, vmdev_plugins, *widgets(0, 1), hypervisor="cloud-hypervisor").to_json()
    assert set(clh) == {"hypervisor", "devices", "cloud_hypervisor"}
    assert clh["cloud_hypervisor"]["vm_config"] == {"devices": [{"path": "/w/widget0"}, {"path": "/w/widget1"}]}
    assert clh["cloud_hypervisor"]["hotplug"][1] == {
        "method": "PUT", "path": "/api/v1/vm.add-device", "body": {"path": "widget1"}}
    fc = run(fake_host, vmdev_plugins, *widgets(0), hypervisor="firecracker").to_json()
    assert fc["firecracker"]["requests"] == [{"method": "PUT", "path": "/widgets/widget0", "body": {}}]
