"""``vmdev attach`` / ``detach`` / ``status`` and ``plan --state`` against a fake QEMU on a QMP socket
(QEMU's live driver, ``--qmp``), and books only for a backend without a live driver.

The device family is a throw-away distribution installed with a real entry point (``make_dist``),
so these tests need nothing but the core.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vmdev.cli import main
from vmdev.fakeqmp import FakeQemu, FakeQmpServer
from vmdev.state import AttachPhase, StateFile
from vmdev.testing import FakeHost

PLUGIN = '''
from typing import ClassVar
import attrs
from vmdev import hookimpl
from vmdev.backends.clh import ClhAttach
from vmdev.qemu import QemuAttach, QmpCommand, make_id
from vmdev.serialize import from_json
from vmdev.targets import ApiRequest


@attrs.frozen
class Disk:
    kind: ClassVar[str] = "testdisk"
    id: str
    container_path: str
    index: int


@attrs.frozen
class Beacon:
    kind: ClassVar[str] = "beacon"
    id: str = "beacon0"


@hookimpl
def resolve_host_path(info, host):
    # the family resolves its block nodes through the (fake) sysfs itself: the CLI stats the real
    # /dev, which has none of the fake host's nodes (the core's resolver would refuse them)
    if info.dev_type != "b" or info.major < 0:
        return None
    text = host.sysfs.read_text(f"dev/block/{info.major}:{info.minor}/uevent") or ""
    names = [line[len("DEVNAME="):] for line in text.splitlines() if line.startswith("DEVNAME=")]
    return "/dev/" + names[0] if names else None


@hookimpl
def build_device(info, alloc):
    if info.dev_type != "b":
        return None
    index = alloc.take("testdisk.index", owner=info.container_path, limit=16, device=info.container_path)
    return Disk(id=make_id("disk", info.container_path + "|" + info.host_path), container_path=info.container_path,
                index=index)


@hookimpl
def sandbox_devices():
    return [Beacon()]


@hookimpl
def device_from_state(kind, data):
    saved = {"testdisk": Disk, "beacon": Beacon}.get(kind)
    return from_json(saved, data) if saved is not None else None


@hookimpl
def attach_options(device, target, hotplug):
    if isinstance(device, Beacon):
        if not hotplug:
            return QemuAttach(args=["-object", "rng-builtin,id=beacon0"])
        bus = target.hotplug_bus(device.id)
        return QemuAttach(
            hotplug=[QmpCommand("object-add", {"qom-type": "rng-builtin", "id": "beacon0"}),
                     QmpCommand("device_add", {"driver": "virtio-rng-pci", "id": "dev-beacon0", "rng": "beacon0",
                                               "bus": bus})],
            unplug=[QmpCommand("device_del", {"id": "dev-beacon0"}), QmpCommand("object-del", {"id": "beacon0"})],
            hotplugged=True, details={"bus": bus})
    if not isinstance(device, Disk):
        return None
    if target.hypervisor == "cloud-hypervisor":
        return ClhAttach(hotplug=[ApiRequest("PUT", "/api/v1/vm.add-disk", {"id": device.id})],
                         unplug=[ApiRequest("PUT", "/api/v1/vm.remove-device", {"id": device.id})],
                         hotplugged=True)
    node = device.id + "-node"
    if not hotplug:
        return QemuAttach(args=["-blockdev", "driver=raw,node-name=" + node], details={"index": device.index})
    bus = target.hotplug_bus(device.container_path)
    return QemuAttach(
        hotplug=[QmpCommand("blockdev-add", {"driver": "raw", "node-name": node}),
                 QmpCommand("device_add", {"driver": "virtio-blk-pci", "id": device.id, "drive": node, "bus": bus})],
        unplug=[QmpCommand("device_del", {"id": device.id}), QmpCommand("blockdev-del", {"node-name": node})],
        hotplugged=True, details={"index": device.index, "bus": bus})
'''


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for UNIX sockets (sun_path holds 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vmq"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(make_dist: Any, monkeypatch: pytest.MonkeyPatch, fake_host: FakeHost) -> FakeHost:
    make_dist("vmdev-testdisk", {"testdisk": "vmdev_testdisk"}, {"vmdev_testdisk": PLUGIN})
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-testdisk")
    for name in ("VMDEV_DISABLE_PLUGINS", "VMDEV_DISABLE_PLUGIN_AUTOLOAD", "VMDEV_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    fake_host.block_device(8, 16, "sdb")
    fake_host.block_device(8, 32, "sdc")
    return fake_host


@pytest.fixture
def qemu(short_dir: Path) -> Iterator[tuple[FakeQemu, FakeQmpServer]]:
    fake = FakeQemu().add_port("rp0").add_port("rp1").add_port("rp2")
    with FakeQmpServer(fake, short_dir / "qmp.sock") as server:
        yield fake, server


def vmdev(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def sandbox(short_dir: Path, env: FakeHost) -> list[str]:
    return ["--state", str(short_dir / "state.json"), "--qmp", str(short_dir / "qmp.sock"),
            "--sysfs-root", str(env.sysfs), "--timeout", "2"]


SDB = ["--type", "b", "--major", "8", "--minor", "16"]


def test_two_containers_share_one_hot_plugged_device(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    fake, _ = qemu
    first = vmdev("attach", *sandbox(short_dir, env), *SDB, "--container", "c1", "--json", "/dev/xvdb")
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    device_id = data["id"]
    assert data["plugged"] is True and data["device"]["attach_count"] == 1
    assert data["device"]["attachment"]["buses"] == ["rp0"] and data["device"]["host_path"] == "/dev/sdb"
    assert fake.leftovers()["devices"] == [device_id]
    second = vmdev("attach", *sandbox(short_dir, env), *SDB, "--container", "c2", "/dev/data")
    assert second.exit_code == 0, second.stderr
    assert f"attached {device_id} (testdisk, /dev/xvdb): attached; attach count 2, references 2" in second.stdout
    status = vmdev("status", "--state", str(short_dir / "state.json"), "--qmp", str(short_dir / "qmp.sock"))
    assert status.exit_code == 0, status.stderr
    assert "vm (qemu, qmp " in status.stdout and "): reachable" in status.stdout
    assert f"{device_id}: device_add {device_id} present in the VM" in status.stdout
    one = vmdev("detach", *sandbox(short_dir, env), *SDB, "--container", "c1", "/dev/xvdb")
    assert one.exit_code == 0 and "attach count 1, references 1" in one.stdout
    assert fake.leftovers()["devices"] == [device_id]  # c2 still uses it
    last = vmdev("detach", *sandbox(short_dir, env), "--id", device_id, "--container", "c2", "--json")
    assert last.exit_code == 0, last.stderr
    assert json.loads(last.stdout) == {"id": device_id, "unplugged": True, "device": None}
    assert fake.leftovers() == {"devices": [], "objects": [], "nodes": [], "chardevs": [], "netdevs": []}
    assert StateFile(short_dir / "state.json").load().devices == ()


def test_sandbox_and_oci_devices(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    fake, _ = qemu
    done = vmdev("attach", *sandbox(short_dir, env), "--sandbox-device", "beacon")
    assert done.exit_code == 0, done.stderr
    assert fake.objects and fake.devices["dev-beacon0"] == ("virtio-rng-pci", "rp0")
    entry = short_dir / "dev.json"
    entry.write_text(json.dumps({"path": "/dev/xvdc", "type": "b", "major": 8, "minor": 32}))
    done = vmdev("attach", *sandbox(short_dir, env), "--oci-device", f"@{entry}", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["device"]["attachment"]["buses"] == ["rp1"]
    done = vmdev("detach", *sandbox(short_dir, env), "--oci-device", entry.read_text())
    assert done.exit_code == 0 and "no container uses it any more; forgotten" in done.stdout
    done = vmdev("detach", *sandbox(short_dir, env), "--sandbox-device", "beacon0")
    assert done.exit_code == 0, done.stderr
    assert fake.leftovers()["objects"] == [] and fake.leftovers()["devices"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one device: .* \\(got none\\)"),
        (["--sandbox-device", "beacon", *SDB, "/dev/x"], "got --type/--major/--minor, --sandbox-device"),
        (["--type", "b", "/dev/x"], "--type, --major, --minor and CONTAINER_PATH are all required"),
        (["--oci-device", '{"path": "/dev/x", "type": "b", "major": -3, "minor": 0}'],
         "/dev/x: --oci-device.major: must be between 0 and"),
        (["--oci-device", "{nope"], "--oci-device: not valid JSON"),
        (["--sandbox-device", "rng"], "rng: id: is not a sandbox device of this sandbox; the plugins offer: beacon0"),
    ],
)
def test_bad_device_descriptions_are_one_line_errors(
    env: FakeHost, qemu: Any, short_dir: Path, args: list[str], message: str
) -> None:
    done = vmdev("attach", *sandbox(short_dir, env), *args)
    assert done.exit_code == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("vmdev: error: ")
    assert re.search(message, done.stderr), done.stderr


def test_no_qemu_is_a_clear_error_and_leaves_no_device(env: FakeHost, short_dir: Path) -> None:
    done = vmdev("attach", *sandbox(short_dir, env), *SDB, "/dev/xvdb")
    assert done.exit_code == 1
    assert "qmp.sock: qmp: cannot connect to QEMU's QMP socket: No such file or directory" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert StateFile(short_dir / "state.json").load().devices == ()
    done = vmdev("detach", *sandbox(short_dir, env), *SDB, "/dev/xvdb")
    assert done.exit_code == 1 and "this sandbox has no such device (block 8:16)" in done.stderr


def test_no_qemu_for_a_device_whose_first_word_to_qemu_is_its_plug_leaves_nothing_either(
    env: FakeHost, short_dir: Path
) -> None:
    """On a pc machine the beacon takes no port and needs nothing checked: the connection is first
    tried by its hot plug, and failing there must not leave an attach of unknown outcome."""
    done = vmdev("attach", *sandbox(short_dir, env), "--machine-type", "pc", "--sandbox-device", "beacon")
    assert done.exit_code == 1
    assert done.stderr.startswith("vmdev: error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "qmp.sock: qmp: cannot connect to QEMU's QMP socket: No such file or directory" in done.stderr
    assert StateFile(short_dir / "state.json").load().devices == ()


def test_a_detach_whose_qemu_is_gone_leaves_the_device_attached_as_it_was(env: FakeHost, short_dir: Path) -> None:
    """The connection is opened by the unplug's first step: failing there sent nothing, so the
    detach is not recorded as under way (as when vmdev connected before it opened the state), and
    a later detach, with QEMU back, unplugs the device."""
    fake = FakeQemu().add_port("rp0")
    with FakeQmpServer(fake, short_dir / "qmp.sock"):
        done = vmdev("attach", *sandbox(short_dir, env), "--sandbox-device", "beacon")
        assert done.exit_code == 0, done.stderr
    before = StateFile(short_dir / "state.json").load().devices
    done = vmdev("detach", *sandbox(short_dir, env), "--sandbox-device", "beacon0")
    assert done.exit_code == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "qmp.sock: qmp: cannot connect to QEMU's QMP socket: No such file or directory" in done.stderr
    after = StateFile(short_dir / "state.json").load().devices
    assert after == before and after[0].attachment is not None
    assert (after[0].attach_count, after[0].attachment.phase, after[0].attachment.error) == (
        1, AttachPhase.ATTACHED, "")
    with FakeQmpServer(fake, short_dir / "qmp.sock"):
        done = vmdev("detach", *sandbox(short_dir, env), "--sandbox-device", "beacon0")
        assert done.exit_code == 0, done.stderr
    assert fake.leftovers()["devices"] == [] and fake.leftovers()["objects"] == []


def test_a_device_that_stays_in_the_container_needs_no_word_with_qemu(env: FakeHost, short_dir: Path) -> None:
    """The QMP socket is connected to when a device needs the VM (a generic device never does), so
    a sandbox whose QEMU is not there (no socket at all) still counts it."""
    env.char_device(1, 3, "null")
    attached = vmdev("attach", *sandbox(short_dir, env), "--type", "c", "--major", "1", "--minor", "3",
                     "--json", "/dev/null")
    assert attached.exit_code == 0, attached.stderr
    assert json.loads(attached.stdout)["device"]["kind"] == "generic"
    assert not (short_dir / "qmp.sock").exists()
    detached = vmdev("detach", *sandbox(short_dir, env), "--type", "c", "--major", "1", "--minor", "3",
                     "/dev/null")
    assert detached.exit_code == 0, detached.stderr
    assert "no container uses it any more; forgotten" in detached.stdout


def test_status_asks_the_vm_itself_even_when_no_device_is_in_it(env: FakeHost, short_dir: Path) -> None:
    """The driver connects when a device first needs the VM; status must still tell an absent QEMU
    from a present one for a sandbox whose devices all stay in the container."""
    env.char_device(1, 3, "null")
    null = ["--type", "c", "--major", "1", "--minor", "3", "/dev/null"]
    assert vmdev("attach", *sandbox(short_dir, env), *null).exit_code == 0
    status = ["status", "--state", str(short_dir / "state.json"), "--qmp", str(short_dir / "qmp.sock")]
    absent = vmdev(*status, "--json")
    assert absent.exit_code == 0, absent.stderr
    vm = json.loads(absent.stdout)["vm"]
    assert vm["reachable"] is False and "cannot connect to QEMU's QMP socket" in vm["error"]
    with FakeQmpServer(FakeQemu().add_port("rp0"), short_dir / "qmp.sock"):
        present = vmdev(*status)
    assert present.exit_code == 0 and "): reachable" in present.stdout, present.stdout


def test_a_rejected_device_add_leaves_nothing_behind(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    fake, _ = qemu
    fake.fail("device_add", "Bus 'rp0' not found")
    done = vmdev("attach", *sandbox(short_dir, env), *SDB, "/dev/xvdb")
    assert done.exit_code == 1
    assert "/dev/xvdb: hotplug: hot plug step 2 of 2, device_add" in done.stderr
    assert "QEMU: Bus 'rp0' not found (GenericError); rolled back: blockdev-del" in done.stderr
    assert fake.leftovers()["nodes"] == [] and StateFile(short_dir / "state.json").load().devices == ()


def test_qemu_dying_during_attach_is_reported_honestly(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    fake, server = qemu
    fake.disconnect_on("device_add")
    done = vmdev("attach", *sandbox(short_dir, env), *SDB, "/dev/xvdb")
    assert done.exit_code == 1 and "QEMU's state is unknown and nothing was rolled back" in done.stderr
    server.kill()
    (record,) = StateFile(short_dir / "state.json").load().devices
    assert record.attachment is not None and record.attachment.phase is AttachPhase.FAILED
    assert record.attachment.steps_done == 1 and record.ref_count == 0
    status = vmdev("status", "--state", str(short_dir / "state.json"), "--qmp", str(short_dir / "qmp.sock"),
                   "--json")
    assert status.exit_code == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["vm"]["hypervisor"] == "qemu" and data["vm"]["connection"] == {"qmp": str(short_dir / "qmp.sock")}
    assert data["vm"]["reachable"] is False and "cannot connect" in data["vm"]["error"]
    assert data["devices"][0]["status"].startswith("attach failed: hot plug step 2 of 2")
    assert "may be left in the VM: device_del " in data["devices"][0]["status"]
    text = vmdev("status", "--state", str(short_dir / "state.json"))
    assert text.exit_code == 0 and "attach failed: hot plug step 2 of 2" in text.stdout


def test_settings_of_a_sandbox_cannot_change(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    assert vmdev("attach", *sandbox(short_dir, env), "--machine-type", "q35", *SDB, "/dev/xvdb").exit_code == 0
    same = vmdev("attach", *sandbox(short_dir, env), "--machine-type", "q35", *SDB, "/dev/xvdb")
    assert same.exit_code == 0
    other = vmdev("attach", *sandbox(short_dir, env), "--memory", "512", *SDB, "/dev/xvdb")
    assert other.exit_code == 1 and "settings: differ from the settings this sandbox was created with" in other.stderr


def test_plan_with_state_records_the_boot_devices(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    fake, _ = qemu
    config = short_dir / "config.json"
    config.write_text(json.dumps({"linux": {"devices": [{"path": "/dev/xvdb", "type": "b", "major": 8,
                                                         "minor": 16}]}}))
    settings = short_dir / "sandbox.toml"
    settings.write_text("[vmdev]\nhotplug_root_ports = 2\n")
    args = ["plan", "--config", str(settings), "--sysfs-root", str(env.sysfs), str(config)]
    plain = vmdev(*args)
    kept = vmdev(*args[:-1], "--state", str(short_dir / "state.json"), str(config))
    assert kept.exit_code == 0, kept.stderr
    assert json.loads(kept.stdout) == json.loads(plain.stdout)
    assert "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2" in json.loads(kept.stdout)["qemu"]["argv"]
    again = vmdev(*args[:-1], "--state", str(short_dir / "state.json"), str(config))
    assert again.exit_code == 1 and "already holds a sandbox" in again.stderr
    state = StateFile(short_dir / "state.json").load()
    assert [p.id for p in state.ports] == ["rp0", "rp1"] and state.settings.option("hotplug_root_ports") == 2
    boot_disk = next(r for r in state.devices if r.kind == "testdisk")
    assert boot_disk.attachment is not None and boot_disk.attachment.resident
    late = vmdev("attach", *sandbox(short_dir, env), "--type", "b", "--major", "8", "--minor", "32", "--json",
                 "/dev/xvdc")
    assert late.exit_code == 0, late.stderr
    assert json.loads(late.stdout)["device"]["device"]["index"] == 1  # 0 belongs to the boot disk
    same = vmdev("attach", *sandbox(short_dir, env), *SDB, "--json", "/dev/xvdb")  # the boot disk: counted
    assert json.loads(same.stdout)["device"]["attach_count"] == 2
    assert fake.leftovers()["devices"] == [json.loads(late.stdout)["id"]]


# --- the backend's live driver, books only, host changes ---------------------------------------------
def test_a_backend_without_a_live_driver_keeps_the_books_without_vm_flags(env: FakeHost, short_dir: Path) -> None:
    state = ["--state", str(short_dir / "state.json"), "--sysfs-root", str(env.sysfs)]
    done = vmdev("attach", *state, "--hypervisor", "cloud-hypervisor", *SDB, "--json", "/dev/xvdb")
    assert done.exit_code == 0, done.stderr
    record = json.loads(done.stdout)["device"]
    assert record["attachment"]["hotplug"] == [{"method": "PUT", "path": "/api/v1/vm.add-disk",
                                                "body": {"id": record["id"]}}]
    assert StateFile(short_dir / "state.json").load().settings.hypervisor == "cloud-hypervisor"
    stray = vmdev("attach", *state, "--qmp", str(short_dir / "qmp.sock"), *SDB, "/dev/xvdb")
    assert stray.exit_code == 1
    assert "--qmp: is not an option of the cloud-hypervisor backend's live driver (its options: none)" in stray.stderr
    status = vmdev("status", *state[:2], "--json")
    assert json.loads(status.stdout)["vm"] == {"hypervisor": "cloud-hypervisor", "connection": {},
                                               "reachable": None, "error": ""}
    done = vmdev("detach", *state, *SDB, "/dev/xvdb")
    assert done.exit_code == 0 and "forgotten" in done.stdout


def test_the_hypervisor_is_the_sandboxs_and_its_live_flags_are_required(
    env: FakeHost, qemu: Any, short_dir: Path
) -> None:
    state = ["--state", str(short_dir / "state.json"), "--sysfs-root", str(env.sysfs)]
    missing = vmdev("attach", *state, *SDB, "/dev/xvdb")
    assert missing.exit_code == 1 and missing.stderr.startswith(
        "vmdev: error: --qmp: is required: the qemu backend reaches the sandbox's running VM through it")
    assert vmdev("attach", *sandbox(short_dir, env), "--hypervisor", "qemu", *SDB, "/dev/xvdb").exit_code == 0
    other = vmdev("attach", *sandbox(short_dir, env), "--hypervisor", "firecracker", *SDB, "/dev/xvdb")
    assert other.exit_code == 1
    assert "hypervisor: this sandbox runs on qemu (kept in its state file), not firecracker" in other.stderr
    unknown = vmdev("status", *state[:2], "--hypervisor", "xen")
    assert unknown.exit_code == 1 and "not xen" in unknown.stderr
    helped = vmdev("attach", "--help")
    assert "--qmp SOCKET" in helped.stdout and "(live driver of qemu)" in helped.stdout


def test_status_shows_a_host_that_changed_and_attach_refuses_it(env: FakeHost, qemu: Any, short_dir: Path) -> None:
    image = short_dir / "disk.img"
    image.write_bytes(b"\0" * 4096)
    disk = ["--type", "b", "--major", "-1", "--minor", "0", "--host-path", str(image)]
    done = vmdev("attach", *sandbox(short_dir, env), *disk, "--container", "c1", "--json", "/dev/xvdb")
    assert done.exit_code == 0, done.stderr
    device_id = json.loads(done.stdout)["id"]
    status = ["status", "--state", str(short_dir / "state.json"), "--sysfs-root", str(env.sysfs)]
    (device,) = json.loads(vmdev(*status, "--json").stdout)["devices"]
    assert device["facts"] == {"node.type": "file"} and device["host_changes"] == []
    image.unlink()
    image.mkdir()  # the disk image was replaced by something else
    (device,) = json.loads(vmdev(*status, "--json").stdout)["devices"]
    assert device["host_changes"] == [{"fact": "node.type", "recorded": "file", "now": "dir"}]
    text = vmdev(*status)
    assert f"{device_id}: host changed: node.type was 'file', now 'dir'" in text.stdout
    again = vmdev("attach", *sandbox(short_dir, env), *disk, "--container", "c2", "/dev/data")
    assert again.exit_code == 1 and len(again.stderr.strip().splitlines()) == 1
    assert again.stderr.startswith(
        "vmdev: error: /dev/xvdb: node.type: the host changed since this device was created: node.type was "
        "'file', now 'dir'")
    left = vmdev("detach", *sandbox(short_dir, env), "--id", device_id, "--container", "c1")
    assert left.exit_code == 0, left.stderr
