"""The vhost-user store: real device nodes (mknod, as root) and fake ones through the stat seam."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.cli import main
from vmdev.errors import DeviceError, ResolveError, UnclaimedDeviceError
from vmdev.host import VhostUserStore
from vmdev.models import DeviceInfo, VhostUserDeviceAttrs
from vmdev.testing import FakeHost


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
    outside = store.root.parent / "elsewhere.sock"
    os.mknod(outside, stat.S_IFSOCK | 0o600)
    store.node("vhostblk0", 241, 0)
    (store.sockets / "vhostblk0").symlink_to(outside)
    with pytest.raises(ResolveError) as exc:
        run(blk())
    assert f"resolves to {outside}, outside the vhost-user store" in exc.value.message


def test_node_dotdot_symlink_out_of_the_store(run: Any, store: Any) -> None:
    os.mknod(store.root.parent / "node", stat.S_IFBLK | 0o600, os.makedev(241, 0))
    (store.devices / "vhostblk0").symlink_to("../../../node")
    store.socket("vhostblk0")
    with pytest.raises(ResolveError, match=r"the device node .* outside the vhost-user store"):
        run(blk())


def test_symlinks_inside_the_store_are_fine(run: Any, store: Any) -> None:
    real = store.root / "nodes"
    real.mkdir()
    os.mknod(real / "n0", stat.S_IFBLK | 0o600, os.makedev(241, 3))
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


def _fake_stat(table: dict[str, tuple[int, int]]) -> Any:
    """A stat function answering from ``{path: (mode, rdev)}``; other paths raise ENOENT."""

    def fake(path: str) -> os.stat_result:
        if path not in table:
            raise FileNotFoundError(2, "No such file or directory", path)
        mode, rdev = table[path]
        return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": rdev})

    return fake


def _seam(fake_host: FakeHost, vmdev_plugins: Any, root: Path, table: dict[str, tuple[int, int]]) -> Any:
    host = fake_host.context(vhost_user_store=VhostUserStore(enabled=True, path=root), stat=_fake_stat(table))
    pm = vmdev_plugins("vmdev-vhostuser")
    return lambda info: pm.resolve_host_path(info, host)


def test_fake_nodes_through_the_stat_seam(fake_host: FakeHost, vmdev_plugins: Any, tmp_path: Path) -> None:
    root = tmp_path / "s"
    (root / "block" / "devices").mkdir(parents=True)
    (root / "block" / "sockets").mkdir(parents=True)
    for name in ("vhostblk0", "vhostblk1"):
        (root / "block" / "devices" / name).write_text("")  # plain files: only the seam says "node"
    devices, sockets = root / "block" / "devices", root / "block" / "sockets"
    table = {
        str(devices / "vhostblk0"): (stat.S_IFBLK, os.makedev(241, 0)),
        str(devices / "vhostblk1"): (stat.S_IFBLK, os.makedev(242, 5)),
        str(sockets / "vhostblk1"): (stat.S_IFSOCK, 0),
    }
    resolve = _seam(fake_host, vmdev_plugins, root, table)
    info = DeviceInfo(container_path="/dev/x", dev_type="b", major=242, minor=5)
    assert resolve(info) == str(sockets / "vhostblk1")
    with pytest.raises(ResolveError, match="no socket"):
        resolve(DeviceInfo(container_path="/dev/y", dev_type="b", major=241, minor=0))


def test_stat_errors_other_than_missing_are_reported(
    fake_host: FakeHost, vmdev_plugins: Any, tmp_path: Path
) -> None:
    (tmp_path / "s" / "block" / "devices").mkdir(parents=True)
    (tmp_path / "s" / "block" / "devices" / "n").write_text("")

    def denied(path: str) -> os.stat_result:
        raise PermissionError(13, "Permission denied", path)

    host = fake_host.context(vhost_user_store=VhostUserStore(enabled=True, path=tmp_path / "s"), stat=denied)
    info = DeviceInfo(container_path="/dev/x", dev_type="b", major=241, minor=0)
    with pytest.raises(ResolveError, match=r"cannot stat .*/n: Permission denied"):
        vmdev_plugins("vmdev-vhostuser").resolve_host_path(info, host)


def test_empty_container_path_is_left_to_the_core(
    fake_host: FakeHost, vmdev_plugins: Any, store: Any
) -> None:
    host = fake_host.context(vhost_user_store=VhostUserStore(enabled=True, path=store.root))
    with pytest.raises(ResolveError, match="empty path provided for device"):
        vmdev_plugins("vmdev-vhostuser").resolve_host_path(
            DeviceInfo(container_path="", dev_type="b", major=241, minor=0), host
        )


# --- reconnect timeout ---------------------------------------------------------------------------


def _build(vmdev_plugins: Any, fake_host: FakeHost, store: Any, info: DeviceInfo, **options: Any) -> Any:
    from vmdev.settings import SandboxSettings

    host = fake_host.context(vhost_user_store=VhostUserStore(enabled=True, path=store.root))
    pm = vmdev_plugins("vmdev-vhostuser")
    resolved = DeviceInfo(**{**_fields(info), "host_path": pm.resolve_host_path(info, host)})
    return pm.build_device(resolved, host, SandboxSettings(options=options)).value


def _fields(info: DeviceInfo) -> dict[str, Any]:
    import attrs

    return attrs.asdict(info, recurse=False)


def test_reconnect_from_settings_and_driver_option(
    vmdev_plugins: Any, fake_host: FakeHost, store: Any
) -> None:
    store.device("b0", 241, 0)
    store.device("s0", 242, 0)
    blk0 = DeviceInfo(container_path="/dev/b", dev_type="b", major=241, minor=0)
    scsi0 = DeviceInfo(container_path="/dev/s", dev_type="b", major=242, minor=0)
    assert _build(vmdev_plugins, fake_host, store, blk0).reconnect_time == 0
    assert (
        _build(vmdev_plugins, fake_host, store, blk0, vhost_user_reconnect_timeout_sec=5).reconnect_time == 5
    )
    # the sandbox-wide value does not apply to a kind QEMU cannot reconnect
    assert (
        _build(vmdev_plugins, fake_host, store, scsi0, vhost_user_reconnect_timeout_sec=5).reconnect_time == 0
    )
    opt = {"vhost-user-reconnect-timeout": "7"}
    with_opt = DeviceInfo(container_path="/dev/b", dev_type="b", major=241, minor=0, driver_options=opt)
    assert (
        _build(vmdev_plugins, fake_host, store, with_opt, vhost_user_reconnect_timeout_sec=5).reconnect_time
        == 7
    )


@pytest.mark.parametrize("bad", ["-1", "abc", "", "4294967296"])
def test_bad_reconnect_driver_option(vmdev_plugins: Any, fake_host: FakeHost, store: Any, bad: str) -> None:
    store.device("b0", 241, 0)
    info = DeviceInfo(
        container_path="/dev/b",
        dev_type="b",
        major=241,
        minor=0,
        driver_options={"vhost-user-reconnect-timeout": bad},
    )
    with pytest.raises(DeviceError) as exc:
        _build(vmdev_plugins, fake_host, store, info)
    assert (exc.value.device, exc.value.field) == ("/dev/b", "vhost-user-reconnect-timeout")


def test_scsi_cannot_reconnect(vmdev_plugins: Any, fake_host: FakeHost, store: Any) -> None:
    store.device("s0", 242, 0)
    info = DeviceInfo(
        container_path="/dev/s",
        dev_type="b",
        major=242,
        minor=0,
        driver_options={"vhost-user-reconnect-timeout": "3"},
    )
    with pytest.raises(DeviceError, match="vhost-user-scsi-pci cannot reconnect"):
        _build(vmdev_plugins, fake_host, store, info)


# --- command line ------------------------------------------------------------------------------


def test_cli_resolve_and_plan_with_vhost_user_store(store: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-vhostuser")
    socket = store.device("vhostblk0", 241, 0)
    runner = CliRunner()
    out = runner.invoke(
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
    out = runner.invoke(main, ["plan", "--vhost-user-store", str(store.root), "--memory", "256", str(spec)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["devices"][0]["socket_path"] == str(socket)
    assert "memory-backend-memfd,id=vmdev-ram,size=256M,share=on" in data["qemu"]["argv"]
    out = runner.invoke(main, ["plan", "--vhost-user-store", str(store.root / "nope"), str(spec)])
    assert out.exit_code == 1
    assert out.output.startswith("vmdev: error: /dev/vhu0: major:minor: the vhost-user store has no device")


def test_vhost_user_blk_shares_the_sandbox_block_index() -> None:
    """Kata's block index is one sequence for every disk: a block drive planned first holds 0."""
    from vmdev.models import BLOCK_INDEX_POOL, DeviceInfo
    from vmdev.resources import Allocator
    from vmdev.settings import SandboxSettings
    from vmdev_vhostuser.device import store_device
    from vmdev_vhostuser.settings import read_config

    alloc = Allocator()
    assert alloc.take(BLOCK_INDEX_POOL, "a block drive", limit=10) == 0
    config = read_config(SandboxSettings())
    blk = DeviceInfo(container_path="/dev/vhu0", dev_type="b", major=241, minor=0, host_path="/s/blk.sock")
    scsi = DeviceInfo(container_path="/dev/vhs0", dev_type="b", major=242, minor=0, host_path="/s/scsi.sock")
    assert store_device(blk, config, alloc).index == 1
    assert store_device(blk, config, alloc).index == 1  # the same request keeps its index
    assert store_device(scsi, config, alloc).index == -1
    assert alloc.in_use(BLOCK_INDEX_POOL) == {0: "a block drive", 1: "/dev/vhu0|/s/blk.sock"}
