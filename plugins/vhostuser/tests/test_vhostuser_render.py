"""Rendering vhost-user devices for QEMU, Cloud Hypervisor and Firecracker; fs and net settings."""

from __future__ import annotations

from typing import Any

import pytest

from vmdev.errors import ConfigError, UnsupportedError
from vmdev.models import DeviceInfo, GenericDevice
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.qemu import split_opts
from vmdev.settings import SandboxSettings, load_settings
from vmdev.testing import FakeHost
from vmdev_vhostuser import VhostUserDeviceAttrs


def blk(path: str = "/dev/vhu0", major: int = 241, minor: int = 0) -> dict[str, Any]:
    """An OCI ``linux.devices`` entry for a block device."""
    return {"path": path, "type": "b", "major": major, "minor": minor}


FS = {"shared_fs": "virtio-fs", "virtio_fs_socket": "/run/vfs.sock"}
NET = {"vhost_user_net": [{"socket": "/run/net0.sock", "mac": "52:54:00:12:34:56"}]}


def _after(argv: tuple[str, ...], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_qemu_cold_plug_blk_and_shared_memory(run: Any, store: Any) -> None:
    socket = store.device("vhostblk0", 241, 0)
    result = run(blk())
    dev_id = result.devices[0].id
    assert list(result.qemu.argv) == [
        "-machine",
        "q35,memory-backend=vmdev-ram",
        "-m",
        "256M",
        "-object",
        "memory-backend-memfd,id=vmdev-ram,size=256M,share=on",
        "-chardev",
        f"socket,id=chr-{dev_id},path={socket}",
        "-device",
        f"vhost-user-blk-pci,id={dev_id},chardev=chr-{dev_id}",
    ]
    assert result.qemu.hotplug == () and result.qemu.unplug == ()
    assert result.to_json()["devices"][0]["chardev"] == f"chr-{dev_id}"


def test_every_device_reaches_the_command_line_with_one_shared_backend(run: Any, store: Any) -> None:
    store.device("b0", 241, 0)
    store.device("b1", 241, 1)
    store.device("s0", 242, 0)
    result = run(blk("/dev/a"), blk("/dev/b", minor=1), blk("/dev/c", 242, 0), options={**FS, **NET})
    assert [d.device.type for d in result.devices] == [
        "vhost-user-blk-pci",
        "vhost-user-blk-pci",
        "vhost-user-scsi-pci",
        "vhost-user-fs-pci",
        "virtio-net-pci",
    ]
    devices = _after(result.qemu.argv, "-device")
    assert [split_opts(d)[0] for d in devices] == [
        "vhost-user-blk-pci",
        "vhost-user-blk-pci",
        "vhost-user-scsi-pci",
        "vhost-user-fs-pci",
        "virtio-net-pci",
    ]
    assert len(_after(result.qemu.argv, "-chardev")) == 5
    assert _after(result.qemu.argv, "-object") == ["memory-backend-memfd,id=vmdev-ram,size=256M,share=on"]
    assert len({d.id for d in result.devices}) == 5


def test_reconnect_reaches_chardev_and_qmp(run: Any, store: Any) -> None:
    store.device("b0", 241, 0)
    cold = run(blk(), options={"vhost_user_reconnect_timeout_sec": 4})
    assert _after(cold.qemu.argv, "-chardev")[0].endswith(",reconnect=4")
    hot = run(blk(), hotplug=True, options={"vhost_user_reconnect_timeout_sec": 4})
    assert hot.qemu.hotplug[0].arguments["backend"]["data"]["reconnect"] == 4


def test_qemu_hotplug_and_unplug_commands(run: Any, store: Any) -> None:
    socket = store.device("vhostblk0", 241, 0)
    result = run(blk(), hotplug=True)
    dev_id = result.devices[0].id
    assert [c.to_json() for c in result.qemu.hotplug] == [
        {
            "execute": "chardev-add",
            "arguments": {
                "id": f"chr-{dev_id}",
                "backend": {
                    "type": "socket",
                    "data": {"addr": {"type": "unix", "data": {"path": str(socket)}}, "server": False},
                },
            },
        },
        {
            "execute": "device_add",
            "arguments": {
                "driver": "vhost-user-blk-pci",
                "id": dev_id,
                "chardev": f"chr-{dev_id}",
                "bus": "rp0",
            },
        },
    ]
    assert [c.to_json() for c in result.qemu.unplug] == [
        {"execute": "device_del", "arguments": {"id": dev_id}},
        {"execute": "chardev-remove", "arguments": {"id": f"chr-{dev_id}"}},
    ]
    argv = result.qemu.argv
    assert "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1" in argv
    assert "memory-backend-memfd,id=vmdev-ram,size=256M,share=on" in argv  # shared RAM from boot
    assert not any(a.startswith("vhost-user-blk-pci") for a in argv)
    assert result.devices[0].hotplug is True


def test_net_hotplug_adds_and_removes_the_netdev(run: Any) -> None:
    result = run(hotplug=True, options=NET)
    dev_id = result.devices[0].id
    assert [c.execute for c in result.qemu.hotplug] == ["chardev-add", "netdev_add", "device_add"]
    assert result.qemu.hotplug[1].arguments == {
        "type": "vhost-user",
        "id": f"netdev-{dev_id}",
        "chardev": f"chr-{dev_id}",
    }
    assert result.qemu.hotplug[2].arguments == {
        "driver": "virtio-net-pci",
        "id": dev_id,
        "netdev": f"netdev-{dev_id}",
        "mac": "52:54:00:12:34:56",
        "vectors": 0,
        "bus": "rp0",
    }
    assert [(c.execute, c.arguments) for c in result.qemu.unplug] == [
        ("device_del", {"id": dev_id}),
        ("netdev_del", {"id": f"netdev-{dev_id}"}),
        ("chardev-remove", {"id": f"chr-{dev_id}"}),
    ]


def test_net_cold_plug_and_msix_opt_in(run: Any) -> None:
    entries = [
        {"socket": "/run/net0.sock", "mac": "52:54:00:12:34:56"},
        {"socket": "/run/net1.sock", "mac": "52:54:00:AB:CD:EF", "msix": True},
    ]
    result = run(options={"vhost_user_net": entries})
    first, second = (d.id for d in result.devices)
    assert _after(result.qemu.argv, "-netdev") == [
        f"vhost-user,id=netdev-{first},chardev=chr-{first}",
        f"vhost-user,id=netdev-{second},chardev=chr-{second}",
    ]
    assert _after(result.qemu.argv, "-device") == [
        f"virtio-net-pci,id={first},netdev=netdev-{first},mac=52:54:00:12:34:56,vectors=0",
        f"virtio-net-pci,id={second},netdev=netdev-{second},mac=52:54:00:ab:cd:ef",
    ]


@pytest.mark.parametrize(
    ("entries", "field", "message"),
    [
        ([{"socket": "/s", "mac": "01:00:5e:00:00:01"}], "vhost_user_net[0].mac", "multicast"),
        ([{"socket": "/s", "mac": "00:00:00:00:00:00"}], "vhost_user_net[0].mac", "not a usable MAC"),
        ([{"socket": "/s", "mac": "52:54:00:12:34"}], "vhost_user_net[0].mac", "must be a MAC address"),
        ([{"socket": "s", "mac": "52:54:00:12:34:56"}], "vhost_user_net[0].socket", "absolute socket path"),
        (
            [{"socket": "/" + "x" * 107, "mac": "52:54:00:12:34:56"}],
            "vhost_user_net[0].socket",
            "at most 107",
        ),
        (
            [{"socket": "/s", "mac": "52:54:00:12:34:56", "queues": 2}],
            "vhost_user_net[0]",
            "unknown key(s) queues",
        ),
        (
            [{"socket": "/s", "mac": "52:54:00:12:34:56"}, {"socket": "/t", "mac": "52:54:00:12:34:56"}],
            "vhost_user_net[1].mac",
            "already used by vhost_user_net[0]",
        ),
    ],
)
def test_bad_net_settings(run: Any, entries: Any, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        run(options={"vhost_user_net": entries})
    assert message in exc.value.message
    assert (exc.value.device, exc.value.field) == ("vhost-user-net", field)


@pytest.mark.parametrize("entries", [{"socket": "/s"}, ["/s"], "/s"])
def test_net_settings_must_be_a_list_of_tables(run: Any, entries: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        run(options={"vhost_user_net": entries})
    assert str(exc.value) == f"vhost_user_net: must be a list of tables, got {entries!r}"


def test_virtio_fs_cold_plug(run: Any) -> None:
    result = run(
        options={**FS, "virtio_fs_tag": "myfs", "virtio_fs_queue_size": 512, "virtio_fs_cache": "auto"}
    )
    (dev,) = result.devices
    assert (dev.device.tag, dev.device.queue_size, dev.device.cache, dev.device.socket_path) == (
        "myfs",
        512,
        "auto",
        "/run/vfs.sock",
    )
    assert _after(result.qemu.argv, "-device") == [
        f"vhost-user-fs-pci,id={dev.id},chardev=chr-{dev.id},tag=myfs,queue-size=512"
    ]
    assert dev.container_path is None and dev.host_path == ""


def test_virtio_fs_defaults_are_katas(run: Any) -> None:
    (dev,) = run(options={**FS, "shared_fs": "virtio-fs-nydus"}).devices
    assert (dev.device.tag, dev.device.queue_size, dev.device.cache) == ("kataShared", 1024, "")


@pytest.mark.parametrize("kind", ["virtio-9p", "none"])
def test_other_shared_fs_kinds_are_not_vhost_user(run: Any, kind: str) -> None:
    # issue 10: virtio-9p used to plan nothing at all; it is QEMU's 9p server now (test_shared_fs.py)
    kinds = [d.kind for d in run(options={"shared_fs": kind}).devices]
    assert kinds == (["virtio-9p"] if kind == "virtio-9p" else [])


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"shared_fs": "virtio-fs"}, "virtio_fs_daemon", "needs the daemon to start"),
        ({"shared_fs": "nfs"}, "shared_fs", "'nfs' is not one of"),
        ({**FS, "virtio_fs_queue_size": 1000}, "virtio_fs_queue_size", "power of two"),
        ({**FS, "virtio_fs_queue_size": 2048}, "virtio_fs_queue_size", "power of two"),
        ({**FS, "virtio_fs_tag": "t" * 37}, "virtio_fs_tag", "longer than the 36 bytes"),
        ({**FS, "virtio_fs_tag": ""}, "virtio_fs_tag", "non-empty"),
        ({**FS, "virtio_fs_cache": "sometimes"}, "virtio_fs_cache", "'sometimes' is not one of"),
        ({**FS, "virtio_fs_cache_size": -1}, "virtio_fs_cache_size", "from 0 to"),
        ({**FS, "virtio_fs_socket": "rel.sock"}, "virtio_fs_socket", "absolute socket path"),
        ({"vhost_user_reconnect_timeout_sec": "5"}, "vhost_user_reconnect_timeout_sec", "integer"),
        ({"enable_vhost_user_store": "yes"}, "enable_vhost_user_store", "true or false"),
        ({"vhost_user_store_path": "relative"}, "vhost_user_store_path", "absolute"),
    ],
)
def test_bad_settings(run: Any, options: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        run(options=options)
    assert message in exc.value.message and exc.value.field == field


def test_dax_window_is_refused_on_qemu_and_clh(run: Any) -> None:
    options = {**FS, "virtio_fs_cache_size": 1024}
    with pytest.raises(UnsupportedError, match="no DAX window") as exc:
        run(options=options)
    assert exc.value.field == "virtio_fs_cache_size" and exc.value.device.startswith("vhufs-")
    with pytest.raises(UnsupportedError, match="Cloud Hypervisor's virtio-fs has no DAX window"):
        run(hypervisor="cloud-hypervisor", options=options)


def test_values_are_escaped(run: Any) -> None:
    options = {
        "shared_fs": "virtio-fs",
        "virtio_fs_socket": "/run/a,path=/etc/x.sock",
        "virtio_fs_tag": "t,ag=x",
    }
    result = run(options=options)
    dev_id = result.devices[0].id
    assert split_opts(_after(result.qemu.argv, "-chardev")[0]) == [
        "socket",
        f"id=chr-{dev_id}",
        "path=/run/a,path=/etc/x.sock",
    ]
    assert split_opts(_after(result.qemu.argv, "-device")[0])[3] == "tag=t,ag=x"


def test_transports(run: Any, store: Any) -> None:
    store.device("b0", 241, 0)
    micro = run(blk(), hotplug=True, machine_type="microvm", options=NET)  # no hot plug on mmio: cold
    assert [split_opts(d)[0] for d in _after(micro.qemu.argv, "-device")] == [
        "vhost-user-blk",
        "virtio-net-device",
    ]
    assert micro.qemu.hotplug == ()
    assert micro.qemu.argv[1] == "microvm,memory-backend=vmdev-ram"
    ccw = run(machine_type="s390-ccw-virtio", options={**FS, **NET})
    assert [split_opts(d)[0] for d in _after(ccw.qemu.argv, "-device")] == [
        "vhost-user-fs-ccw",
        "virtio-net-ccw",
    ]
    with pytest.raises(UnsupportedError, match="no vhost-user-blk-pci device for the ccw transport") as exc:
        run(blk(), machine_type="s390-ccw-virtio")
    assert (exc.value.device, exc.value.field) == ("/dev/vhu0", "type")
    pc = run(blk(), hotplug=True, machine_type="pc")  # no PCIe root ports on pc: the default bus
    assert "bus" not in pc.qemu.hotplug[1].arguments


# --- Cloud Hypervisor and Firecracker ------------------------------------------------------------


def test_cloud_hypervisor_boot_config(run: Any, store: Any) -> None:
    blk_sock = store.device("b0", 241, 0)
    scsi_sock = store.device("s0", 242, 0)
    result = run(blk("/dev/a"), blk("/dev/b", 242, 0), hypervisor="cloud-hypervisor", options={**FS, **NET})
    ids = [d.id for d in result.devices]
    config = result.to_json()["cloud_hypervisor"]["vm_config"]
    assert config == {
        "memory": {"size": 256 * 1024 * 1024, "shared": True},
        "disks": [{"id": ids[0], "vhost_user": True, "vhost_socket": str(blk_sock)}],
        "generic_vhost_user": [
            {"id": ids[1], "socket": str(scsi_sock), "device_type": 8, "queue_sizes": [128, 128, 128]}
        ],
        "fs": [
            {
                "id": ids[2],
                "tag": "kataShared",
                "socket": "/run/vfs.sock",
                "num_queues": 1,
                "queue_size": 1024,
            }
        ],
        "net": [
            {
                "id": ids[3],
                "vhost_user": True,
                "vhost_socket": "/run/net0.sock",
                "vhost_mode": "Client",
                "mac": "52:54:00:12:34:56",
            }
        ],
    }


def test_cloud_hypervisor_hotplug(run: Any, store: Any) -> None:
    socket = store.device("b0", 241, 0)
    data = run(blk(), hypervisor="cloud-hypervisor", hotplug=True).to_json()
    dev_id = data["devices"][0]["id"]
    assert data["cloud_hypervisor"] == {
        "vm_config": {"memory": {"size": 256 * 1024 * 1024, "shared": True}},
        "hotplug": [
            {
                "method": "PUT",
                "path": "/api/v1/vm.add-disk",
                "body": {"id": dev_id, "vhost_user": True, "vhost_socket": str(socket)},
            }
        ],
        "unplug": [{"method": "PUT", "path": "/api/v1/vm.remove-device", "body": {"id": dev_id}}],
    }


def test_cloud_hypervisor_has_no_reconnect_timeout(run: Any, store: Any) -> None:
    store.device("b0", 241, 0)
    with pytest.raises(UnsupportedError, match="Cloud Hypervisor has no vhost-user reconnect timeout") as exc:
        run(blk(), hypervisor="cloud-hypervisor", options={"vhost_user_reconnect_timeout_sec": 2})
    assert exc.value.device == "/dev/vhu0"


def test_firecracker_vhost_user_blk_drive(run: Any, store: Any) -> None:
    socket = store.device("b0", 241, 0)
    data = run(blk(), hypervisor="firecracker", hotplug=True).to_json()  # no hot plug: pre-boot request
    dev_id = data["devices"][0]["id"]
    assert data["firecracker"] == {
        "requests": [
            {
                "method": "PUT",
                "path": f"/drives/{dev_id}",
                "body": {"drive_id": dev_id, "is_root_device": False, "socket": str(socket)},
            }
        ],
        "hotplug": [],
        "unplug": [],
    }
    assert data["devices"][0]["hotplug"] is False


@pytest.mark.parametrize("options", [FS, NET])
def test_firecracker_has_no_fs_or_net_vhost_user(run: Any, options: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedError, match=r"Firecracker has no .* device") as exc:
        run(hypervisor="firecracker", options=options)
    assert exc.value.field == "type"


def test_firecracker_has_no_scsi(run: Any, store: Any) -> None:
    store.device("s0", 242, 0)
    with pytest.raises(UnsupportedError, match="Firecracker has no vhost-user-scsi-pci device"):
        run(blk("/dev/s", 242, 0), hypervisor="firecracker")


# --- settings file, and living next to a block plugin -------------------------------------------


def test_kata_configuration_file(tmp_path: Any, fake_host: FakeHost, vmdev_plugins: Any) -> None:
    config = tmp_path / "configuration.toml"
    config.write_text(
        '[hypervisor.qemu]\nshared_fs = "virtio-fs"\nvirtio_fs_socket = "/run/vfs.sock"\nvirtio_fs_queue_size = 256\n'
        '[[hypervisor.qemu.vhost_user_net]]\nsocket = "/run/n.sock"\nmac = "52:54:00:00:00:01"\n'
    )
    pm = vmdev_plugins("vmdev-vhostuser")
    result = plan(parse_spec({}), load_settings(config, plugins=pm), host=fake_host.context(), plugins=pm)
    devices = [d.device for d in result.devices if isinstance(d.device, VhostUserDeviceAttrs)]
    assert len(devices) == len(result.devices)
    assert [(d.type, d.socket_path) for d in devices] == [
        ("vhost-user-fs-pci", "/run/vfs.sock"),
        ("virtio-net-pci", "/run/n.sock"),
    ]
    assert devices[0].queue_size == 256


class GreedyBlockPlugin:
    """Stands in for vmdev-block: claims every block device it is shown."""

    from vmdev import hookimpl

    @hookimpl
    def build_device(self, info: DeviceInfo) -> Any:
        if info.dev_type != "b":
            return None
        return GenericDevice(
            id=f"blk{info.minor}",
            container_path=info.container_path,
            host_path=info.host_path,
            dev_type="c",
            major=info.major,
            minor=info.minor,
        )


def test_store_devices_are_ours_even_next_to_a_block_plugin(
    fake_host: FakeHost, store: Any, vmdev_plugins: Any
) -> None:
    store.device("b0", 241, 0)
    fake_host.block_device(8, 0, "sda")
    pm = vmdev_plugins("vmdev-vhostuser", extra=[("block", GreedyBlockPlugin())])
    spec = parse_spec({"linux": {"devices": [blk(), blk("/dev/sda", 8, 0)]}})
    result = plan(spec, SandboxSettings(options=store.options()), host=store.context(), plugins=pm)
    assert [(d.plugin, d.kind) for d in result.devices] == [("vhostuser", "vhost-user"), ("block", "generic")]
