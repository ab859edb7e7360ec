"""The persisted sandbox state: versioned JSON, strict loading, atomic saves, the lock."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from vmdev.models import DeviceInfo, PCIePort
from vmdev.qemu import QmpCommand
from vmdev.settings import SandboxSettings
from vmdev.state import (
    OLDEST_STATE_VERSION,
    STATE_VERSION,
    Attachment,
    AttachPhase,
    DeviceRecord,
    PortRecord,
    SandboxState,
    StateCorruptError,
    StateError,
    StateFile,
    StateLockedError,
    StateVersionError,
    decode,
    encode,
    from_document,
)


def sample() -> SandboxState:
    info = DeviceInfo(container_path="/dev/xvdb", dev_type="b", major=8, minor=16, host_path="/dev/sdb",
                      driver_options={"block-driver": "virtio-scsi"}, read_only=True, port=PCIePort.ROOT_PORT)
    attached = Attachment(
        phase=AttachPhase.ATTACHED,
        hotplug=[QmpCommand("blockdev-add", {"node-name": "drive-1", "file": {"driver": "host_device"}}),
                 QmpCommand("device_add", {"driver": "scsi-hd", "id": "virtio-drive-1", "lun": 3})],
        unplug=[QmpCommand("device_del", {"id": "virtio-drive-1"})],
        steps_done=2,
        buses=["rp1"],
        notes={"k": {"/dev/xvdb": "v"}},
        details={"scsi": "0:3", "nested": [1, {"a": None}]},
        since=1.5,
    )
    return SandboxState(
        settings=SandboxSettings(machine_type="q35", memory_mib=512, options={"block_device_driver": "virtio-scsi",
                                                                              "valid": ["/dev/urandom", ""]}),
        devices=[
            DeviceRecord(id="drive-1", key="block 8:16", kind="block", plugin="block", container_path="/dev/xvdb",
                         host_path="/dev/sdb", info=info, device={"id": "drive-1", "index": 3},
                         facts={"node.type": "block", "node.rdev": "8:16"}, ref_count=2,
                         attach_count=1, users=["c1", "c2"], attachment=attached),
            DeviceRecord(id="rng0", key="sandbox rng0", kind="rng", plugin="rng", container_path=None,
                         host_path="/dev/urandom", ref_count=1),
        ],
        allocations={"build:abc|key": {"3": "x"}},
        ports=[PortRecord(id="rp0", kind="root-port"), PortRecord(id="swdp0", kind="switch-port")],
    )


def test_a_state_round_trips_through_its_json() -> None:
    data = encode(sample())
    document = json.loads(data)
    assert list(document)[:2] == ["format", "version"]
    assert document["format"] == "vmdev-sandbox-state" and document["version"] == STATE_VERSION
    assert document["devices"][0]["info"]["port"] == "root-port"
    assert document["devices"][0]["attachment"]["phase"] == "attached"
    assert decode(data) == sample()


@pytest.mark.parametrize(
    ("change", "error", "field", "message"),
    [
        (lambda d: d.update(version=STATE_VERSION + 1), StateVersionError, "version",
         f"written by a newer vmdev \\(state version {STATE_VERSION + 1}"),
        (lambda d: d.update(version="1"), StateCorruptError, "version", "invalid state version"),
        (lambda d: d.update(format="other"), StateCorruptError, "format", "is not a vmdev sandbox state"),
        (lambda d: d.pop("settings"), StateCorruptError, "$.settings", "required field missing"),
        (lambda d: d["devices"][0].update(ref_count=-1), StateCorruptError, "$.devices[0]",
         "ref_count: must be a count"),
        (lambda d: d["devices"][0].update(attach_count="2"), StateCorruptError, "$.devices[0].attach_count",
         "expected int"),
        (lambda d: d["devices"][1].update(id="drive-1"), StateCorruptError, "$", "appears twice"),
        (lambda d: d["devices"][1].update(id="0bad,id"), StateCorruptError, "$.devices[1]", "not a valid QEMU id"),
        (lambda d: d["devices"][0]["attachment"].update(phase="half"), StateCorruptError,
         "$.devices[0].attachment.phase", "expected AttachPhase"),
        (lambda d: d["devices"][0]["info"].update(dev_type="x"), StateCorruptError, "$.devices[0].info",
         "dev_type: 'x' is not one of"),
        (lambda d: d["settings"].update(hypervisor="Xen 4"), StateCorruptError, "$.settings",
         "'Xen 4' is not a backend name"),
        (lambda d: d.update(version=OLDEST_STATE_VERSION - 1), StateCorruptError, "version", "invalid state version"),
        (lambda d: d["devices"][0]["attachment"].update(hotplug=["device_add"]), StateCorruptError,
         "$.devices[0].attachment.hotplug[0]", "invalid value, expected Mapping"),
        (lambda d: d["devices"][0]["attachment"].update(since=10**400), StateCorruptError,
         "$.devices[0].attachment.since", "a number too large for a float"),
    ],
)
def test_a_newer_or_invalid_state_is_a_clear_error(
    change: Any, error: type[StateError], field: str, message: str
) -> None:
    document = json.loads(encode(sample()))
    change(document)
    with pytest.raises(error, match=message) as exc:
        from_document(document, source="/run/s.json")
    assert exc.value.device == "/run/s.json" and exc.value.field == field


def test_steps_are_kept_as_the_json_the_backend_rendered() -> None:
    (record, _) = sample().devices
    assert record.attachment is not None
    assert record.attachment.hotplug[1] == {"execute": "device_add",
                                            "arguments": {"driver": "scsi-hd", "id": "virtio-drive-1", "lun": 3}}
    api = Attachment(phase=AttachPhase.ATTACHED, hotplug=[{"method": "PUT", "path": "/api/v1/vm.add-disk"}])
    assert decode(encode(SandboxState(settings=SandboxSettings(), devices=[
        DeviceRecord(id="d0", key="k", kind="k", plugin="p", container_path=None, host_path="", attachment=api)
    ]))).devices[0].attachment == api


def test_the_derived_typed_settings_values_are_not_saved() -> None:
    settings = SandboxSettings(options={"hotplug_root_ports": 2}, values={"hotplug_root_ports": 2})
    document = json.loads(encode(SandboxState(settings=settings)))
    assert "values" not in document["settings"] and document["settings"]["options"] == {"hotplug_root_ports": 2}
    document["settings"]["values"] = {"hotplug_root_ports": 9}  # as an interim vmdev wrote it: ignored
    assert from_document(document).settings.values == {}


def test_a_version_1_state_still_loads_with_no_host_facts_recorded() -> None:
    v1 = {
        "format": "vmdev-sandbox-state", "version": 1,
        "settings": {"hypervisor": "qemu", "machine_type": "q35", "memory_mib": 2048, "hotplug": False,
                     "options": {"hotplug_root_ports": 2}},
        "devices": [{"id": "drive-1", "key": "file /img", "kind": "block", "plugin": "block",
                     "container_path": "/dev/xvdb", "host_path": "/img", "info": None, "device": {"id": "drive-1"},
                     "ref_count": 1, "attach_count": 1, "users": ["c1"],
                     "attachment": {"phase": "attached", "resident": False,
                                    "hotplug": [{"execute": "blockdev-add", "arguments": {"node-name": "drive-1"}}],
                                    "unplug": [{"execute": "blockdev-del", "arguments": {"node-name": "drive-1"}}],
                                    "steps_done": 1, "buses": ["rp0"], "leftovers": [], "notes": {},
                                    "details": {}, "error": "", "pid": 0, "since": 1.0}}],
        "allocations": {}, "ports": [{"id": "rp1", "kind": "root-port"}],
    }
    state = from_document(v1)
    (record,) = state.devices
    assert record.facts == {} and record.attachment is not None and record.attachment.shared == ()
    assert record.attachment.unplug == ({"execute": "blockdev-del", "arguments": {"node-name": "drive-1"}},)
    assert json.loads(encode(state))["version"] == STATE_VERSION == 3  # saved again in the current layout


def test_garbage_is_not_a_state() -> None:
    with pytest.raises(StateCorruptError, match="is not valid JSON"):
        decode(b'{"format": "vmdev-sandbox-state", "vers')
    with pytest.raises(StateCorruptError, match="not a JSON object"):
        decode(b"[1, 2]")


def test_settings_that_json_cannot_hold_are_refused_when_saving(tmp_path: Path) -> None:
    state = SandboxState(settings=SandboxSettings(options={"when": datetime.date(2026, 1, 1)}))
    with pytest.raises(StateError, match="cannot be stored as JSON"):
        StateFile(tmp_path / "s.json").save(state)
    assert not (tmp_path / "s.json").exists() and os.listdir(tmp_path) == []


def test_save_replaces_the_file_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "sandbox" / "state.json"
    file = StateFile(path)
    file.save(sample())
    first_inode = path.stat().st_ino
    file.save(SandboxState(settings=SandboxSettings()))
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert file.load() == SandboxState(settings=SandboxSettings())
    assert sorted(os.listdir(path.parent)) == ["state.json"]  # no temporary file left


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path, dead_pid: int) -> None:
    path = tmp_path / "state.json"
    dead = dead_pid
    stale = tmp_path / f".state.json.tmp-{dead}-0000"
    ours = tmp_path / f".state.json.tmp-{os.getpid()}-1111"  # a save of this process in progress
    stale.write_text("{half")
    ours.write_text("{half")
    StateFile(path).save(sample())
    assert not stale.exists() and ours.exists()
    assert StateFile(path).load() == sample()


def test_loading_a_missing_file_is_an_error_unless_a_default_is_given(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "none.json")
    with pytest.raises(StateError, match="no such state file") as exc:
        file.load()
    assert exc.value.device == str(tmp_path / "none.json")
    default = SandboxState(settings=SandboxSettings())
    assert file.load_or(default) is default


def test_the_lock_serialises_load_act_save_cycles(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "state.json")
    with file.locked(), pytest.raises(StateLockedError, match="held the state file's lock"):  # noqa: SIM117
        with StateFile(tmp_path / "state.json").locked(timeout=0.1):
            pass
    with file.locked():  # released
        pass
