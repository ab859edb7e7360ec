"""``vmdev cdi list|validate|inject`` through the real ``vmdev`` command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"
NULL_SPEC = ('cdiVersion: "0.3.0"\nkind: vendor.com/null\ncontainerEdits: {env: [VENDOR=1]}\n'
             "devices:\n  - {name: a, containerEdits: {deviceNodes: [{path: /dev/null}], mounts: [{hostPath: /etc/hosts, containerPath: /x/hosts}]}}\n"
             "  - {name: b, containerEdits: {env: [B=1]}}\n")


@pytest.fixture
def vmdev(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``vmdev ARGS`` with only the core and vmdev-cdi loaded; returns click's result."""
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-cdi")
    from vmdev.cli import main

    def run(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def dirs(tmp_path: Path) -> list[str]:
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    shutil.copy(DATA / "nvidia-gpu.yaml", etc)
    (etc / "null.yaml").write_text(NULL_SPEC)
    (run / "broken.yaml").write_text('cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n  - name: "dev1"\n')
    (run / "null.yaml").write_text(NULL_SPEC.replace("name: b", "name: c"))
    return [str(etc), str(run)]


def test_the_plugin_declares_the_cdi_group_through_register_lazy_commands(vmdev_plugins: Any) -> None:
    from vmdev.lazy import load_reference

    declared = vmdev_plugins("vmdev-cdi").lazy_commands()
    assert sorted(declared) == ["cdi"] and declared["cdi"].plugin == "cdi"
    spec = declared["cdi"].spec
    loaded = load_reference(spec.target)
    assert isinstance(loaded, click.Group) and sorted(loaded.commands) == ["inject", "list", "validate"]
    assert spec.summary == (loaded.help or "").split("\n")[0], "--help's summary is the group's first sentence"


def test_list_shows_every_device_with_file_priority_and_the_errors(vmdev: Any, dirs: list[str]) -> None:
    result = vmdev("cdi", "list", "--spec-dir", dirs[0], "--spec-dir", dirs[1], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["spec_dirs"] == dirs
    assert [(d["name"], d["priority"], Path(d["spec"]).relative_to(Path(dirs[0]).parent).as_posix()) for d in data["devices"]] == [
        ("nvidia.com/gpu=0", 0, "etc/nvidia-gpu.yaml"), ("nvidia.com/gpu=all", 0, "etc/nvidia-gpu.yaml"),
        ("vendor.com/null=a", 1, "run/null.yaml"), ("vendor.com/null=b", 0, "etc/null.yaml"),
        ("vendor.com/null=c", 1, "run/null.yaml")]
    assert data["errors"] == {f"{dirs[1]}/broken.yaml": [
        'failed to load CDI Spec invalid CDI Spec: failed add device "dev1": invalid device, empty device edits']}


def test_list_as_text(vmdev: Any, dirs: list[str]) -> None:
    result = vmdev("cdi", "list", "--spec-dir", dirs[0], "--spec-dir", dirs[1])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[:3] == ["spec directories (a later one wins):", f"  0  {dirs[0]}", f"  1  {dirs[1]}"]
    assert lines[3].split() == ["DEVICE", "PRIORITY", "SPEC", "FILE"]
    assert lines[4].split() == ["nvidia.com/gpu=0", "0", f"{dirs[0]}/nvidia-gpu.yaml"]
    assert lines[-1] == (f'error: {dirs[1]}/broken.yaml: failed to load CDI Spec invalid CDI Spec: failed add device "dev1": '
                         "invalid device, empty device edits")


def test_list_of_nothing(vmdev: Any, tmp_path: Path) -> None:
    result = vmdev("cdi", "list", "--spec-dir", str(tmp_path / "none"))
    assert result.exit_code == 0 and "no CDI devices found" in result.output


def test_validate_reports_each_file_and_fails_when_one_is_bad(vmdev: Any, dirs: list[str], tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text('cdiVersion: "0.3.0"\nkind: a.com/b\nkind: a.com/c\n')
    result = vmdev("cdi", "validate", str(DATA / "nvidia-gpu.yaml"), f"{dirs[1]}/broken.yaml", str(dup),
                   str(DATA / "schema-bad-explicit-empty.json"))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{DATA}/nvidia-gpu.yaml: valid: kind nvidia.com/gpu, 2 devices, cdiVersion 0.5.0 (needs at least 0.5.0)"]
    errors = result.stderr.splitlines()
    assert errors[0] == (f'vmdev: error: {dirs[1]}/broken.yaml: invalid CDI Spec: failed add device "dev1": invalid device, '
                         "empty device edits")
    assert errors[1] == (f'vmdev: error: {dup}: failed to parse CDI Spec "{dup}": failed to unmarshal CDI Spec: error converting '
                         'YAML to JSON: yaml: unmarshal errors:\\n  line 3: key "kind" already set in map')
    assert errors[2] == (f"vmdev: error: {DATA}/schema-bad-explicit-empty.json: Spec validation failed: jsonschema validation "
                         "failed with 'file:///schema.json#'\\n- at '/devices': None is not of type 'array'")
    assert len(errors) == 3


def test_validate_passes_what_the_schema_allows_but_the_rules_refuse(vmdev: Any, tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text('cdiVersion: "0.4.0"\nkind: a.com/b\ndevices: [{name: "0", containerEdits: {env: [A=1]}}]\n')
    result = vmdev("cdi", "validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == f"vmdev: error: {path}: invalid CDI Spec: the spec version must be at least v0.5.0\n"


def test_validate_checks_annotation_keys_of_yaml_files(vmdev: Any, tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text('cdiVersion: "0.6.0"\nkind: a.com/b\nannotations: {"bad key": x}\ndevices: [{name: d, containerEdits: {env: [A=1]}}]\n')
    result = vmdev("cdi", "validate", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"vmdev: error: {path}: annotations.bad key is invalid: name part must consist of")


def test_validate_of_a_missing_file(vmdev: Any, tmp_path: Path) -> None:
    result = vmdev("cdi", "validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1 and "No such file or directory" in result.stderr


def test_inject_prints_the_edited_spec(vmdev: Any, dirs: list[str], tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.1.0", "process": {"env": ["PATH=/bin"]}, "annotations": {"x": "y"}}))
    result = vmdev("cdi", "inject", "--spec-dir", dirs[0], "--spec-dir", dirs[1], "--device", "vendor.com/null=a",
                   "--device", "vendor.com/null=b", str(config))
    assert result.exit_code == 0, result.output
    oci = json.loads(result.stdout)
    assert oci["process"]["env"] == ["PATH=/bin", "VENDOR=1", "B=1"]  # two specs, each spec's env once
    assert oci["linux"]["devices"] == [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}]
    assert oci["mounts"] == [{"destination": "/x/hosts", "source": "/etc/hosts"}]
    assert oci["annotations"] == {"x": "y"}
    assert result.stderr.startswith(f"vmdev: warning: {dirs[1]}/broken.yaml: failed to load CDI Spec ")


def test_inject_expands_patterns_like_the_go_tool(vmdev: Any, dirs: list[str]) -> None:
    result = vmdev("cdi", "inject", "--spec-dir", dirs[1], "--device", "vendor.com/null=*", "-", input="{}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["process"]["env"] == ["VENDOR=1", "B=1"]  # a and c of run/null.yaml
    result = vmdev("cdi", "inject", "--spec-dir", dirs[1], "--device", "*", "-", input="{}")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"vmdev: error: no CDI device matches * (searched {dirs[1]})"


def test_an_unresolvable_name_is_one_line_naming_it_and_the_directories(vmdev: Any, dirs: list[str], tmp_path: Path) -> None:
    result = vmdev("cdi", "inject", "--spec-dir", dirs[0], "--spec-dir", dirs[1], "--device", "nvidia.com/gpu=7", "-", input="{}")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"vmdev: error: unresolvable CDI devices nvidia.com/gpu=7 (searched {dirs[0]}, {dirs[1]})"


def test_inject_refuses_a_config_that_is_not_json(vmdev: Any, tmp_path: Path) -> None:
    result = vmdev("cdi", "inject", "--spec-dir", str(tmp_path), "--device", "a.com/b=c", "-", input="[]")
    assert result.exit_code == 1 and result.stderr == "vmdev: error: -: must be a JSON object\n"


def test_glob_patterns_follow_filepath_match() -> None:
    from vmdev_cdi.cli import glob_regex

    assert glob_regex("nvidia.com/gpu=*").fullmatch("nvidia.com/gpu=0")
    assert not glob_regex("*").fullmatch("nvidia.com/gpu=0")
    assert glob_regex("*/*=?").fullmatch("a.com/b=1")
    assert glob_regex("a.com/b=[^0]").fullmatch("a.com/b=1") and not glob_regex("a.com/b=[^0]").fullmatch("a.com/b=0")
    assert glob_regex("a.com/b=\\*").fullmatch("a.com/b=*")
