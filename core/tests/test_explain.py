"""``vmdev explain``: which plugin claimed each device and through which hook, what decided its options
(settings keys, host facts, limits), and nothing of it in a plain plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from click.testing import CliRunner

from vmdev import hookimpl
from vmdev.backends.qemu import QemuTarget
from vmdev.cli import main
from vmdev.explain import MACHINE, Decision, ExplainNotes, decide, explain, explaining
from vmdev.models import Device, DeviceInfo
from vmdev.oci import parse_spec
from vmdev.pcie import Bar, BarKind, BarSpace
from vmdev.planner import plan
from vmdev.qemu import QemuAttach, opts
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget
from vmdev.testing import FakeHost, PluginFactory

GPU_BAR = Bar(function="0000:41:00.0", index=2, size=256 << 30, kind=BarKind.PREF, is64=True)


@attrs.frozen
class Widget:
    kind: ClassVar[str] = "widget"
    id: str


class Widgets:
    """A family that claims /dev/widget* and says why it puts each on a root port of its own."""

    seen: ClassVar[list[bool]] = []

    @hookimpl
    def build_device(self, info: DeviceInfo) -> Device | None:
        return Widget(id="widget0") if info.container_path.startswith("/dev/widget") else None

    @hookimpl
    def host_facts(self, device: Device) -> dict[str, str] | None:
        return {"widget firmware": "1.2"} if isinstance(device, Widget) else None

    @hookimpl
    def attach_options(self, device: Device, target: RenderTarget, hotplug: bool) -> Any:
        if not isinstance(device, Widget) or not isinstance(target, QemuTarget):
            return None
        Widgets.seen.append(explaining(target))
        bus = target.topology.root_port("/dev/widget", bars=BarSpace(pref64=GPU_BAR.size, large=[GPU_BAR]))
        decide(target, "/dev/widget", f"bus={bus}", "widgets take a root port of their own",
               settings={"widget_port": "root-port"}, facts={"/sys/widget/numa_node": "1"},
               limits=["one widget a port"])
        return QemuAttach(args=["-device", opts("widget", {"id": device.id, "bus": bus})])


def spec(host: FakeHost) -> Any:
    host.char_device(240, 3, "widget")
    host.char_device(10, 200, "net/tun")
    return parse_spec({"linux": {"devices": [{"path": "/dev/widget", "type": "c", "major": 240, "minor": 3},
                                             {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200}]}})


def test_explain_says_who_claimed_each_device_and_what_decided_its_options(
        fake_host: FakeHost, vmdev_plugins: PluginFactory) -> None:
    pm = vmdev_plugins(extra=[("widgets", Widgets())])
    result = explain(spec(fake_host), SandboxSettings(), host=fake_host.context(), plugins=pm)
    widget, tun = result.devices
    assert (widget.name, widget.plugin, widget.hook, widget.plug) == (
        "/dev/widget", "widgets", "build_device (OCI linux.devices)", "cold: present when the VM boots")
    assert widget.resolved_by == "the core (Kata's GetHostPath through /sys/dev)"
    assert widget.host_facts == {"node.type": "char", "node.rdev": "240:3", "widget firmware": "1.2"}
    assert widget.decisions == (Decision(option="bus=rp0", because="widgets take a root port of their own",
                                         settings={"widget_port": "root-port"},
                                         facts={"/sys/widget/numa_node": "1"}, limits=("one widget a port",)),)
    assert widget.places[0] == "rp0: pcie-root-port on pcie.0 (chassis 1)"
    assert widget.places[1].startswith("limits: pcie.0 has 30 free slots, 1 used; 1 of 16 ports and bridges")
    assert widget.options == ("-device widget,id=widget0,bus=rp0",)
    assert (tun.plugin, tun.plug) == ("vmdev.generic", "no: it stays a container device (nothing attaches to the VM)")
    # the machine's decisions: the 64-bit PCI window the widget's BAR needs
    (window,) = result.machine
    assert window.option == "no option: 40 address bits suffice"
    assert window.because.startswith("64-bit PCI window (SeaBIOS): rp0 256 GiB, holds /dev/widget")
    assert result.notes == (window.because,)
    data = json.loads(json.dumps(result.to_json()))
    assert data["devices"][0]["decisions"][0]["settings"] == {"widget_port": "root-port"}
    assert data["machine"][0]["limits"] == ["at most 52 physical address bits (SeaBIOS and QEMU)",
                                            "QEMU's default phys-bits: 40"]
    text = result.text()
    assert "/dev/widget  (widget widget0)\n  claimed by plugin 'widgets' through build_device (OCI linux.devices)" in text
    assert "    bus=rp0\n      because: widgets take a root port of their own\n" \
           "      setting: widget_port = \"root-port\"\n      fact: /sys/widget/numa_node = '1'\n" \
           "      limit: one widget a port\n" in text
    assert "  decisions: none recorded by plugin 'vmdev.generic'" in text
    assert text.index("machine (qemu):") > text.index("/dev/net/tun")


def test_a_plain_plan_records_nothing_and_is_what_explain_planned(
        fake_host: FakeHost, vmdev_plugins: PluginFactory) -> None:
    pm = vmdev_plugins(extra=[("widgets", Widgets())])
    Widgets.seen.clear()
    planned = plan(spec(fake_host), SandboxSettings(), host=fake_host.context(), plugins=pm)
    explained = explain(spec(fake_host), SandboxSettings(), host=fake_host.context(), plugins=pm)
    assert Widgets.seen == [False, True]
    assert explained.plan.to_json() == planned.to_json()
    target = QemuTarget(SandboxSettings())
    decide(target, MACHINE, "x", "y")  # outside explain: nothing is kept anywhere
    assert not isinstance(target.context.notes, ExplainNotes)


def test_vmdev_explain_takes_plans_arguments(fake_host: FakeHost, tmp_path: Path) -> None:
    spec(fake_host)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"linux": {"devices": [
        {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200}]}}))
    args = ["explain", "--sysfs-root", str(fake_host.sysfs), "--memory", "512", str(config)]
    runner = CliRunner()
    text = runner.invoke(main, args)
    assert text.exit_code == 0, text.output
    assert text.output.startswith("/dev/net/tun  (generic generic-")
    assert "claimed by plugin 'vmdev.generic' through build_device (OCI linux.devices)" in text.output
    data = runner.invoke(main, [*args, "--json"])
    assert data.exit_code == 0, data.output
    assert json.loads(data.output)["devices"][0]["host_facts"]["node.rdev"] == "10:200"
    missing = runner.invoke(main, ["explain", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and missing.output.startswith("vmdev: error:")


@pytest.mark.parametrize("hook", ["device_from_mount", "device_requests"])
def test_a_request_an_input_plugin_made_says_which_hook_made_it(
        hook: str, fake_host: FakeHost, vmdev_plugins: PluginFactory) -> None:
    fake_host.char_device(10, 200, "net/tun")
    info = DeviceInfo(container_path="/dev/net/tun", dev_type="c", major=10, minor=200)

    class Source:
        @hookimpl
        def device_from_mount(self, mount: Any) -> DeviceInfo | None:
            return info if hook == "device_from_mount" and mount.destination == "/dev/net/tun" else None

        @hookimpl
        def device_requests(self) -> list[DeviceInfo]:
            return [info] if hook == "device_requests" else []

    pm = vmdev_plugins(extra=[("source", Source())])
    oci = parse_spec({"mounts": [{"destination": "/dev/net/tun", "source": "/dev/net/tun", "type": "bind"}]})
    (device,) = explain(oci, SandboxSettings(), host=fake_host.context(), plugins=pm).devices
    assert device.hook.startswith(f"{hook}, then build_device (input plugin 'source')")
