"""Kata's VFIO keys: declared once, typed by the core, and the rules across them (minus Kata's quirks)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import ConfigError
from vmdev.models import PCIePort
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.plugins import LoadPolicy, PluginManager
from vmdev.settings import SandboxSettings, load_settings
from vmdev.testing import FakeHost
from vmdev_vfio.config import VfioConfig, read_config
from vmdev_vfio.device import VFIOMode
from vmdev_vfio.testing import group_request, vfio_group


@cache
def plugins() -> PluginManager:
    return PluginManager(LoadPolicy(only=("vmdev-vfio",))).load()


def config(hypervisor: str = "qemu", runtime: dict[str, Any] | None = None, **options: Any) -> VfioConfig:
    """The VFIO config of these settings, prepared by the core (parsed, typed, checked)."""
    settings = SandboxSettings(hypervisor=hypervisor, options=options, runtime=runtime or {})
    return read_config(plugins().prepare_settings(settings))


def test_every_key_is_declared_with_the_kata_key_and_section_it_mirrors() -> None:
    declared = {d.setting.name: d for d in plugins().declared_settings() if d.plugin == "vfio"}
    assert {name: (d.setting.kata_key, d.setting.section) for name, d in declared.items()} == {
        "hot_plug_vfio": ("hot_plug_vfio", "hypervisor"),
        "cold_plug_vfio": ("cold_plug_vfio", "hypervisor"),
        "pcie_root_port": ("pcie_root_port", "hypervisor"),
        "pcie_switch_port": ("pcie_switch_port", "hypervisor"),
        "vfio_mode": ("vfio_mode", "runtime"),
    }
    assert declared["hot_plug_vfio"].setting.choices == ("no-port", "bridge-port", "root-port", "switch-port")
    assert (declared["pcie_root_port"].setting.minimum, declared["pcie_root_port"].setting.maximum) == (0, 16)


def test_enable_iommu_and_confidential_guest_are_the_qemu_backends_keys_and_read_for_every_backend() -> None:
    owners = {d.setting.name: (d.plugin, d.setting.backends) for d in plugins().declared_settings()}
    assert owners["enable_iommu"] == owners["confidential_guest"] == ("vmdev.backend.qemu", ())
    assert config(enable_iommu=True).iommu and not config().iommu
    assert config(confidential_guest=True).confidential
    assert not config(confidential_guest=True, hypervisor="cloud-hypervisor").confidential  # Kata: QEMU only


def test_defaults() -> None:
    assert config() == VfioConfig(hot_plug=PCIePort.NO_PORT, cold_plug=PCIePort.NO_PORT, root_ports=0,
                                  switch_ports=0, mode=VFIOMode.GUEST_KERNEL, iommu=False)
    assert config(hot_plug_vfio="", cold_plug_vfio="").port is PCIePort.NO_PORT


def test_port_selection() -> None:
    cold = config(cold_plug_vfio="bridge-port")
    assert (cold.coldplug_all, cold.port) == (True, PCIePort.BRIDGE_PORT)
    hot = config(hot_plug_vfio="switch-port", pcie_switch_port=4, pcie_root_port=2)
    assert (hot.coldplug_all, hot.port, hot.reserved_ports) == (False, PCIePort.SWITCH_PORT,
                                                              (PCIePort.SWITCH_PORT, 4))
    assert config(hot_plug_vfio="root-port", pcie_root_port=2).reserved_ports == (PCIePort.ROOT_PORT, 2)
    assert config(pcie_root_port=2).reserved_ports == (PCIePort.NO_PORT, 0)


def test_only_one_of_hot_and_cold_plug() -> None:
    with pytest.raises(ConfigError) as exc:
        config(hot_plug_vfio="root-port", cold_plug_vfio="bridge-port")
    # Kata swaps the two values in this message; vmdev names each with its key
    assert str(exc.value) == ("hot_plug_vfio: invalid hot-plug=root-port and cold-plug=bridge-port settings, "
                              "only one of them can be set")


@pytest.mark.parametrize("key", ["hot_plug_vfio", "cold_plug_vfio"])
def test_invalid_port_values_name_their_key(key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(**{key: "invalid-port"})
    assert str(exc.value) == (f"{key}: 'invalid-port' is not one of 'no-port', 'bridge-port', 'root-port', "
                              "'switch-port'")
    with pytest.raises(ConfigError, match="must be a string") as exc:
        config(**{key: 1})
    assert exc.value.field == key


def test_cloud_hypervisor_takes_root_ports_only() -> None:
    assert config("cloud-hypervisor", hot_plug_vfio="root-port").port is PCIePort.ROOT_PORT
    with pytest.raises(ConfigError, match="only cold-plug=no-port or root-port supported on CLH, got switch-port"):
        config("cloud-hypervisor", cold_plug_vfio="switch-port")
    with pytest.raises(ConfigError, match="only hot-plug=no-port or root-port supported on CLH, got bridge-port"):
        config("cloud-hypervisor", hot_plug_vfio="bridge-port")


def test_firecracker_ignores_the_port_rules_as_kata_does() -> None:
    assert config("firecracker", hot_plug_vfio="root-port", cold_plug_vfio="root-port").coldplug_all


@pytest.mark.parametrize(("value", "message"), [
    (-1, "must be a number from 0 to 16, got -1"), (17, "must be a number from 0 to 16, got 17"),
    (True, "must be an integer, got True"), ("4", "must be an integer, got '4'"),
    (2.0, "must be an integer, got 2.0"),
])
@pytest.mark.parametrize("key", ["pcie_root_port", "pcie_switch_port"])
def test_port_counts(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(**{key: value})
    assert str(exc.value) == f"{key}: {message}"
    assert getattr(config(**{key: 16}), "root_ports" if key == "pcie_root_port" else "switch_ports") == 16


def test_vfio_mode_and_iommu() -> None:
    assert config(runtime={"vfio_mode": "vfio"}).mode is VFIOMode.VFIO
    with pytest.raises(ConfigError) as exc:
        config(runtime={"vfio_mode": "kernel"})
    assert str(exc.value) == "vfio_mode: 'kernel' is not one of 'vfio', 'guest-kernel'"
    assert config(enable_iommu=True).iommu
    with pytest.raises(ConfigError, match="must be true or false") as exc:
        config(enable_iommu="yes")
    assert exc.value.field == "enable_iommu"


def test_vfio_mode_outside_runtime_is_refused_with_where_it_goes(tmp_path: Path) -> None:
    # vmdev read it from the hypervisor section or [vmdev] before; ignoring it now would change
    # silently what the guest does with the devices
    with pytest.raises(ConfigError) as exc:
        config(vfio_mode="vfio")
    assert str(exc.value) == ("vfio_mode: is read from Kata's [runtime] table; move vfio_mode = 'vfio' there "
                              "(the hypervisor section and [vmdev] no longer set it)")
    toml = tmp_path / "configuration.toml"
    toml.write_text('[hypervisor.qemu]\n[vmdev]\nvfio_mode = "vfio"\n')
    with pytest.raises(ConfigError, match=r"vfio_mode: is read from Kata's \[runtime\] table"):
        plugins().prepare_settings(load_settings(toml, plugins=plugins()))


def test_settings_are_checked_before_planning_even_without_vfio_devices(vmdev_plugins, fake_host: FakeHost) -> None:
    with pytest.raises(ConfigError, match="only one of them can be set"):
        plan(parse_spec({}), SandboxSettings(options={"hot_plug_vfio": "root-port", "cold_plug_vfio": "root-port"}),
             host=fake_host.context(), plugins=vmdev_plugins("vmdev-vfio"))


def test_kata_configuration_toml(tmp_path: Path, l1_host: FakeHost, vmdev_plugins) -> None:
    toml = tmp_path / "configuration.toml"
    toml.write_text('[hypervisor.qemu]\nmachine_type = "q35"\nhot_plug_vfio = "root-port"\npcie_root_port = 2\n'
                    '[runtime]\nvfio_mode = "vfio"\n[vmdev]\nhotplug = true\n')
    pm = vmdev_plugins("vmdev-vfio")
    settings = load_settings(toml, plugins=pm)
    result = plan(parse_spec({"linux": {"devices": [group_request(8)]}}), settings, host=l1_host.context(),
                  plugins=pm)
    data = result.to_json()
    vfio = data["devices"][0]
    assert (vfio["hotplug"], vfio["port"], vfio["vfio_mode"], vfio["agent_type"]) == (True, "root-port", "vfio",
                                                                                  "vfio-pci")
    assert data["devices"][1]["spare"] == ["rp1"]
    assert data["qemu"]["hotplug"][0]["arguments"]["bus"] == "rp0"


def test_a_plan_reads_the_vfio_settings_once_not_once_per_device_and_again_to_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue saw the settings parsed twice per VFIO device (build, then render)."""
    import vmdev_vfio.config as config_module

    host = FakeHost(tmp_path)
    requests = []
    for n in range(3):
        host.pci_function(f"0000:01:{n:02x}.0", driver="vfio-pci", iommu_group=n, config_size=4096)
        vfio_group(host, n, 241, n)
        requests.append({"path": f"/dev/vfio/{n}", "type": "c", "major": 241, "minor": n})
    reads: list[SandboxSettings] = []
    read = config_module._read
    monkeypatch.setattr(config_module, "_read", lambda settings: reads.append(settings) or read(settings))
    settings = SandboxSettings(hypervisor="cloud-hypervisor", options={"enable_iommu": True})
    built = plan(parse_spec({"linux": {"devices": requests}}), settings, host=host.context(), plugins=plugins())
    assert [c["iommu"] for c in built.to_json()["cloud_hypervisor"]["vm_config"]["devices"]] == [True] * 3
    assert len(reads) == 1
    other = SandboxSettings(hypervisor="cloud-hypervisor")
    built = plan(parse_spec({"linux": {"devices": requests}}), other, host=host.context(), plugins=plugins())
    assert [c["iommu"] for c in built.to_json()["cloud_hypervisor"]["vm_config"]["devices"]] == [False] * 3
    assert len(reads) == 2
