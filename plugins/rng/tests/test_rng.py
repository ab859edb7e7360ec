"""vmdev-rng with only the core installed: settings, every hypervisor, escaping, saved state.

Tests that build plans keep their names: the golden corpus (tests/golden) is keyed by them.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from vmdev import hookimpl
from vmdev.backend import Backend, RenderContext
from vmdev.cli import main
from vmdev.errors import ConfigError, DeviceError, PluginError, UnsupportedError
from vmdev.models import GenericDevice
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.qemu import split_opts
from vmdev.serialize import to_json
from vmdev.settings import SandboxSettings, load_settings
from vmdev.targets import RenderTarget
from vmdev.testing import FakeHost
from vmdev_rng import RNG_ID, RNGDev
from vmdev_rng import plugin as rng_plugin

EMPTY = parse_spec({})


@pytest.fixture
def run(fake_host: FakeHost, vmdev_plugins) -> Any:
    fake_host.dev_file("urandom")
    fake_host.dev_file("random")
    pm = vmdev_plugins("vmdev-rng")

    def run(**settings: Any) -> Any:
        return plan(EMPTY, SandboxSettings(**settings), host=fake_host.context(), plugins=pm)

    return run


def test_the_plugin_is_found_through_its_entry_point(vmdev_plugins) -> None:
    info = {i.name: i for i in vmdev_plugins("vmdev-rng").list_plugins()}["rng"]
    assert info.distribution == "vmdev-rng"
    assert info.hooks == (
        "attach_options", "check_settings", "device_from_state", "host_facts", "register_settings",
        "sandbox_devices",
    )


def test_default_qemu_cold_plug(run: Any) -> None:
    result = run()
    (dev,) = result.devices
    assert (dev.kind, dev.id, dev.plugin, dev.host_path, dev.container_path) == ("rng", "rng0", "rng", "/dev/urandom", None)
    assert list(result.qemu.argv[4:]) == [
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0,id=virtio-rng0",
    ]
    assert result.qemu.hotplug == () and result.qemu.unplug == ()


@pytest.mark.parametrize(("machine", "driver"), [("microvm", "virtio-rng-device"), ("pc", "virtio-rng-pci")])
def test_transport_variants(run: Any, machine: str, driver: str) -> None:
    argv = run(machine_type=machine).qemu.argv
    assert argv[argv.index("-device") + 1] == f"{driver},rng=rng0,id=virtio-rng0"


def test_an_s390x_guest_gets_no_rng_device_as_in_kata(run: Any) -> None:
    result = run(machine_type="s390-ccw-virtio")  # s390x guests draw entropy from CPACF
    assert result.devices == () and "-device" not in result.qemu.argv


def test_a_confidential_qemu_guest_gets_no_rng_as_in_kata(run: Any) -> None:
    assert run(options={"confidential_guest": True}).devices == ()
    assert [d.kind for d in run(options={"confidential_guest": False}).devices] == ["rng"]


def test_cloud_hypervisors_rng_follows_enable_iommu(run: Any) -> None:
    on = run(hypervisor="cloud-hypervisor", options={"enable_iommu": True}).cloud_hypervisor.config["rng"]
    assert on == {"src": "/dev/urandom", "iommu": True}


def test_qemu_hotplug_commands(run: Any) -> None:
    result = run(hotplug=True, options={"entropy_source": "/dev/random"})
    assert [c.to_json() for c in result.qemu.hotplug] == [
        {"execute": "object-add", "arguments": {"qom-type": "rng-random", "id": "rng0", "filename": "/dev/random"}},
        {"execute": "device_add", "arguments": {"driver": "virtio-rng-pci", "id": "virtio-rng0", "rng": "rng0", "bus": "rp0"}},
    ]
    assert [c.to_json() for c in result.qemu.unplug] == [
        {"execute": "device_del", "arguments": {"id": "virtio-rng0"}},
        {"execute": "object-del", "arguments": {"id": "rng0"}},
    ]
    assert "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1" in result.qemu.argv
    assert result.devices[0].hotplug is True


def test_microvm_cannot_hotplug_so_the_rng_is_cold_plugged(run: Any) -> None:
    result = run(hotplug=True, machine_type="microvm")
    assert result.qemu.hotplug == ()
    assert "virtio-rng-device,rng=rng0,id=virtio-rng0" in result.qemu.argv


def test_empty_source_lets_qemu_choose(run: Any) -> None:
    argv = run(options={"entropy_source": ""}).qemu.argv
    assert "rng-random,id=rng0" in argv


def test_unknown_entropy_source_is_refused(run: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        run(options={"entropy_source": "/dev/hwrng"})
    assert str(exc.value).startswith("rng0: entropy_source: '/dev/hwrng' is not an allowed entropy source")


def test_valid_sources_are_configurable_and_values_escaped(run: Any, fake_host: FakeHost) -> None:
    weird = "/dev/odd,filename=/etc/shadow"
    fake_host.dev_file("odd,filename=/etc/shadow")
    argv = run(options={"entropy_source": weird, "valid_entropy_sources": [weird]}).qemu.argv
    backend = argv[argv.index("-object") + 1]
    assert split_opts(backend) == ["rng-random", "id=rng0", f"filename={weird}"]


def test_entropy_source_must_exist_on_the_host(run: Any, fake_host: FakeHost) -> None:
    (fake_host.dev / "random").unlink()
    with pytest.raises(DeviceError, match="entropy source /dev/random is not usable on this host") as exc:
        run(options={"entropy_source": "/dev/random"})
    assert exc.value.device == "rng0" and exc.value.field == "entropy_source"


@pytest.mark.parametrize("source", ["/dev/\ud800x", "/dev/ran\ndom", "/dev/random\x1b[2J", "/dev/x\x7f"])
def test_an_entropy_source_no_file_can_have_is_one_line_naming_the_key(run: Any, source: str) -> None:
    with pytest.raises(ConfigError) as exc:
        run(options={"entropy_source": source, "valid_entropy_sources": [source]})
    assert exc.value.field == "entropy_source"
    assert "\n" not in str(exc.value) and str(exc.value).isprintable()


def test_a_source_the_stat_cannot_encode_is_a_device_error(fake_host: FakeHost) -> None:
    from vmdev_rng.host import check_entropy_source

    with pytest.raises(DeviceError) as exc:
        check_entropy_source("/dev/\ud800", fake_host.context(), device=RNG_ID)
    assert (exc.value.device, exc.value.field) == (RNG_ID, "entropy_source")
    assert "not a file name" in str(exc.value)


@pytest.mark.parametrize("bad", [5, None, [1]])
def test_bad_setting_types(run: Any, bad: Any) -> None:
    key = "valid_entropy_sources" if isinstance(bad, list) else "entropy_source"
    if bad is None:
        key, bad = "valid_entropy_sources", "/dev/urandom"
    with pytest.raises(ConfigError) as exc:
        run(options={key: bad})
    assert exc.value.field == key


def test_cloud_hypervisor(run: Any) -> None:
    data = run(hypervisor="cloud-hypervisor", hotplug=True).to_json()["cloud_hypervisor"]
    assert data == {"vm_config": {"rng": {"src": "/dev/urandom", "iommu": False}}, "hotplug": [], "unplug": []}
    assert run(hypervisor="cloud-hypervisor", options={"entropy_source": ""}).to_json()[
        "cloud_hypervisor"]["vm_config"]["rng"]["src"] == "/dev/urandom"


def test_firecracker(run: Any) -> None:
    data = run(hypervisor="firecracker").to_json()["firecracker"]
    assert data["requests"] == [{"method": "PUT", "path": "/entropy", "body": {}}]
    with pytest.raises(UnsupportedError, match="host kernel's CSPRNG"):
        run(hypervisor="firecracker", options={"entropy_source": "/dev/random"})


def test_kata_configuration_keys(tmp_path: Any, fake_host: FakeHost, vmdev_plugins) -> None:
    fake_host.dev_file("random")
    config = tmp_path / "configuration.toml"
    config.write_text('[hypervisor.qemu]\nentropy_source = "/dev/random"\nvalid_entropy_sources = ["/dev/random"]\n')
    result = plan(EMPTY, load_settings(config), host=fake_host.context(), plugins=vmdev_plugins("vmdev-rng"))
    assert "rng-random,id=rng0,filename=/dev/random" in result.qemu.argv


def test_the_settings_keys_are_declared_with_their_kata_keys_and_flag(vmdev_plugins) -> None:
    declared = {d.setting.name: d for d in vmdev_plugins("vmdev-rng").declared_settings() if d.plugin == "rng"}
    assert sorted(declared) == ["entropy_source", "valid_entropy_sources"]
    source, valid = declared["entropy_source"].setting, declared["valid_entropy_sources"].setting
    assert (source.type, source.default, source.kata_key, source.flag) == (
        "string", "/dev/urandom", "entropy_source", "--entropy-source")
    assert (valid.type, valid.default, valid.kata_key, valid.flag) == (
        "list of strings", ("/dev/urandom", "/dev/random", ""), "valid_entropy_sources", "")


def test_a_wrong_type_is_one_line_naming_the_key(run: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        run(options={"valid_entropy_sources": "/dev/urandom"})
    assert str(exc.value) == "valid_entropy_sources: must be a list of strings, got '/dev/urandom'"


def test_the_entropy_source_flag_sets_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-rng")
    config = tmp_path / "config.json"
    config.write_text("{}")
    result = CliRunner().invoke(main, ["plan", "--entropy-source", "/dev/hwrng", str(config)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "vmdev: error: rng0: entropy_source: '/dev/hwrng' is not an allowed entropy source "
        "(valid_entropy_sources: '/dev/urandom', '/dev/random', '')"
    ]


@pytest.mark.parametrize("source", ["/dev/random", ""])
def test_the_device_is_rebuilt_from_its_saved_form(vmdev_plugins, source: str) -> None:
    device = RNGDev(filename=source)
    saved = to_json(device)
    assert saved == {"id": RNG_ID, "filename": source}
    rebuilt = vmdev_plugins("vmdev-rng").device_from_state("rng", saved, "rng", name=RNG_ID)
    assert rebuilt == device


def test_other_saved_kinds_are_left_to_their_families(vmdev_plugins) -> None:
    with pytest.raises(PluginError, match="no plugin rebuilds saved block devices"):
        vmdev_plugins("vmdev-rng").device_from_state("block", {"id": "x"}, "block", name="x")


def test_no_host_facts_beyond_the_entropy_source_node(vmdev_plugins, fake_host: FakeHost) -> None:
    pm = vmdev_plugins("vmdev-rng")
    host = fake_host.context()
    assert pm.host_facts(RNGDev(), host, name=RNG_ID) == {}
    other = GenericDevice(id="null0", container_path="/dev/null", host_path="/dev/null", dev_type="c", major=1, minor=3)
    assert rng_plugin.host_facts(other, host) is None  # not ours: another family may answer


class _ToyTarget(RenderTarget):
    hypervisor = "toy"


class _ToyBackend:
    """A backend whose plugin renders nothing: the RNG must not be rendered for it by mistake."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(Backend(name="toy", description="renders nothing", target=_target, assemble=_refuse))


def _target(settings: SandboxSettings, context: RenderContext) -> RenderTarget:
    return _ToyTarget(settings, context)


def _refuse(*args: Any) -> Any:
    raise AssertionError("no device was rendered, so nothing is assembled")


def test_a_backend_nobody_renders_for_is_an_error_naming_device_and_backend(fake_host: FakeHost, vmdev_plugins) -> None:
    fake_host.dev_file("urandom")
    pm = vmdev_plugins("vmdev-rng", extra=[("toy", _ToyBackend())])
    with pytest.raises(PluginError) as exc:
        plan(EMPTY, SandboxSettings(hypervisor="toy"), host=fake_host.context(), plugins=pm)
    assert str(exc.value).startswith("rng0: hypervisor: no plugin renders rng devices for the toy backend")
