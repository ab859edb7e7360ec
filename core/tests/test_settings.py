"""Sandbox settings from Kata's configuration.toml, with overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmdev.errors import ConfigError
from vmdev.settings import SandboxSettings, load_settings

KATA = """
[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
machine_type = "q35"
default_memory = 4096
entropy_source = "/dev/urandom"
valid_entropy_sources = ["/dev/urandom", "/dev/random", ""]
block_device_driver = "virtio-scsi"
enable_vhost_user_store = false

[hypervisor.clh]
default_memory = 1024
block_device_driver = "virtio-blk"

[vmdev]
hotplug = true
"""


def test_kata_configuration_is_read_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "configuration.toml"
    path.write_text(KATA)
    qemu = load_settings(path)
    assert (qemu.hypervisor, qemu.machine_type, qemu.memory_mib, qemu.hotplug) == ("qemu", "q35", 4096, True)
    assert qemu.option("block_device_driver") == "virtio-scsi"
    assert qemu.option("valid_entropy_sources") == ["/dev/urandom", "/dev/random", ""]
    clh = load_settings(path, hypervisor="cloud-hypervisor")
    assert (clh.memory_mib, clh.option("block_device_driver")) == (1024, "virtio-blk")


def test_overrides_win_and_none_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(KATA)
    s = load_settings(path, overrides={"default_memory": 512, "block_device_driver": None, "hotplug": False})
    assert (s.memory_mib, s.option("block_device_driver"), s.hotplug) == (512, "virtio-scsi", False)


def test_defaults_without_a_file() -> None:
    assert load_settings(None) == SandboxSettings()
    assert SandboxSettings().machine_type == "q35" and SandboxSettings().memory_mib == 2048


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[hypervisor.qemu]\ndefault_memory = -5\n", "default_memory"),
        ("[hypervisor.qemu]\ndefault_memory = 'lots'\n", "default_memory"),
        ("[hypervisor.qemu]\nmachine_type = 'q35,accel=kvm'\n", "machine_type"),
        ("[hypervisor.qemu]\nmachine_type = 3\n", "machine_type"),
        ("[vmdev]\nhotplug = 'yes'\n", "hotplug"),
        ("[hypervisor]\nqemu = 1\n", "hypervisor.qemu"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert exc.value.field == field


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[x\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(bad)


def test_str_option_type_checks() -> None:
    s = SandboxSettings(options={"entropy_source": 5})
    with pytest.raises(ConfigError, match="must be a string") as exc:
        s.str_option("entropy_source", "/dev/urandom")
    assert exc.value.field == "entropy_source"


@pytest.mark.parametrize(("content", "message"), [
    (b"[hypervisor.qemu]\nmachine_type = \"q35\xff\"\n", "is not UTF-8 (TOML must be): invalid start byte at byte"),
    (b"[hypervisor.qemu]\ndefault_memory = " + b"9" * 5000 + b"\n", "invalid TOML: Exceeds the limit"),
])
def test_hostile_toml_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("memory", [2 * 1024**3, 16 * 1024 * 1024 + 1, 0, -1, True, 1.5])
def test_memory_beyond_what_any_host_offers_or_of_the_wrong_type_is_refused(memory: object) -> None:
    with pytest.raises(ConfigError) as exc:
        SandboxSettings(memory_mib=memory)  # type: ignore[arg-type]
    assert exc.value.field == "default_memory" and "from 1 to 16777216 (16 TiB)" in exc.value.message


def test_a_machine_type_that_is_not_a_string_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"1\.5 is not a machine type name"):
        SandboxSettings(machine_type=1.5)  # type: ignore[arg-type]
