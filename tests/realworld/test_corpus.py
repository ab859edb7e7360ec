"""The real-world corpus and the harness's own helpers; these need no root and no engine.

The rendered Kata files are data: they must stay exactly what the renderer wrote (MANIFEST.json),
keep their licence and origin, and each configure the hypervisor the manifest names. The helpers
(config variants, QEMU option parsing, API schemas, the cause diagnosis) are checked against
hand-made inputs, each rule broken once.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from rwinputs import apischema, kata, qemuargs
from rwinputs.causes import BY_KEY, CAUSES, diagnose, predict
from rwinputs.matrix import (
    VARIANTS,
    Combo,
    Config,
    Outcome,
    Spec,
    apply_edits,
    corpus_configs,
    write_variants,
)
from vmdev.qemu import split_opts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

# @VAR@ left in by Kata 4.1.0's own templates and Makefiles (they ship like this)
KATA_LEFTOVERS = {
    "go/amd64/configuration-clh-azure.toml": {"@CONFIG_CLH_AZURE_IN@"},
    "runtime-rs/amd64/configuration-clh-azure-runtime-rs.toml": {"@CONFIG_CLH_AZURE_RUNTIME_RS_IN@"},
    "runtime-rs/amd64/configuration-qemu-nvidia-gpu-runtime-rs.toml": {"@FIRMWAREVOLUMEPATH_NV@"},
}


# --- the Kata corpus -------------------------------------------------------------------------------
def test_the_manifest_lists_every_rendered_file_with_its_sha256() -> None:
    listed = {c.key: c for c in kata.corpus()}
    on_disk = {str(p.relative_to(kata.CORPUS)) for p in kata.CORPUS.glob("*/*/*.toml")}
    assert set(listed) == on_disk
    for key, entry in listed.items():
        assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.sha256, f"{key} was edited"


@pytest.mark.parametrize("entry", kata.corpus(), ids=lambda c: c.key)
def test_each_rendered_file_configures_the_hypervisor_the_manifest_names(entry: kata.KataConfig) -> None:
    text = entry.path.read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    assert list(doc["hypervisor"]) == [entry.hypervisor]
    assert set(re.findall(r"@[A-Z0-9_]+@", text)) == KATA_LEFTOVERS.get(entry.key, set())
    if entry.hypervisor != "remote":  # the remote hypervisor's file names no local path
        assert "/opt/kata/" in text, "not rendered with the release's PREFIX"


def test_the_corpus_carries_kata_licence_and_origin() -> None:
    manifest = kata.manifest()
    assert (kata.CORPUS / "LICENSE").read_text().lstrip().startswith("Apache License")
    origin = (kata.CORPUS / "ORIGIN").read_text()
    assert manifest["commit"] in origin and kata.KATA_URL in origin and manifest["ref"] in origin
    assert "scripts/gen-realworld-inputs kata" in origin
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["commit"])


def test_the_release_renders_amd64_firmware_under_share_ovmf() -> None:
    # the Go Makefile sets EDK2_NAME only when it maps uname's x86_64 to amd64, as the release does
    text = (kata.CORPUS / "go/amd64/configuration-qemu-nvidia-gpu.toml").read_text()
    assert 'firmware = "/opt/kata/share/ovmf/OVMF.fd"' in text


def test_the_vendored_api_schemas_carry_their_licence_and_origin() -> None:
    for name, licence in (("cloud-hypervisor", "LICENSE-Apache-2.0.txt"), ("firecracker", "LICENSE")):
        folder = apischema.SCHEMAS / name
        assert "Apache License" in (folder / licence).read_text()
        origin = (folder / "ORIGIN").read_text()
        assert hashlib.sha256((folder / f"{name}.yaml").read_bytes()).hexdigest() in origin


# --- variants -------------------------------------------------------------------------------------
BASE = """[hypervisor.qemu]
path = "/q"
# enable_iommu = true
shared_fs = "virtio-fs"

[runtime]
vfio_mode = "guest-kernel"
"""


def test_a_variant_changes_its_keys_and_nothing_else() -> None:
    edited = apply_edits(BASE, "qemu", [("shared_fs", "none"), ("enable_iommu", True), ("memory_slots", 4),
                                        ("runtime.vfio_mode", "vfio")])
    doc = tomllib.loads(edited)
    assert doc["hypervisor"]["qemu"] == {"path": "/q", "enable_iommu": True, "shared_fs": "none", "memory_slots": 4}
    assert doc["runtime"] == {"vfio_mode": "vfio"}
    assert "# enable_iommu" not in edited  # the commented-out line became the key
    assert edited.count("\n") == BASE.count("\n") + 1  # one added line (memory_slots)


def test_every_variant_starts_from_a_rendered_file_and_sets_its_keys(tmp_path: Path) -> None:
    written = write_variants(tmp_path)  # raises if an edit did not take
    assert [v.name for v, _ in written] == [v.name for v in VARIANTS]
    keys = {c.key for c in corpus_configs()}
    assert all(v.base in keys and v.specs for v in VARIANTS)


# --- QEMU options ---------------------------------------------------------------------------------
def test_qemu_option_values_are_split_like_qemu_splits_them() -> None:
    assert split_opts("socket,id=c0,path=/a,,b") == ["socket", "id=c0", "path=/a,b"]
    opts = qemuargs.options(["-machine", "q35,kernel_irqchip=split", "-m", "2048M,slots=10,maxmem=3G", "-S"])
    assert [(o.name, o.head) for o in opts] == [("-machine", "q35"), ("-m", "2048M"), ("-S", "")]
    assert qemuargs.memory(["-m", "2048M,slots=10,maxmem=3G"]) == {"size": "2048M", "slots": "10", "maxmem": "3G"}
    assert qemuargs.mib("3G") == 3072 and qemuargs.mib("2048M") == 2048 and qemuargs.mib("x") is None
    assert qemuargs.machine(["-machine", "q35,kernel_irqchip=split"]) == {"type": "q35", "kernel_irqchip": "split"}


def test_hot_plug_commands_count_as_the_plans_devices() -> None:
    qemu = {"argv": ["-device", "virtio-scsi-ccw,id=scsi0"],
            "hotplug": [{"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "id": "r", "x": True}}]}
    assert [d["driver"] for d in qemuargs.devices(qemu, hotplug=True)] == ["virtio-scsi-ccw", "virtio-rng-ccw"]
    assert [d["driver"] for d in qemuargs.devices(qemu, hotplug=False)] == ["virtio-scsi-ccw"]
    assert list(qemuargs.devices(qemu, hotplug=True))[1]["x"] == "on"


# --- API schemas ----------------------------------------------------------------------------------
GOOD_DRIVE = {"drive_id": "drive_a", "path_on_host": "/dev/loop0", "is_root_device": False, "is_read_only": True}


def test_a_firecracker_drive_request_as_the_api_describes_it_is_valid() -> None:
    assert apischema.fc_problems({"requests": [{"method": "PUT", "path": "/drives/drive_a", "body": GOOD_DRIVE},
                                               {"method": "PUT", "path": "/entropy", "body": {}}]}) == []


@pytest.mark.parametrize(("request_", "problem"), [
    ({"method": "PUT", "path": "/drives/drive_a", "body": {**GOOD_DRIVE, "is_read_only": "yes"}}, "is not of type"),
    ({"method": "PUT", "path": "/drives/drive_a", "body": {**GOOD_DRIVE, "cache": "x"}}, "Additional properties"),
    ({"method": "PUT", "path": "/drives/drive_b", "body": GOOD_DRIVE}, "is not the path's"),
    ({"method": "PUT", "path": "/disks/drive_a", "body": GOOD_DRIVE}, "no such operation"),
    ({"method": "PUT", "path": "/drives/drive_a", "body": {"drive_id": "drive_a"}}, "is a required property"),
])
def test_a_firecracker_request_the_api_refuses_is_reported(request_: dict[str, Any], problem: str) -> None:
    problems = apischema.fc_problems({"requests": [request_]})
    assert any(problem in p for p in problems), problems


def test_cloud_hypervisor_fragments_and_bodies_are_checked_against_vmconfig() -> None:
    good = {"vm_config": {"disks": [{"path": "/dev/loop0", "readonly": True, "num_queues": 1, "queue_size": 128}]},
            "hotplug": [{"method": "PUT", "path": "/api/v1/vm.add-disk", "body": {"path": "/dev/loop0"}}]}
    assert apischema.clh_problems(good) == []
    bad = {"vm_config": {"disks": [{"path": "/dev/loop0", "num_queues": "1"}], "gpus": []},
           "hotplug": [{"method": "PUT", "path": "/vm.add-disk", "body": {"path": 1}}]}
    problems = apischema.clh_problems(bad)
    assert any("num_queues" in p for p in problems) and any("no such property" in p for p in problems)
    assert any("not under /api/v1" in p for p in problems) and any("is not of type 'string'" in p for p in problems)


# --- the diagnosis --------------------------------------------------------------------------------
def _combo(tmp_path: Path, config_key: str, devices: list[dict[str, Any]], *, hot: bool = False) -> Combo:
    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {"devices": devices}}))
    config = next(c for c in corpus_configs() if c.key == config_key)
    return Combo(Spec("test", "test", "test", spec), config, hot)


LOOP = {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0}
CLH_GO = "go/amd64/configuration-clh.toml"


def _clh_plan(disk: dict[str, Any], notes: list[str] | None = None) -> str:
    part: dict[str, Any] = {"vm_config": {"disks": [disk]}, "hotplug": [], "unplug": []}
    if notes:
        part["notes"] = notes
    return json.dumps({"hypervisor": "cloud-hypervisor", "devices": [], "cloud_hypervisor": part})


@pytest.fixture
def queues_still_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests exercise the diagnosis with the Go disk-queue cause as if it were not fixed yet
    (it was fixed in fc6fb89; the mechanism must still tell a fix from a known failure)."""
    from rwinputs import causes

    cause = attrs.evolve(BY_KEY["clh-go-disk-queues"], fixed_in="")
    monkeypatch.setitem(causes.BY_KEY, cause.key, cause)
    monkeypatch.setattr(causes, "CAUSES", tuple(cause if c.key == cause.key else c for c in causes.CAUSES))


@pytest.mark.usefixtures("queues_still_failing")
def test_a_known_cause_is_observed_exactly_where_it_is_predicted(tmp_path: Path) -> None:
    combo = _combo(tmp_path, CLH_GO, [LOOP])
    assert predict(combo) == ("clh-go-disk-queues",)
    diagnosis = diagnose(combo, Outcome(0, _clh_plan({"path": "/dev/loop0"}), ""))
    assert diagnosis.observed == ("clh-go-disk-queues",) and diagnosis.matches
    fixed = diagnose(combo, Outcome(0, _clh_plan({"path": "/dev/loop0", "num_queues": 1, "queue_size": 1024}), ""))
    assert fixed.observed == () and not fixed.matches  # a fix without its marker update is noticed


@pytest.mark.usefixtures("queues_still_failing")
def test_a_plan_note_naming_the_key_is_not_a_silent_divergence(tmp_path: Path) -> None:
    combo = _combo(tmp_path, CLH_GO, [LOOP])
    outcome = Outcome(0, _clh_plan({"path": "/dev/loop0"}, ["queue_size: Cloud Hypervisor's default"]), "")
    diagnosis = diagnose(combo, outcome)
    assert diagnosis.noted == ("clh-go-disk-queues",) and diagnosis.observed == () and diagnosis.expected == ()
    unrelated = Outcome(0, _clh_plan({"path": "/dev/loop0"}, ["queue_sizes differ"]), "")
    assert diagnose(combo, unrelated).observed == ("clh-go-disk-queues",)


@pytest.mark.usefixtures("queues_still_failing")
def test_a_refusal_is_unexplained_unless_a_cause_or_the_key_accounts_for_it(tmp_path: Path) -> None:
    combo = _combo(tmp_path, CLH_GO, [LOOP])
    honoured = diagnose(combo, Outcome(1, "", "vmdev: error: queue_size: not supported\n"))
    assert honoured.honoured == ("clh-go-disk-queues",) and honoured.matches and honoured.expected == ()
    other = diagnose(combo, Outcome(1, "", "vmdev: error: /dev/loop0: something else\n"))
    assert other.unexplained and not other.matches


def test_a_fixed_cause_showing_again_is_a_regression(tmp_path: Path) -> None:
    combo = _combo(tmp_path, CLH_GO, [{**LOOP, "fileMode": 0o60600}])
    assert "podman-filemode" not in predict(combo)  # fixed: no marker
    diagnosis = diagnose(combo, Outcome(1, "", "vmdev: error: /dev/loop0: $.linux.devices[0].fileMode: must be "
                                               "between 0 and 4095, got 25008\n"))
    assert any("regression of podman-filemode" in u for u in diagnosis.unexplained)


def test_every_cause_has_a_symptom_or_a_check_and_a_unique_key() -> None:
    assert len(BY_KEY) == len(CAUSES)
    for cause in CAUSES:
        assert (cause.symptom is None) != (cause.check is None), cause.key
        assert cause.check is None or cause.names, cause.key


def test_kata_go_converts_bits_to_bytes_as_utils_revert_bytes_does() -> None:
    from rwinputs.causes import _revert_bytes

    assert _revert_bytes(1_000_000) == 1_048_576 and _revert_bytes(999) == 999 and _revert_bytes(1_500) == 1_524


def test_a_config_reads_its_own_hypervisor_table() -> None:
    config = next(c for c in corpus_configs() if c.key == "go/amd64/configuration-fc.toml")
    assert isinstance(config, Config) and config.section == "firecracker"
    assert config.option("block_device_driver") == "virtio-mmio" and config.runtime["internetworking_model"] == "tcfilter"
    qemu = next(c for c in corpus_configs() if c.key == "go/amd64/configuration-qemu.toml")
    assert qemu.option("shared_fs") == "virtio-fs" and qemu.runtime["vfio_mode"] == "guest-kernel"
