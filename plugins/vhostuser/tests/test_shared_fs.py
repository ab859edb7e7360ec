"""The sandbox's shared file system (issue 10): Kata's own files plan as they are.

* ``shared_fs = "virtio-fs"`` without ``virtio_fs_socket``: the vhost-user-fs device on Kata's socket
  and the virtiofsd Kata would start, in the plan's ``daemons`` section;
* ``virtio-9p``: QEMU's ``-fsdev local`` + ``virtio-9p-*`` (refused where a hypervisor has none);
* ``none``: nothing; ``virtio-fs-nydus`` without a socket and ``inline-virtio-fs``: refused.

Every shipped Kata configuration file (tests/realworld/kata, Kata 4.1.0 rendered by its Makefiles)
is planned: a share it asks for is planned or refused, never silently nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.errors import ConfigError, UnsupportedError
from vmdev.oci import parse_spec
from vmdev.planner import Plan, plan
from vmdev.plugins import PluginManager
from vmdev.serialize import to_json
from vmdev.settings import SandboxSettings, load_settings
from vmdev.testing import FakeHost
from vmdev_vhostuser.config import FsDaemon
from vmdev_vhostuser.daemon import virtiofsd_args
from vmdev_vhostuser.device import VhostUserDeviceAttrs, Virtio9pShare, from_state

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

KATA = Path(__file__).resolve().parents[3] / "tests" / "realworld" / "kata"
KATA_QEMU = KATA / "go" / "amd64" / "configuration-qemu.toml"
#: what Kata's shipped files say about the daemon (Go runtime)
KATA_DAEMON = "/opt/kata/libexec/virtiofsd"
KATA_SOCKET = "/run/vc/vm/vmdev/vhost-fs.sock"
KATA_SHARE = "/run/kata-containers/shared/sandboxes/vmdev/shared"
FS = {"shared_fs": "virtio-fs", "virtio_fs_daemon": "/usr/lib/qemu/virtiofsd"}
NINEP = {"shared_fs": "virtio-9p", "shared_dir": "/srv/share"}


@pytest.fixture
def make(pm: PluginManager, fake_host: FakeHost) -> Any:
    def make(hypervisor: str = "qemu", machine_type: str = "q35", hotplug: bool = False,
             **options: Any) -> Plan:
        settings = SandboxSettings(hypervisor=hypervisor, machine_type=machine_type, memory_mib=256,
                                   hotplug=hotplug, options=options)
        return plan(parse_spec({}), settings, host=fake_host.context(), plugins=pm)

    return make


def _kata_plan(pm: PluginManager, fake_host: FakeHost, path: Path, **overrides: Any) -> Plan:
    settings = load_settings(path, overrides=overrides, plugins=pm)
    return plan(parse_spec({}), settings, host=fake_host.context(), plugins=pm)


# --- virtio-fs: the daemon Kata would start -------------------------------------------------------


def test_kata_qemu_configuration_plans_the_device_and_the_virtiofsd_kata_starts(
    pm: PluginManager, fake_host: FakeHost
) -> None:
    result = _kata_plan(pm, fake_host, KATA_QEMU)
    (planned,) = result.devices
    device = planned.device
    assert isinstance(device, VhostUserDeviceAttrs)
    assert (device.type, device.socket_path, device.tag, device.queue_size, device.cache) == (
        "vhost-user-fs-pci", KATA_SOCKET, "kataShared", 1024, "auto"
    )
    assert result.extras["daemons"] == [
        {
            "id": "virtiofsd",
            "program": KATA_DAEMON,
            "args": ["-o", "cache=auto", "-o", f"source={KATA_SHARE}",
                     f"--socket-path={KATA_SOCKET}", "--thread-pool-size=1", "--announce-submounts"],
            "socket": KATA_SOCKET,
            "for": device.id,
            "directories": ["/run/vc/vm/vmdev", KATA_SHARE],
        }
    ]
    assert result.to_json()["daemons"] == result.extras["daemons"]
    assert f"socket,id=chr-{device.id},path={KATA_SOCKET}" in result.qemu.argv


def test_the_runtime_and_shared_directories_and_the_daemon_are_settings(make: Any) -> None:
    result = make(**FS, sandbox_runtime_dir="/run/vmdev/sb1/", shared_dir="/srv/sb1//shared/",
                  virtio_fs_extra_args=["--thread-pool-size=1", "-o", "announce_submounts"],
                  virtio_fs_cache="always")
    (daemon,) = result.extras["daemons"]
    assert daemon["program"] == "/usr/lib/qemu/virtiofsd"
    assert daemon["args"] == ["-o", "cache=always", "-o", "source=/srv/sb1/shared",
                              "--socket-path=/run/vmdev/sb1/vhost-fs.sock", "--thread-pool-size=1", "-o",
                              "announce_submounts"]
    assert (daemon["socket"], daemon["directories"]) == ("/run/vmdev/sb1/vhost-fs.sock",
                                                         ["/run/vmdev/sb1", "/srv/sb1/shared"])
    assert result.devices[0].device.socket_path == daemon["socket"]


@pytest.mark.parametrize(
    ("hypervisor", "cache", "spelled"),
    [("qemu", "", "none"), ("qemu", "never", "none"), ("qemu", "metadata", "metadata"),
     ("cloud-hypervisor", "", "auto"), ("qemu", "none", "none")],
)
def test_kata_s_cache_default_and_the_c_daemon_s_spelling(
    make: Any, hypervisor: str, cache: str, spelled: str
) -> None:
    """Kata: an unset cache is never for QEMU (katautils) and auto for Cloud Hypervisor
    (virtiofsd.valid); the C virtiofsd calls never none."""
    result = make(hypervisor, **FS, virtio_fs_cache=cache)
    (daemon,) = result.extras["daemons"]
    assert daemon["args"][:2] == ["-o", f"cache={spelled}"]


def test_cloud_hypervisor_uses_kata_s_socket_name_for_it(make: Any) -> None:
    result = make("cloud-hypervisor", **FS)
    (daemon,) = result.extras["daemons"]
    assert daemon["socket"] == "/run/vc/vm/vmdev/virtiofsd.sock"
    assert result.to_json()["cloud_hypervisor"]["vm_config"]["fs"][0]["socket"] == daemon["socket"]


def test_a_guest_with_selinux_gets_extended_attributes(make: Any) -> None:
    (daemon,) = make(**FS, disable_guest_selinux=False, virtio_fs_extra_args=["-o", "announce_submounts"]
                     ).extras["daemons"]
    assert daemon["args"][-4:] == ["-o", "announce_submounts", "-o", "xattr"]


def test_arguments_follow_kata_s_order() -> None:
    daemon = FsDaemon(program="/p", shared_dir="/s", runtime_dir="/r", cache="never", extra_args=("-x",),
                      xattr=True)
    assert virtiofsd_args(daemon, "/r/s.sock") == [
        "-o", "cache=none", "-o", "source=/s", "--socket-path=/r/s.sock", "-x", "-o", "xattr"
    ]


def test_a_running_daemon_s_socket_plans_no_daemon(make: Any) -> None:
    result = make(**FS, virtio_fs_socket="/run/mine.sock")
    assert result.devices[0].device.socket_path == "/run/mine.sock"
    assert "daemons" not in result.to_json() and dict(result.extras) == {}


def test_no_share_means_no_daemons_section(make: Any) -> None:
    assert "daemons" not in make(shared_fs="none").to_json()
    assert make().devices == ()


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"shared_fs": "virtio-fs"}, "virtio_fs_daemon", "cannot enable virtio-fs without daemon path"),
        ({"shared_fs": "virtio-fs-nydus", "virtio_fs_daemon": "/usr/bin/nydusd"}, "virtio_fs_socket",
         "vmdev does not plan nydusd"),
        ({**FS, "sandbox_runtime_dir": "/run/" + "d" * 100}, "sandbox_runtime_dir", "UNIX sockets allow at most"),
        ({**FS, "shared_dir": "/srv/a,b"}, "shared_dir", "'-o source=' option cannot carry"),
        ({**FS, "shared_dir": "/srv/a=b"}, "shared_dir", "'-o source=' option cannot carry"),
        ({**FS, "virtio_fs_daemon": "virtiofsd"}, "virtio_fs_daemon", "absolute path to a program"),
        ({**FS, "sandbox_runtime_dir": "run/x"}, "sandbox_runtime_dir", "absolute directory path"),
        ({**FS, "virtio_fs_extra_args": "--x"}, "virtio_fs_extra_args", "must be a list of strings"),
        ({**FS, "virtio_fs_extra_args": ["a\0b"]}, "virtio_fs_extra_args", "NUL"),
        ({**FS, "disable_guest_selinux": "no"}, "disable_guest_selinux", "true or false"),
        ({"shared_fs": "inline-virtio-fs"}, "shared_fs", "Dragonball's in-VMM virtio-fs"),
        ({**NINEP, "msize_9p": 4095}, "msize_9p", "at least 4096"),
        ({**NINEP, "msize_9p": -1}, "msize_9p", "from 0 to"),
        ({**NINEP, "shared_dir": ""}, "shared_dir", "absolute directory path"),
    ],
)
def test_settings_that_cannot_be_served_are_one_line_errors(
    make: Any, options: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        make(**options)
    assert message in exc.value.message and exc.value.field == field
    assert "\n" not in str(exc.value)


def test_a_comma_in_the_shared_dir_is_fine_for_9p_qemu_escapes_it(make: Any) -> None:
    result = make(shared_fs="virtio-9p", shared_dir="/srv/a,b")
    assert any("path=/srv/a,,b," in arg for arg in result.qemu.argv)


# --- virtio-9p -------------------------------------------------------------------------------------


def test_virtio_9p_is_rendered_as_kata_does_on_qemu(make: Any) -> None:
    result = make(**NINEP, msize_9p=65536)
    (planned,) = result.devices
    share = planned.device
    assert isinstance(share, Virtio9pShare)
    fsdev = f"fsdev-{share.id}"
    assert list(result.qemu.argv[-4:]) == [
        "-fsdev", f"local,id={fsdev},path=/srv/share,security_model=none,multidevs=remap",
        "-device", f"virtio-9p-pci,id={share.id},fsdev={fsdev},mount_tag=kataShared",
    ]
    data = planned.to_json()
    assert (data["kind"], data["host_path"], data["msize"], data["driver"]) == (
        "virtio-9p", "/srv/share", 65536, "virtio-9p-pci"
    )
    assert data["guest_mount"] == {
        "source": "kataShared", "fstype": "9p",
        "options": ["trans=virtio,version=9p2000.L,cache=mmap", "nodev", "msize=65536"],
    }
    assert "memory-backend" not in " ".join(result.qemu.argv)  # QEMU serves 9p itself: no shared RAM
    assert "daemons" not in result.to_json()


def test_kata_s_msize_default_and_the_tag_setting(make: Any) -> None:
    (planned,) = make(**NINEP, msize_9p=0, virtio_fs_tag="hostshare").devices
    assert (planned.device.msize, planned.device.mount_tag) == (8192, "hostshare")


@pytest.mark.parametrize(
    ("machine", "driver"), [("microvm", "virtio-9p-device"), ("s390-ccw-virtio", "virtio-9p-ccw")]
)
def test_virtio_9p_follows_the_transport(make: Any, machine: str, driver: str) -> None:
    result = make(machine_type=machine, **NINEP)
    assert result.qemu.argv[-1].startswith(f"{driver},")


def test_virtio_9p_is_always_cold_plugged(make: Any) -> None:
    """QEMU has no QMP command that adds an -fsdev."""
    result = make(hotplug=True, **NINEP)
    assert result.qemu.hotplug == () and result.devices[0].hotplug is False
    assert "-fsdev" in result.qemu.argv


@pytest.mark.parametrize(("hypervisor", "message"), [
    ("cloud-hypervisor", "Cloud Hypervisor has no virtio-9p device"),
    ("firecracker", "Firecracker has no virtio-9p device"),
])
def test_virtio_9p_is_refused_where_the_hypervisor_has_none(make: Any, hypervisor: str, message: str) -> None:
    with pytest.raises(UnsupportedError, match=message) as exc:
        make(hypervisor, **NINEP)
    assert exc.value.field == "shared_fs"


def test_a_9p_share_is_rebuilt_from_its_saved_form(make: Any) -> None:
    (planned,) = make(**NINEP).devices
    saved = json.loads(json.dumps(to_json(planned.device)))
    assert from_state("virtio-9p", saved) == planned.device


# --- every shipped Kata file -------------------------------------------------------------------------

#: Kata section -> vmdev backend (the others have no backend here: their keys only parse)
BACKENDS = {"qemu": "qemu", "clh": "cloud-hypervisor", "firecracker": "firecracker"}


def _kata_files() -> list[Path]:
    files = sorted(KATA.glob("*/*/configuration*.toml"))
    assert len(files) >= 40, f"the repository's Kata corpus is not at {KATA}"
    return files


def test_every_shipped_kata_file_plans_its_share_or_refuses_it(pm: PluginManager, fake_host: FakeHost) -> None:
    outcomes: dict[tuple[str, str], set[str]] = {}
    for path in _kata_files():
        for section, table in tomllib.loads(path.read_text())["hypervisor"].items():
            kind = table.get("shared_fs", "")
            backend = BACKENDS.get(section)
            if backend is None:  # dragonball, remote, stratovirt, openvmm: the keys parse or refuse
                outcome = _parse_only(pm, table)
            else:
                outcome = _plan_outcome(pm, fake_host, backend, table)
            outcomes.setdefault((section, kind), set()).add(outcome)
    assert outcomes == {
        ("qemu", "virtio-fs"): {"vhost-user-fs-pci + virtiofsd"},
        ("qemu", "none"): {"no share"},
        ("clh", "virtio-fs"): {"vhost-user-fs-pci + virtiofsd"},
        ("firecracker", ""): {"no share"},
        ("remote", ""): {"parsed"},
        ("stratovirt", "virtio-fs"): {"parsed"},
        ("dragonball", "inline-virtio-fs"): {"refused: shared_fs"},
        ("openvmm", "virtio-fs"): {"parsed"},
    }


def _plan_outcome(pm: PluginManager, fake_host: FakeHost, backend: str, table: dict[str, Any]) -> str:
    options = {k: v for k, v in table.items() if k not in ("machine_type", "default_memory")}
    settings = SandboxSettings(hypervisor=backend, machine_type=table.get("machine_type") or "q35",
                               memory_mib=256, options=options)
    result = plan(parse_spec({}), settings, host=fake_host.context(), plugins=pm)
    shares = [d.device for d in result.devices]
    if not shares:
        return "no share"
    (share,) = shares
    assert isinstance(share, VhostUserDeviceAttrs)
    (daemon,) = result.extras["daemons"]
    assert daemon["program"] == table["virtio_fs_daemon"] and daemon["for"] == share.id
    assert share.type == "vhost-user-fs-pci"  # the device type; the driver follows the transport
    return f"{share.type} + virtiofsd"


def _parse_only(pm: PluginManager, table: dict[str, Any]) -> str:
    try:
        pm.prepare_settings(SandboxSettings(options=table))
    except ConfigError as exc:
        return f"refused: {exc.field}"
    return "parsed"


def test_s390x_kata_file_gives_the_ccw_device(pm: PluginManager, fake_host: FakeHost) -> None:
    table = tomllib.loads((KATA / "go" / "s390x" / "configuration-qemu.toml").read_text())["hypervisor"]["qemu"]
    settings = SandboxSettings(machine_type="s390-ccw-virtio", memory_mib=256, options=table)
    result = plan(parse_spec({}), settings, host=fake_host.context(), plugins=pm)
    assert result.qemu.argv[-1].startswith("vhost-user-fs-ccw,")
    assert result.extras["daemons"][0]["program"] == KATA_DAEMON


# --- the command line ------------------------------------------------------------------------------


def test_the_flags_adapt_kata_s_file_to_the_c_daemon(tmp_path: Path) -> None:
    from vmdev.cli import main

    spec = tmp_path / "config.json"
    spec.write_text('{"ociVersion": "1.0.2"}')
    args = ["plan", "--config", str(KATA_QEMU), "--memory", "256", "--runtime-dir", "/run/x",
            "--shared-dir", "/srv/x", "--virtio-fs-daemon", "/usr/lib/qemu/virtiofsd",
            "--virtio-fs-extra-arg=--thread-pool-size=1", "--virtio-fs-extra-arg", "-o",
            "--virtio-fs-extra-arg", "announce_submounts", str(spec)]
    done = CliRunner().invoke(main, args, env={"VMDEV_PLUGINS": "vmdev-vhostuser"})
    assert done.exit_code == 0, done.output
    (daemon,) = json.loads(done.output)["daemons"]
    assert [daemon["program"], *daemon["args"]] == [
        "/usr/lib/qemu/virtiofsd", "-o", "cache=auto", "-o", "source=/srv/x",
        "--socket-path=/run/x/vhost-fs.sock", "--thread-pool-size=1", "-o", "announce_submounts",
    ]
    ninep = CliRunner().invoke(main, [*args[:-1], "--shared-fs", "virtio-9p", str(spec)],
                               env={"VMDEV_PLUGINS": "vmdev-vhostuser"})
    assert ninep.exit_code == 0, ninep.output
    assert [d["kind"] for d in json.loads(ninep.output)["devices"]] == ["virtio-9p"]


# --- the device manager ----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [FS, NINEP], ids=["virtio-fs", "virtio-9p"])
def test_the_device_manager_keeps_the_share_and_the_plan_keeps_its_daemon(
    pm: PluginManager, fake_host: FakeHost, options: dict[str, Any]
) -> None:
    from vmdev.manager import DeviceManager

    settings = pm.prepare_settings(SandboxSettings(memory_mib=256, options=options))
    manager = DeviceManager(settings, host=fake_host.context(), plugins=pm)
    result = manager.plan_boot(parse_spec({}))
    (planned,) = result.devices
    assert ("daemons" in result.to_json()) is (options is FS)
    saved = manager.snapshot().device(planned.id)
    assert saved is not None and saved.plugin == "vhostuser"
    rebuilt = pm.device_from_state(saved.kind, saved.device, saved.plugin, name=saved.name)
    assert rebuilt == planned.device


def test_enable_iommu_platform_gives_the_ccw_fs_and_9p_devices_iommu_platform_as_kata() -> None:
    from vmdev.backend import RenderContext
    from vmdev.backends.qemu import QemuTarget
    from vmdev.settings import SandboxSettings
    from vmdev_vhostuser.render_qemu import _device_props

    settings = SandboxSettings(machine_type="s390-ccw-virtio", values={"enable_iommu_platform": True})
    target = QemuTarget(settings, RenderContext())
    assert target.virtio_options() == {"iommu_platform": True}
    pci = QemuTarget(SandboxSettings(values={"enable_iommu_platform": True}), RenderContext())
    assert pci.virtio_options() == {}
    from vmdev_vhostuser.device import VHOST_USER_FS, VhostUserDeviceAttrs

    fs = VhostUserDeviceAttrs(dev_id="fs0", socket_path="/run/fs.sock", type=VHOST_USER_FS, tag="kataShared")
    assert _device_props(fs, target, "chr-fs0", "", "fs0")["iommu_platform"] is True
    assert "iommu_platform" not in _device_props(fs, pci, "chr-fs0", "", "fs0")


def test_enable_iommu_puts_cloud_hypervisor_vhost_user_disks_and_nics_behind_the_viommu() -> None:
    from vmdev.backend import RenderContext
    from vmdev.backends.clh import ClhTarget
    from vmdev.settings import SandboxSettings
    from vmdev_vhostuser.device import VHOST_USER_BLK, VhostUserDeviceAttrs
    from vmdev_vhostuser.render_clh import render

    blk = VhostUserDeviceAttrs(dev_id="blk0", socket_path="/run/blk.sock", type=VHOST_USER_BLK)
    on = render(blk, ClhTarget(SandboxSettings(values={"enable_iommu": True}), RenderContext()), False)
    off = render(blk, ClhTarget(SandboxSettings(values={"enable_iommu": False}), RenderContext()), False)
    assert on.vm_config["disks"][0]["iommu"] is True and "iommu" not in off.vm_config["disks"][0]
