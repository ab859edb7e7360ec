"""Kata's VFIO keys and their validation errors (minus Kata's quirks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import ConfigError
from vmdev.models import PCIePort, VFIOMode
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.settings import SandboxSettings, load_settings
from vmdev.testing import FakeHost
from vmdev_vfio.config import VfioConfig, read_config
from vmdev_vfio.testing import group_request


def config(hypervisor: str = "qemu", **options: Any) -> VfioConfig:
    return read_config(SandboxSettings(hypervisor=hypervisor, options=options))


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
    assert str(exc.value) == (f"{key}: invalid {key}=invalid-port setting, allowed values no-port, "
                              "bridge-port, root-port, switch-port")
    with pytest.raises(ConfigError, match="must be a string"):
        config(**{key: 1})


def test_cloud_hypervisor_takes_root_ports_only() -> None:
    assert config("cloud-hypervisor", hot_plug_vfio="root-port").port is PCIePort.ROOT_PORT
    with pytest.raises(ConfigError, match="only cold-plug=no-port or root-port supported on CLH, got switch-port"):
        config("cloud-hypervisor", cold_plug_vfio="switch-port")
    with pytest.raises(ConfigError, match="only hot-plug=no-port or root-port supported on CLH, got bridge-port"):
        config("cloud-hypervisor", hot_plug_vfio="bridge-port")


def test_firecracker_ignores_the_port_rules_as_kata_does() -> None:
    assert config("firecracker", hot_plug_vfio="root-port", cold_plug_vfio="root-port").coldplug_all


@pytest.mark.parametrize("value", [-1, 17, True, "4", 2.0])
@pytest.mark.parametrize("key", ["pcie_root_port", "pcie_switch_port"])
def test_port_counts(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=r"must be a number of ports from 0 to 16 \(QEMU's I/O space fits 16\)") \
            as exc:
        config(**{key: value})
    assert exc.value.field == key
    assert getattr(config(**{key: 16}), "root_ports" if key == "pcie_root_port" else "switch_ports") == 16


def test_vfio_mode_and_iommu() -> None:
    assert config(vfio_mode="vfio").mode is VFIOMode.VFIO
    with pytest.raises(ConfigError, match="Unknown VFIO mode kernel"):
        config(vfio_mode="kernel")
    assert config(enable_iommu=True).iommu
    with pytest.raises(ConfigError, match="must be true or false") as exc:
        config(enable_iommu="yes")
    assert exc.value.field == "enable_iommu"


def test_settings_are_checked_before_planning_even_without_vfio_devices(vmdev_plugins, fake_host: FakeHost) -> None:
    with pytest.raises(ConfigError, match="only one of them can be set"):
        plan(parse_spec({}), SandboxSettings(options={"hot_plug_vfio": "root-port", "cold_plug_vfio": "root-port"}),
             host=fake_host.context(), plugins=vmdev_plugins("vmdev-vfio"))


def test_kata_configuration_toml(tmp_path: Path, l1_host: FakeHost, vmdev_plugins) -> None:
    toml = tmp_path / "configuration.toml"
    toml.write_text('[hypervisor.qemu]\nmachine_type = "q35"\nhot_plug_vfio = "root-port"\npcie_root_port = 2\n'
                    '[vmdev]\nvfio_mode = "vfio"\nhotplug = true\n')
    settings = load_settings(toml)
    result = plan(parse_spec({"linux": {"devices": [group_request(8)]}}), settings, host=l1_host.context(),
                  plugins=vmdev_plugins("vmdev-vfio"))
    data = result.to_json()
    vfio = data["devices"][0]
    assert (vfio["hotplug"], vfio["port"], vfio["vfio_mode"], vfio["agent_type"]) == (True, "root-port", "vfio",
                                                                                  "vfio-pci")
    assert data["devices"][1]["spare"] == ["rp1"]
    assert data["qemu"]["hotplug"][0]["arguments"]["bus"] == "rp0"
