"""The family as the open core sees it: declared settings, devices rebuilt from saved state, host
facts, the names it owns, and no family name taken from the core."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

import vmdev_vhostuser
from vmdev.errors import DeviceError
from vmdev.models import DeviceInfo, GenericDevice, PciPath
from vmdev.plugins import PluginManager
from vmdev.resources import Allocator
from vmdev.serialize import to_json
from vmdev_vhostuser import plugin
from vmdev_vhostuser.device import VHOST_USER_BLK, VhostUserDeviceAttrs

FS = {"shared_fs": "virtio-fs", "virtio_fs_socket": "/run/vfs.sock", "virtio_fs_cache": "auto"}
NET = {"vhost_user_net": [{"socket": "/run/net0.sock", "mac": "52:54:00:12:34:56"}]}
PACKAGE = Path(vmdev_vhostuser.__file__).parent
TESTS = Path(__file__).parent


def _every_kind(pm: PluginManager, store: Any) -> list[VhostUserDeviceAttrs]:
    """One device of each kind (blk, scsi from the store; fs, net from the settings)."""
    store.device("b0", 241, 0)
    store.device("s0", 242, 3)
    settings = store.settings(pm, vhost_user_reconnect_timeout_sec=4, **FS, **NET)
    host, alloc = store.context(), Allocator()
    built = []
    for path, major, minor in (("/dev/b", 241, 0), ("/dev/s", 242, 3)):
        info = DeviceInfo(container_path=path, dev_type="b", major=major, minor=minor)
        info = DeviceInfo(**{**_fields(info), "host_path": pm.resolve_host_path(info, host, settings)})
        built.append(pm.build_device(info, host, settings, alloc).value)
    built += [answer.value for answer in pm.sandbox_devices(settings, host)]
    return built


def _fields(info: DeviceInfo) -> dict[str, Any]:
    import attrs

    return attrs.asdict(info, recurse=False)


# --- device_from_state -----------------------------------------------------------------------------


def test_every_kind_is_rebuilt_from_its_saved_form_without_the_host(pm: PluginManager, store: Any) -> None:
    devices = _every_kind(pm, store)
    assert [d.type for d in devices] == [
        "vhost-user-blk-pci",
        "vhost-user-scsi-pci",
        "vhost-user-fs-pci",
        "virtio-net-pci",
    ]
    shutil.rmtree(store.root)  # rebuilding must not look at the store
    for device in devices:
        saved = json.loads(json.dumps(to_json(device)))  # as the device manager writes it
        rebuilt = pm.device_from_state(device.kind, saved, "vhostuser", name=device.name)
        assert rebuilt == device
        assert type(rebuilt) is VhostUserDeviceAttrs


def test_a_guest_pci_path_survives_the_round_trip(pm: PluginManager) -> None:
    device = VhostUserDeviceAttrs(
        dev_id="vhublk-1", socket_path="/s.sock", type=VHOST_USER_BLK, pci_path=PciPath.parse("02/00"), index=3
    )
    saved = to_json(device)
    assert saved["pci_path"] == "02/00"
    assert pm.device_from_state("vhost-user", saved, "vhostuser", name="vhublk-1") == device


def test_a_broken_saved_device_is_a_device_error_naming_the_field(pm: PluginManager) -> None:
    saved = {"dev_id": "vhublk-1", "socket_path": "/s.sock", "type": "vhost-user-gpu-pci", "container_path": "/dev/b"}
    with pytest.raises(DeviceError) as exc:
        pm.device_from_state("vhost-user", saved, "vhostuser", name="/dev/b")
    assert (exc.value.device, exc.value.field) == ("/dev/b", "type")


def test_other_kinds_are_left_to_their_families() -> None:
    assert plugin.device_from_state("block", {"id": "x"}) is None
    assert plugin.device_from_state("generic", {}) is None


# --- host_facts --------------------------------------------------------------------------------------


def test_a_store_device_records_its_socket_and_store_node(pm: PluginManager, store: Any) -> None:
    blk, scsi, fs, net = _every_kind(pm, store)
    host = store.context()
    assert pm.host_facts(blk, host, name="/dev/b") == {"socket": "socket", "store node": "block 241:0"}
    assert pm.host_facts(scsi, host, name="/dev/s") == {"socket": "socket", "store node": "block 242:3"}
    # the sockets of sandbox devices are settings, served by daemons that may start later
    assert pm.host_facts(fs, host, name=fs.id) == {}
    assert pm.host_facts(net, host, name=net.id) == {}


def test_host_facts_show_drift(pm: PluginManager, store: Any) -> None:
    blk = _every_kind(pm, store)[0]
    store.node("b0", 241, 7)  # the store entry now names another device
    store.fake(store.sockets / "b0", stat.S_IFREG)  # the backend went away, a file is left
    assert pm.host_facts(blk, store.context(), name="/dev/b") == {
        "socket": "regular file",
        "store node": "block 241:7",
    }
    shutil.rmtree(store.root)
    gone = store.context(stat=os.stat)  # the fake answers for registered paths whatever is left
    assert pm.host_facts(blk, gone, name="/dev/b") == {"socket": "missing", "store node": "missing"}


def test_host_facts_are_only_given_for_vhost_user_devices(store: Any) -> None:
    other = GenericDevice(id="null", container_path="/dev/null", host_path="/dev/null", dev_type="c", major=1, minor=3)
    assert plugin.host_facts(other, store.context()) is None


# --- declared settings -------------------------------------------------------------------------------

KATA_KEYS = {
    "enable_vhost_user_store",
    "vhost_user_store_path",
    "vhost_user_reconnect_timeout_sec",
    "shared_fs",
    "virtio_fs_queue_size",
    "virtio_fs_cache",
    "virtio_fs_cache_size",
    "virtio_fs_daemon",
    "virtio_fs_extra_args",
    "msize_9p",
    "disable_guest_selinux",
}
OWN_KEYS = {"virtio_fs_socket", "virtio_fs_tag", "vhost_user_net", "sandbox_runtime_dir", "shared_dir"}


def test_every_key_is_declared_with_the_kata_key_it_mirrors(pm: PluginManager) -> None:
    ours = {d.setting.name: d.setting for d in pm.declared_settings() if d.plugin == "vhostuser"}
    assert set(ours) == KATA_KEYS | OWN_KEYS
    assert {name for name, s in ours.items() if s.kata_key == name} == KATA_KEYS
    assert {name for name, s in ours.items() if not s.kata_key} == OWN_KEYS
    store = ours["vhost_user_store_path"]
    assert (store.flag, store.flag_sets, store.default) == (
        "--vhost-user-store",
        {"enable_vhost_user_store": True},
        "/var/run/kata-containers/vhost-user/",
    )
    assert {name: s.flag for name, s in ours.items() if s.flag} == {
        "vhost_user_store_path": "--vhost-user-store",
        "shared_fs": "--shared-fs",
        "virtio_fs_daemon": "--virtio-fs-daemon",
        "virtio_fs_extra_args": "--virtio-fs-extra-arg",
        "sandbox_runtime_dir": "--runtime-dir",
        "shared_dir": "--shared-dir",
    }
    assert (ours["msize_9p"].default, ours["disable_guest_selinux"].default) == (8192, True)
    assert (ours["virtio_fs_extra_args"].type, ours["msize_9p"].type) == ("list of strings", "integer")


def test_the_declared_defaults_plan_nothing(pm: PluginManager, store: Any) -> None:
    """Reading every key's default works (no key is read undeclared) and adds no device."""
    from vmdev.settings import SandboxSettings

    settings = pm.prepare_settings(SandboxSettings())
    assert pm.sandbox_devices(settings, store.context()) == []


# --- names ---------------------------------------------------------------------------------------------


def test_the_family_names_are_importable_from_the_distribution() -> None:
    from vmdev_vhostuser import (
        DEFAULT_VHOST_USER_RECONNECT_TIMEOUT,
        DEFAULT_VHOST_USER_STORE_PATH,
        NO_SHARED_FS,
        VHOST_USER_BLK,
        VHOST_USER_BLK_MAJOR,
        VHOST_USER_FS,
        VHOST_USER_NET,
        VHOST_USER_RECONNECT_TIMEOUT_OPT,
        VHOST_USER_SCSI,
        VHOST_USER_SCSI_MAJOR,
        VIRTIO_9P,
        VIRTIO_FS,
        VIRTIO_FS_NYDUS,
        VhostUserDeviceAttrs,
        VhostUserStore,
    )

    assert (VHOST_USER_BLK_MAJOR, VHOST_USER_SCSI_MAJOR) == (241, 242)
    assert (VHOST_USER_BLK, VHOST_USER_SCSI, VHOST_USER_FS, VHOST_USER_NET) == (
        "vhost-user-blk-pci",
        "vhost-user-scsi-pci",
        "vhost-user-fs-pci",
        "virtio-net-pci",
    )
    assert (VIRTIO_FS, VIRTIO_FS_NYDUS, VIRTIO_9P, NO_SHARED_FS) == ("virtio-fs", "virtio-fs-nydus", "virtio-9p", "none")
    assert VHOST_USER_RECONNECT_TIMEOUT_OPT == "vhost-user-reconnect-timeout"
    assert (DEFAULT_VHOST_USER_RECONNECT_TIMEOUT, DEFAULT_VHOST_USER_STORE_PATH) == (
        0,
        "/var/run/kata-containers/vhost-user/",
    )
    assert VhostUserDeviceAttrs.kind == "vhost-user" and VhostUserStore().enabled is False
    assert all(hasattr(vmdev_vhostuser, name) for name in vmdev_vhostuser.__all__)


#: what the family may import from these core modules: the generic names (MIGRATION.md)
CORE_GENERIC = {
    "vmdev.models": {
        "DeviceInfo", "Device", "GenericDevice", "PciPath", "PCIePort", "OCI_DEVICE_TYPES", "PCI_DOMAIN",
        "MAX_PCIE_ROOT_PORT", "MAX_PCIE_SWITCH_PORT", "PCI_BRIDGE_MAX_CAPACITY", "MAX_DEV_ID_SIZE",
    },
    "vmdev.host": {"HostContext", "SysfsReader", "StatFunc"},
    "vmdev.targets": {"ApiRequest", "AttachOptions", "RenderTarget", "PCI", "MMIO", "CCW"},
    "vmdev.testing": {"FakeHost", "StartupProbe"},
    "vmdev.cliutil": {"errors_as_one_line", "fail", "SettingsCommand", "flag_overrides"},
}


def _core_imports(path: Path) -> list[tuple[str, str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module in CORE_GENERIC:
            out += [(node.module, alias.name, node.lineno) for alias in node.names]
    return out


@pytest.mark.parametrize("path", sorted([*PACKAGE.glob("*.py"), *TESTS.glob("*.py")]), ids=lambda p: p.name)
def test_no_family_name_is_imported_from_the_core(path: Path) -> None:
    wrong = [f"{path.name}:{line}: {name} from {module}" for module, name, line in _core_imports(path)
             if name not in CORE_GENERIC[module]]
    assert wrong == []


def test_the_readme_lists_every_declared_key_with_its_default(pm: PluginManager) -> None:
    text = (TESTS.parent / "README.md").read_text()
    table = text.split("## Settings keys", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| `")]
    documented = {row[0].strip("`"): (row[1], json.loads(row[2].strip("`"))) for row in rows}
    declared = {d.setting.name: (d.setting.type, json.loads(json.dumps(d.setting.default, default=list)))
                for d in pm.declared_settings() if d.plugin == "vhostuser"}
    assert documented == declared


def test_the_device_manager_saves_a_store_device_that_device_from_state_rebuilds(
    pm: PluginManager, store: Any
) -> None:
    from vmdev.manager import DeviceManager

    socket = store.device("b0", 241, 0)
    manager = DeviceManager(store.settings(pm), host=store.context(), plugins=pm)
    record = manager.new_device(DeviceInfo(container_path="/dev/b", dev_type="b", major=241, minor=0))
    assert (record.kind, record.plugin, record.host_path) == ("vhost-user", "vhostuser", str(socket))
    saved = manager.snapshot().device(record.id)
    assert saved is not None
    rebuilt = pm.device_from_state(saved.kind, saved.device, saved.plugin, name=saved.name)
    assert isinstance(rebuilt, VhostUserDeviceAttrs)
    assert (rebuilt.id, rebuilt.socket_path, rebuilt.index) == (record.id, str(socket), 0)
    assert list(manager.allocator.in_use("block.index")) == [0]  # the sandbox's books hold its index
