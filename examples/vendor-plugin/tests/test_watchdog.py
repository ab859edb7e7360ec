"""The example vendor plugin, with only vmdev and itself installed."""

from __future__ import annotations

from typing import Any

import pytest

from vmdev import hookimpl
from vmdev.backend import Backend
from vmdev.errors import PluginError, UnsupportedError
from vmdev.oci import parse_spec
from vmdev.planner import Pipeline, plan
from vmdev.resources import Allocator
from vmdev.serialize import to_json
from vmdev.settings import SandboxSettings
from vmdev.targets import RenderTarget
from vmdev.testing import FakeHost

SPEC = parse_spec({"linux": {"devices": [{"path": "/dev/watchdog", "type": "c", "major": 10, "minor": 130}]}})


@pytest.fixture
def run(fake_host: FakeHost, vmdev_plugins: Any) -> Any:
    fake_host.char_device(10, 130, "watchdog")
    pm = vmdev_plugins("acme-vmdev-watchdog")
    return lambda **settings: plan(SPEC, SandboxSettings(**settings), host=fake_host.context(), plugins=pm)


def test_found_through_its_entry_point(vmdev_plugins: Any) -> None:
    info = {i.name: i for i in vmdev_plugins("acme-vmdev-watchdog").list_plugins()}["watchdog"]
    assert (info.distribution, info.hooks) == (
        "acme-vmdev-watchdog", ("attach_options", "build_device", "device_from_state"))


def test_qemu_cold_and_hot(run: Any) -> None:
    cold = run(memory_mib=256)
    (device,) = cold.devices
    assert (device.kind, device.plugin, device.host_path) == ("watchdog", "watchdog", "/dev/watchdog")
    assert list(cold.qemu.argv[-2:]) == ["-device", f"i6300esb,id={device.id}"]
    hot = run(hotplug=True)
    assert [c.to_json() for c in hot.qemu.hotplug] == [
        {"execute": "device_add", "arguments": {"driver": "i6300esb", "id": device.id, "bus": "rp0"}}
    ]


def test_other_hypervisors(run: Any) -> None:
    assert run(hypervisor="cloud-hypervisor").to_json()["cloud_hypervisor"]["vm_config"] == {"watchdog": True}
    with pytest.raises(UnsupportedError, match="firecracker has no watchdog device"):
        run(hypervisor="firecracker")
    with pytest.raises(UnsupportedError, match="no PCI bus"):
        run(machine_type="microvm")


def test_without_the_plugin_the_device_stays_generic(fake_host: FakeHost, vmdev_plugins: Any) -> None:
    fake_host.char_device(10, 130, "watchdog")
    result = plan(SPEC, host=fake_host.context(), plugins=vmdev_plugins())
    assert [d.kind for d in result.devices] == ["generic"]


def test_a_saved_watchdog_is_rebuilt_without_the_host(fake_host: FakeHost, vmdev_plugins: Any) -> None:
    fake_host.char_device(10, 130, "watchdog")
    pm = vmdev_plugins("acme-vmdev-watchdog")
    pipeline = Pipeline.start(SandboxSettings(), fake_host.context(), pm)
    built = pipeline.build(pipeline.resolve(SPEC.devices[0]), Allocator())
    saved = to_json(built.device)
    assert saved == {"id": built.device.id, "container_path": "/dev/watchdog"}
    (fake_host.dev / "watchdog").unlink()
    assert pm.device_from_state("watchdog", saved, "watchdog", name="/dev/watchdog") == built.device


class _ToyTarget(RenderTarget):
    hypervisor = "toy"


class _ToyBackend:
    """A backend this vendor does not know: the watchdog is declined, not refused."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(Backend(name="toy", description="renders nothing", target=_ToyTarget, assemble=_unused))


def _unused(*args: Any) -> Any:
    raise AssertionError("nothing is rendered, so nothing is assembled")


def test_an_unknown_backend_is_left_to_its_own_plugin(fake_host: FakeHost, vmdev_plugins: Any) -> None:
    fake_host.char_device(10, 130, "watchdog")
    pm = vmdev_plugins("acme-vmdev-watchdog", extra=[("toy", _ToyBackend())])
    with pytest.raises(PluginError) as exc:
        plan(SPEC, SandboxSettings(hypervisor="toy"), host=fake_host.context(), plugins=pm)
    assert str(exc.value) == (
        "/dev/watchdog: hypervisor: no plugin renders watchdog devices for the toy backend (neither the "
        "plugin that built it nor the backend's plugin answered attach_options)"
    )
