"""The vhost-user store (nodes and sockets faked through the stat seam: no root needed), the
reconnect timeout and the command line."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

import vmdev
from vmdev.cli import main
from vmdev.errors import ConfigError, DeviceError, ResolveError, UnclaimedDeviceError
from vmdev.models import DeviceInfo
from vmdev.oci import parse_spec
from vmdev.plugins import PluginManager
from vmdev.settings import load_settings
from vmdev_vhostuser import VhostUserDeviceAttrs


def blk(path: str = "/dev/vhu0", major: int = 241, minor: int = 0) -> dict[str, Any]:
    """An OCI ``linux.devices`` entry for a block device."""
    return {"path": path, "type": "b", "major": major, "minor": minor}


def test_the_plugin_is_found_through_its_entry_point(vmdev_plugins: Any) -> None:
    info = {i.name: i for i in vmdev_plugins("vmdev-vhostuser").list_plugins()}["vhostuser"]
    assert info.distribution == "vmdev-vhostuser"
    assert info.hooks == (
        "attach_options",
        "build_device",
        "check_settings",
        "device_from_state",
        "finish_plan",
        "host_facts",
        "register_settings",
        "resolve_host_path",
        "sandbox_devices",
    )


def test_blk_node_names_its_socket(run: Any, store: Any) -> None:
    store.device("other", 241, 1)
    socket = store.device("vhostblk0", 241, 0)
    result = run(blk())
    (dev,) = result.devices
    assert isinstance(dev.device, VhostUserDeviceAttrs)
    assert (dev.kind, dev.plugin, dev.container_path, dev.host_path) == (
        "vhost-user",
        "vhostuser",
        "/dev/vhu0",
        str(socket),
    )
    assert (dev.device.type, dev.device.socket_path, dev.device.container_path) == (
        "vhost-user-blk-pci",
        str(socket),
        "/dev/vhu0",
    )
    assert dev.id.startswith("vhublk-")


def test_scsi_major_242(run: Any, store: Any) -> None:
    store.device("scsi-a", 241, 7)  # same minor, other major: must not match
    socket = store.device("scsi-b", 242, 7)
    (dev,) = run(blk("/dev/vhs", 242, 7)).devices
    assert (dev.device.type, dev.host_path) == ("vhost-user-scsi-pci", str(socket))


def test_only_block_nodes_match(run: Any, store: Any) -> None:
    store.node("chr", 241, 0, kind=stat.S_IFCHR)
    store.socket("chr")
    with pytest.raises(ResolveError) as exc:
        run(blk())
    assert str(exc.value) == (
        f"/dev/vhu0: major:minor: required device node (241:0) doesn't exist under directory {store.devices}"
    )


def test_missing_socket(run: Any, store: Any) -> None:
    store.node("vhostblk0", 241, 0)
    with pytest.raises(ResolveError) as exc:
        run(blk())
    assert (exc.value.device, exc.value.field) == ("/dev/vhu0", "major:minor")
    assert f"no socket {store.sockets / 'vhostblk0'}" in exc.value.message


def test_socket_must_be_a_socket(run: Any, store: Any) -> None:
    store.node("vhostblk0", 241, 0)
    (store.sockets / "vhostblk0").write_text("")
    with pytest.raises(ResolveError, match="is not a UNIX socket"):
        run(blk())


def test_missing_devices_directory(run: Any, store: Any) -> None:
    store.devices.rmdir()
    with pytest.raises(ResolveError, match="has no device directory"):
        run(blk())


def test_socket_symlink_out_of_the_store(run: Any, store: Any) -> None:
    outside = store.fake(store.root.parent / "elsewhere.sock", stat.S_IFSOCK)
    store.node("vhostblk0", 241, 0)
    (store.sockets / "vhostblk0").symlink_to(outside)
    with pytest.raises(ResolveError) as exc:
        run(blk())
    assert f"resolves to {outside}, outside the vhost-user store" in exc.value.message


def test_node_dotdot_symlink_out_of_the_store(run: Any, store: Any) -> None:
    store.fake(store.root.parent / "node", stat.S_IFBLK, (241, 0))
    (store.devices / "vhostblk0").symlink_to("../../../node")
    store.socket("vhostblk0")
    with pytest.raises(ResolveError, match=r"the device node .* outside the vhost-user store"):
        run(blk())


def test_symlinks_inside_the_store_are_fine(run: Any, store: Any) -> None:
    real = store.root / "nodes"
    real.mkdir()
    store.fake(real / "n0", stat.S_IFBLK, (241, 3))
    (store.devices / "vhostblk3").symlink_to("../../nodes/n0")
    socket = store.socket("vhostblk3")
    assert run(blk(minor=3)).devices[0].host_path == str(socket)


def test_dangling_entries_do_not_hide_the_node(run: Any, store: Any) -> None:
    (store.devices / "aaa-dangling").symlink_to("/nonexistent/node")
    socket = store.device("zzz", 241, 0)
    assert run(blk()).devices[0].host_path == str(socket)


def test_two_nodes_with_the_same_numbers_are_ambiguous(run: Any, store: Any) -> None:
    store.device("a", 241, 0)
    store.device("b", 241, 0)
    with pytest.raises(ResolveError, match=r"device nodes a, b .* ambiguous"):
        run(blk())


def test_store_disabled_leaves_the_request_to_others(run: Any, store: Any) -> None:
    store.device("vhostblk0", 241, 0)
    store.host.block_device(241, 0, "vhu0")  # 241-254 are "local use" majors: a real disk here
    with pytest.raises(UnclaimedDeviceError) as exc:
        run(blk(), enabled=False)
    assert exc.value.device == "/dev/vhu0"


def test_read_only_request_is_refused(run: Any, store: Any) -> None:
    store.device("vhostblk0", 241, 0)
    rules = [{"allow": True, "type": "b", "major": 241, "minor": 0, "access": "r"}]
    with pytest.raises(DeviceError) as exc:
        run(blk(), rules=rules)
    assert (exc.value.device, exc.value.field) == ("/dev/vhu0", "read_only")


# --- the stat seam -----------------------------------------------------------------------------


def _resolve(pm: PluginManager, store: Any, info: DeviceInfo, **changes: Any) -> str:
    return pm.resolve_host_path(info, store.context(**changes), store.settings(pm))


def test_the_store_is_read_through_the_stat_seam_only(pm: PluginManager, store: Any) -> None:
    """Plain files are nodes and sockets only because the seam says so (Kata's GetVhostUserNodeStat)."""
    store.node("vhostblk0", 241, 0)
    (store.devices / "vhostblk1").write_text("")
    (store.sockets / "vhostblk1").write_text("")
    store.host.fake_stat(str(store.devices / "vhostblk1"), mode=stat.S_IFBLK, rdev=(242, 5))
    store.host.fake_stat(str(store.sockets / "vhostblk1"), mode=stat.S_IFSOCK)
    info = DeviceInfo(container_path="/dev/x", dev_type="b", major=242, minor=5)
    assert _resolve(pm, store, info) == str(store.sockets / "vhostblk1")
    with pytest.raises(ResolveError, match="no socket"):
        _resolve(pm, store, DeviceInfo(container_path="/dev/y", dev_type="b", major=241, minor=0))
    with pytest.raises(ResolveError, match=r"required device node \(242:5\) doesn't exist"):
        _resolve(pm, store, info, stat=os.stat)  # the real stat sees plain files


def test_stat_errors_other_than_missing_are_reported(pm: PluginManager, store: Any) -> None:
    store.node("n", 241, 0)

    def denied(path: str) -> os.stat_result:
        raise PermissionError(13, "Permission denied", path)

    info = DeviceInfo(container_path="/dev/x", dev_type="b", major=241, minor=0)
    with pytest.raises(ResolveError, match=r"cannot stat .*/n: Permission denied"):
        _resolve(pm, store, info, stat=denied)


def test_empty_container_path_is_left_to_the_core(pm: PluginManager, store: Any) -> None:
    with pytest.raises(ResolveError, match="empty path provided for device"):
        _resolve(pm, store, DeviceInfo(container_path="", dev_type="b", major=241, minor=0))


# --- reconnect timeout ---------------------------------------------------------------------------


def _build(pm: PluginManager, store: Any, info: DeviceInfo, **options: Any) -> Any:
    settings = store.settings(pm, **options)
    host = store.context()
    resolved = attrs.evolve(info, host_path=pm.resolve_host_path(info, host, settings))
    return pm.build_device(resolved, host, settings).value


def test_reconnect_from_settings_and_driver_option(pm: PluginManager, store: Any) -> None:
    store.device("b0", 241, 0)
    store.device("s0", 242, 0)
    blk0 = DeviceInfo(container_path="/dev/b", dev_type="b", major=241, minor=0)
    scsi0 = DeviceInfo(container_path="/dev/s", dev_type="b", major=242, minor=0)
    assert _build(pm, store, blk0).reconnect_time == 0
    assert _build(pm, store, blk0, vhost_user_reconnect_timeout_sec=5).reconnect_time == 5
    # the sandbox-wide value does not apply to a kind QEMU cannot reconnect
    assert _build(pm, store, scsi0, vhost_user_reconnect_timeout_sec=5).reconnect_time == 0
    opt = {"vhost-user-reconnect-timeout": "7"}
    with_opt = attrs.evolve(blk0, driver_options=opt)
    assert _build(pm, store, with_opt, vhost_user_reconnect_timeout_sec=5).reconnect_time == 7


@pytest.mark.parametrize("bad", ["-1", "abc", "", "4294967296"])
def test_bad_reconnect_driver_option(pm: PluginManager, store: Any, bad: str) -> None:
    store.device("b0", 241, 0)
    info = DeviceInfo(
        container_path="/dev/b",
        dev_type="b",
        major=241,
        minor=0,
        driver_options={"vhost-user-reconnect-timeout": bad},
    )
    with pytest.raises(DeviceError) as exc:
        _build(pm, store, info)
    assert (exc.value.device, exc.value.field) == ("/dev/b", "vhost-user-reconnect-timeout")


def test_scsi_cannot_reconnect(pm: PluginManager, store: Any) -> None:
    store.device("s0", 242, 0)
    info = DeviceInfo(
        container_path="/dev/s",
        dev_type="b",
        major=242,
        minor=0,
        driver_options={"vhost-user-reconnect-timeout": "3"},
    )
    with pytest.raises(DeviceError, match="vhost-user-scsi-pci cannot reconnect"):
        _build(pm, store, info)


# --- command line ------------------------------------------------------------------------------


@pytest.fixture
def cli(store: Any, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI with only this plugin, looking at the host through the store's fake stat (the
    CLI's host context has the real one, and a non-root user cannot mknod a block node)."""
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-vhostuser")
    monkeypatch.setattr("vmdev.cli.host_context", lambda *args, **kwargs: store.context())
    return CliRunner()


def test_cli_resolve_and_plan_with_vhost_user_store(store: Any, tmp_path: Path, cli: CliRunner) -> None:
    socket = store.device("vhostblk0", 241, 0)
    out = cli.invoke(
        main,
        [
            "resolve",
            "--type",
            "b",
            "--major",
            "241",
            "--minor",
            "0",
            "--vhost-user-store",
            str(store.root),
            "/dev/vhu0",
        ],
    )
    assert (out.exit_code, out.output) == (0, f"{socket}\n")
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"linux": {"devices": [blk()]}}))
    out = cli.invoke(main, ["plan", "--vhost-user-store", str(store.root), "--memory", "256", str(spec)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["devices"][0]["socket_path"] == str(socket)
    assert "memory-backend-memfd,id=vmdev-ram,size=256M,share=on" in data["qemu"]["argv"]
    out = cli.invoke(main, ["plan", "--vhost-user-store", str(store.root / "nope"), str(spec)])
    assert out.exit_code == 1
    assert out.output.startswith("vmdev: error: /dev/vhu0: major:minor: the vhost-user store has no device")


def test_without_the_store_flag_majors_241_and_242_are_not_the_stores(
    store: Any, tmp_path: Path, cli: CliRunner
) -> None:
    store.device("vhostblk0", 241, 0)
    store.host.block_device(241, 0, "localdisk")  # a "local use" major: the core resolves it
    argv = ["resolve", "--type", "b", "--major", "241", "--minor", "0", "/dev/vhu0"]
    out = cli.invoke(main, argv)
    assert (out.exit_code, out.output) == (0, "/dev/localdisk\n")  # the host's node, not the store's socket


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "configuration.toml"
    path.write_text(text)
    return path


def test_a_store_path_that_is_not_a_string_is_one_line_naming_the_key(
    pm: PluginManager, store: Any, tmp_path: Path, cli: CliRunner
) -> None:
    """Issue 9: ``vhost_user_store_path = 5`` ended in "internal error: TypeError"."""
    config = _config(tmp_path, "[hypervisor.qemu]\nenable_vhost_user_store = true\nvhost_user_store_path = 5\n")
    with pytest.raises(ConfigError) as exc:
        vmdev.plan(parse_spec({}), load_settings(config, plugins=pm), host=store.context(), plugins=pm)
    assert str(exc.value) == "vhost_user_store_path: must be a string, got 5"
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"linux": {"devices": [blk()]}}))
    out = cli.invoke(main, ["plan", "--config", str(config), str(spec)])
    assert (out.exit_code, out.output) == (1, "vmdev: error: vhost_user_store_path: must be a string, got 5\n")


def test_enable_vhost_user_store_in_a_configuration_file_reaches_vmdev_plan(
    pm: PluginManager, store: Any, tmp_path: Path
) -> None:
    """Issue 9: the file's ``enable_vhost_user_store`` worked from the CLI only; ``plan()`` read
    the store from the host context and ignored it."""
    socket = store.device("vhostblk0", 241, 0)
    config = _config(
        tmp_path,
        f'[hypervisor.qemu]\nenable_vhost_user_store = true\nvhost_user_store_path = "{store.root}"\n',
    )
    spec = parse_spec({"linux": {"devices": [blk()]}})
    result = vmdev.plan(spec, load_settings(config, plugins=pm), host=store.context(), plugins=pm)
    assert [(d.plugin, d.host_path) for d in result.devices] == [("vhostuser", str(socket))]
    # the same file through the command line
    spec_file = tmp_path / "config.json"
    spec_file.write_text(json.dumps({"linux": {"devices": [blk()]}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VMDEV_PLUGINS", "vmdev-vhostuser")
        patch.setattr("vmdev.cli.host_context", lambda *args, **kwargs: store.context())
        out = CliRunner().invoke(main, ["plan", "--config", str(config), str(spec_file)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["devices"][0]["socket_path"] == str(socket)


def test_the_store_path_defaults_to_katas(pm: PluginManager) -> None:
    from vmdev.settings import SandboxSettings
    from vmdev_vhostuser.host import VhostUserStore

    store = VhostUserStore.from_settings(pm.prepare_settings(SandboxSettings()))
    assert store == VhostUserStore(enabled=False, path=Path("/var/run/kata-containers/vhost-user/"))
    empty = pm.prepare_settings(SandboxSettings(options={"vhost_user_store_path": ""}))
    assert VhostUserStore.from_settings(empty).path == store.path


def test_vhost_user_blk_shares_the_sandbox_block_index() -> None:
    """Kata's block index is one sequence for every disk: a block drive planned first holds 0."""
    from vmdev.resources import Allocator
    from vmdev_vhostuser.device import DISK_INDEX_POOL, store_device

    alloc = Allocator()
    assert alloc.take(DISK_INDEX_POOL, "a block drive", limit=10) == 0
    blk = DeviceInfo(container_path="/dev/vhu0", dev_type="b", major=241, minor=0, host_path="/s/blk.sock")
    scsi = DeviceInfo(container_path="/dev/vhs0", dev_type="b", major=242, minor=0, host_path="/s/scsi.sock")
    assert store_device(blk, 0, alloc).index == 1
    assert store_device(blk, 0, alloc).index == 1  # the same request keeps its index
    assert store_device(scsi, 0, alloc).index == -1
    assert alloc.in_use(DISK_INDEX_POOL) == {0: "a block drive", 1: "/dev/vhu0|/s/blk.sock"}


def test_the_disk_index_pool_is_the_cores() -> None:
    """The block family draws from the same pool; the core names it (once it does)."""
    import vmdev.resources
    from vmdev_vhostuser.device import DISK_INDEX_POOL

    assert DISK_INDEX_POOL == getattr(vmdev.resources, "DISK_INDEX_POOL", "block.index") == "block.index"
