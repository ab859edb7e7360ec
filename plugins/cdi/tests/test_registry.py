"""The registry over spec directories: cache_test.go, spec-dirs_test.go and regressions_test.go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vmdev_cdi import (
    ANNOTATION_PREFIX,
    CDIError,
    Registry,
    UnresolvableError,
    inject,
    parse_annotations,
    scan_spec_dirs,
)
from vmdev_cdi.testing import FakeStat


def spec(kind: str, *devices: tuple[str, int, int], version: str = "0.3.0", extra: str = "") -> str:
    """A spec with block device nodes ``/dev/<vendor>-<name>`` (like the reference's tests)."""
    vendor = kind.split(".")[0]
    lines = [f'cdiVersion: "{version}"', f'kind: "{kind}"', extra, "devices:"]
    for name, major, minor in devices:
        lines += [f'  - name: "{name}"', "    containerEdits:", "      deviceNodes:",
                  f'      - path: "/dev/{vendor}-{name}"', "        type: b", f"        major: {major}", f"        minor: {minor}"]
    return "\n".join(lines) + "\n"


V1 = spec("vendor1.com/device", ("dev1", 10, 1))
V1_12 = spec("vendor1.com/device", ("dev1", 10, 1), ("dev2", 10, 2))
V1_2 = spec("vendor1.com/device", ("dev2", 10, 2))
INVALID = 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n  - name: "dev1"\n'


def sources(registry: Registry, root: str) -> dict[str, str]:
    found = {}
    for name in registry.list_devices():
        device = registry.get_device(name)
        assert device is not None
        found[name] = os.path.relpath(device.spec.path, root)
    return found


def errored(registry: Registry, root: str) -> set[str]:
    return {os.path.relpath(p, root) for p in registry.errors}


# --- TestNewCache ----------------------------------------------------------------------------
def test_no_spec_dirs_is_no_devices_and_no_errors(tmp_path: Path) -> None:
    registry = Registry([str(tmp_path / "etc"), str(tmp_path / "run")])
    assert registry.list_devices() == [] and registry.errors == {}


def test_no_spec_files(spec_dirs: Any) -> None:
    registry = Registry(spec_dirs(etc={}, run={}))
    assert registry.list_devices() == [] and registry.errors == {}


def test_one_spec_file(spec_dirs: Any, tmp_path: Path) -> None:
    registry = Registry(spec_dirs(etc={"vendor1.yaml": V1}))
    assert sources(registry, str(tmp_path)) == {"vendor1.com/device=dev1": "etc/vendor1.yaml"}


def test_a_later_directory_overrides_an_earlier_one(spec_dirs: Any, tmp_path: Path) -> None:
    registry = Registry(spec_dirs(etc={"vendor1.yaml": V1_12}, run={"vendor1.yaml": V1}))
    assert sources(registry, str(tmp_path)) == {"vendor1.com/device=dev1": "run/vendor1.yaml",
                                                "vendor1.com/device=dev2": "etc/vendor1.yaml"}
    assert registry.errors == {}


def test_same_priority_duplicates_are_removed_and_both_files_get_the_error(spec_dirs: Any, tmp_path: Path) -> None:
    registry = Registry(spec_dirs(run={"vendor1.yaml": V1_12, "vendor1-other.yaml": V1}))
    assert sources(registry, str(tmp_path)) == {"vendor1.com/device=dev2": "run/vendor1.yaml"}
    other, main = str(tmp_path / "run/vendor1-other.yaml"), str(tmp_path / "run/vendor1.yaml")
    text = f'conflicting device "vendor1.com/device=dev1" (specs "{main}", "{other}")'
    assert registry.errors == {main: [text], other: [text]}
    assert registry.error_text() == f"{text}\n{text}"


def test_a_same_priority_conflict_removes_the_device_even_when_a_later_directory_defines_it(spec_dirs: Any) -> None:
    registry = Registry(spec_dirs(etc={"a.yaml": V1, "b.yaml": V1}, run={"c.yaml": V1}))
    assert registry.list_devices() == []
    assert len(registry.errors) == 2


def test_a_lower_priority_duplicate_is_ignored_silently(spec_dirs: Any, tmp_path: Path) -> None:
    registry = Registry(spec_dirs(etc={"a.yaml": V1}, run={"b.yaml": V1}))
    assert sources(registry, str(tmp_path)) == {"vendor1.com/device=dev1": "run/b.yaml"}
    assert registry.errors == {}
    assert [s.path for s in registry.vendor_specs("vendor1")] == []  # vendor is "vendor1.com"
    assert len(registry.vendor_specs("vendor1.com")) == 2  # an overridden spec still counts


def test_a_broken_file_contributes_nothing_and_stops_nothing(spec_dirs: Any, tmp_path: Path) -> None:
    registry = Registry(spec_dirs(etc={"a.yaml": INVALID, "b.yaml": V1, "c.json": "{not json"}, run={"d.yaml": V1_2}))
    assert registry.list_devices() == ["vendor1.com/device=dev1", "vendor1.com/device=dev2"]
    a, c = str(tmp_path / "etc/a.yaml"), str(tmp_path / "etc/c.json")
    assert registry.errors[a] == [
        'failed to load CDI Spec invalid CDI Spec: failed add device "dev1": invalid device, empty device edits']
    assert registry.errors[c][0].startswith(f'failed to load CDI Spec failed to parse CDI Spec "{c}": failed to unmarshal CDI Spec: ')
    assert list(registry.errors) == [a, c]


# --- scanning (spec-dirs_test.go) ---------------------------------------------------------------
def test_only_json_and_yaml_files_directly_in_the_directory_are_read_in_name_order(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "sub").mkdir(parents=True)
    (etc / "sub" / "inner.yaml").write_text(V1)
    for name in ("b.yml", "c.JSON", "d.yaml.bak", "e.txt", "noext"):
        (etc / name).write_text(V1)
    (etc / "z.yaml").write_text(spec("v.com/z", ("a", 1, 1)))
    (etc / "a.json").write_text(spec("v.com/a", ("a", 1, 1)))
    (tmp_path / "target.yaml").write_text(spec("v.com/l", ("a", 1, 1)))
    (etc / "link.yaml").symlink_to(tmp_path / "target.yaml")
    (etc / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    entries = list(scan_spec_dirs([str(etc)]))
    assert [os.path.basename(e.path) for e in entries] == ["a.json", "dangling.yaml", "link.yaml", "z.yaml"]
    assert entries[1].error == f"open {etc}/dangling.yaml: no such file or directory"
    assert Registry([str(etc)]).list_devices() == ["v.com/a=a", "v.com/l=a", "v.com/z=a"]


def test_scanning_reports_vendors_classes_and_failures(spec_dirs: Any) -> None:
    etc, _ = spec_dirs(etc={"valid1.yaml": spec("vendor.com/device1", ("dev1", 1, 1)),
                            "valid2.yaml": spec("vendor.com/device2", ("dev1", 1, 1)), "invalid.yaml": INVALID})
    entries = {os.path.basename(e.path): e for e in scan_spec_dirs(["/no-such-dir", etc])}
    assert {n: (e.spec.vendor, e.spec.class_) for n, e in entries.items() if e.spec} == {
        "valid1.yaml": ("vendor.com", "device1"), "valid2.yaml": ("vendor.com", "device2")}
    assert [n for n, e in entries.items() if e.spec is None] == ["invalid.yaml"]
    assert {e.priority for e in entries.values()} == {1}


def test_a_directory_that_cannot_be_read_silently_stops_the_scan(tmp_path: Path) -> None:
    first, last = tmp_path / "first", tmp_path / "last"
    first.mkdir()
    last.mkdir()
    (first / "a.yaml").write_text(V1)
    (last / "b.yaml").write_text(V1_2)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    registry = Registry([str(first), str(not_a_dir), str(last)])
    assert registry.list_devices() == ["vendor1.com/device=dev1"]
    assert registry.errors == {}


def test_spec_dirs_are_cleaned_and_default_to_etc_and_var_run() -> None:
    assert Registry(["/tmp/x//y/", "rel/./z"]).spec_dirs == ("/tmp/x/y", "rel/z")
    assert Registry().spec_dirs == ("/etc/cdi", "/var/run/cdi")
    assert Registry([]).spec_dirs == ("/etc/cdi", "/var/run/cdi")


# --- TestRefreshCache -----------------------------------------------------------------------------
def test_refresh_sees_added_shadowing_conflicting_and_removed_specs(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    registry = Registry([str(etc), str(run)])
    assert registry.list_devices() == []
    run.mkdir()
    (run / "vendor1.yaml").write_text(V1)
    registry.refresh()
    assert {n: registry.get_device(n).spec.priority for n in registry.list_devices()} == {"vendor1.com/device=dev1": 1}  # type: ignore[union-attr]
    etc.mkdir()
    (etc / "vendor1.yaml").write_text(V1_12)
    registry.refresh()
    assert {n: registry.get_device(n).spec.priority for n in registry.list_devices()} == {  # type: ignore[union-attr]
        "vendor1.com/device=dev1": 1, "vendor1.com/device=dev2": 0}
    (run / "vendor1-other.yaml").write_text(spec("vendor1.com/device", ("dev1", 10, 1), ("dev3", 10, 3)))
    errors = registry.refresh()
    assert registry.list_devices() == ["vendor1.com/device=dev2", "vendor1.com/device=dev3"]
    assert set(errors) == {str(run / "vendor1.yaml"), str(run / "vendor1-other.yaml")}
    (run / "vendor1.yaml").unlink()
    assert registry.refresh() == {}
    assert registry.list_devices() == ["vendor1.com/device=dev1", "vendor1.com/device=dev2", "vendor1.com/device=dev3"]


# --- TestListVendorsAndClasses ------------------------------------------------------------------
def test_list_vendors_and_classes(spec_dirs: Any, tmp_path: Path) -> None:
    registry = Registry(spec_dirs(etc={"v1.yaml": spec("vendor1.com/device", ("dev1", 1, 1)),
                                       "v1b.yaml": spec("vendor1.com/other-device", ("dev1", 1, 1)),
                                       "v3.yaml": spec("vendor3.com/device", ("dev1", 1, 1))},
                                  run={"v2.yaml": spec("vendor2.com/other-device", ("dev1", 1, 1))}))
    assert registry.list_vendors() == ["vendor1.com", "vendor2.com", "vendor3.com"]
    assert registry.list_classes() == ["device", "other-device"]
    assert [s.class_ for s in registry.vendor_specs("vendor1.com")] == ["device", "other-device"]
    assert Registry([str(tmp_path / "empty")]).list_vendors() == []


def test_lookups_are_exact(spec_dirs: Any) -> None:
    registry = Registry(spec_dirs(etc={"v.yaml": V1}))
    assert registry.get_device("vendor1.com/device=dev1") is not None
    assert registry.get_device("VENDOR1.com/device=dev1") is None
    assert registry.get_device(" vendor1.com/device=dev1") is None


# --- TestInjectDevice ------------------------------------------------------------------------
VENDOR1_SPEC = """
cdiVersion: "0.3.0"
kind:       "vendor1.com/device"
containerEdits:
  env:
  - VENDOR1_SPEC_VAR1=VAL1
devices:
  - name: "dev1"
    containerEdits:
      env:
      - "VENDOR1_DEV1=VAL1"
      deviceNodes:
      - path: "/dev/vendor1-dev1"
        type: b
        major: 10
        minor: 1
  - name: "dev2"
    containerEdits:
      env:
      - "VENDOR1_DEV2=VAL2"
      deviceNodes:
      - path: "/dev/vendor1-dev2"
        type: b
        major: 10
        minor: 2
      hooks:
      - hookName: prestart
        path: "/usr/local/bin/prestart-vendor-hook"
        args:
        - "--verbose"
        env:
        - "HOOK_ENV1=PRESTART_VAL1"
      - hookName: createRuntime
        path: "/usr/local/bin/cr-vendor-hook"
        args:
        - "--debug"
        env:
        - "HOOK_ENV1=CREATE_RUNTIME_VAL1"
  - name: "dev3"
    containerEdits:
      env:
      - "VENDOR1_DEV3=VAL3"
      deviceNodes:
      - path: "/dev/vendor1-dev3"
        type: b
        major: 10
        minor: 3
"""


def block(minor: int) -> dict[str, Any]:
    return {"path": f"/dev/vendor1-dev{minor}", "type": "b", "major": 10, "minor": minor}


def rule(minor: int) -> dict[str, Any]:
    return {"allow": True, "type": "b", "major": 10, "minor": minor, "access": "rwm"}


def test_inject_one_device_into_an_empty_oci_spec(spec_dirs: Any) -> None:
    oci: dict[str, Any] = {}
    Registry(spec_dirs(etc={"vendor1.yaml": VENDOR1_SPEC}), stat=FakeStat()).inject_devices(oci, ["vendor1.com/device=dev1"])
    assert oci == {"process": {"env": ["VENDOR1_SPEC_VAR1=VAL1", "VENDOR1_DEV1=VAL1"]},
                   "linux": {"devices": [block(1)], "resources": {"devices": [rule(1)]}}}


def test_inject_several_devices_with_hooks_into_a_non_empty_oci_spec(spec_dirs: Any) -> None:
    oci: dict[str, Any] = {"process": {"env": ["ORIG_VAR1=VAL1", "ORIG_VAR2=VAL2"]},
                           "linux": {"devices": [{"path": "/dev/null"}, {"path": "/dev/zero"}]}}
    registry = Registry(spec_dirs(etc={"vendor1.yaml": VENDOR1_SPEC}), stat=FakeStat())
    registry.inject_devices(oci, ["vendor1.com/device=dev1", "vendor1.com/device=dev2", "vendor1.com/device=dev3"])
    assert oci == {
        "process": {"env": ["ORIG_VAR1=VAL1", "ORIG_VAR2=VAL2", "VENDOR1_SPEC_VAR1=VAL1", "VENDOR1_DEV1=VAL1",
                            "VENDOR1_DEV2=VAL2", "VENDOR1_DEV3=VAL3"]},
        "linux": {"devices": [{"path": "/dev/null"}, {"path": "/dev/zero"}, block(1), block(2), block(3)],
                  "resources": {"devices": [rule(1), rule(2), rule(3)]}},
        "hooks": {"prestart": [{"path": "/usr/local/bin/prestart-vendor-hook", "args": ["--verbose"],
                                "env": ["HOOK_ENV1=PRESTART_VAL1"]}],
                  "createRuntime": [{"path": "/usr/local/bin/cr-vendor-hook", "args": ["--debug"],
                                     "env": ["HOOK_ENV1=CREATE_RUNTIME_VAL1"]}]},
    }


def test_an_unresolvable_device_changes_nothing_and_names_only_the_missing_ones(spec_dirs: Any) -> None:
    oci: dict[str, Any] = {}
    registry = Registry(spec_dirs(etc={"vendor1.yaml": VENDOR1_SPEC}), stat=FakeStat())
    with pytest.raises(UnresolvableError) as caught:
        registry.inject_devices(oci, ["vendor1.com/device=dev2x", "vendor1.com/device=dev1", "vendor1.com/device=dev9"])
    assert caught.value.message == "unresolvable CDI devices vendor1.com/device=dev2x, vendor1.com/device=dev9"
    assert caught.value.unresolved == ("vendor1.com/device=dev2x", "vendor1.com/device=dev9")
    assert oci == {}


def test_a_nil_oci_spec_cannot_be_injected(spec_dirs: Any) -> None:
    with pytest.raises(UnresolvableError) as caught:
        Registry(spec_dirs(etc={})).inject_devices(None, ["a.com/b=c"])
    assert caught.value.message == "can't inject devices, nil OCI Spec" and caught.value.unresolved == ("a.com/b=c",)


def test_a_failure_while_applying_is_wrapped(spec_dirs: Any) -> None:
    text = 'cdiVersion: "0.3.0"\nkind: a.com/b\ndevices: [{name: d, containerEdits: {env: [A=1], deviceNodes: [{path: /dev/gone}]}}]\n'
    oci: dict[str, Any] = {}
    with pytest.raises(CDIError) as caught:
        Registry(spec_dirs(etc={"a.yaml": text}), stat=FakeStat()).inject_devices(oci, ["a.com/b=d"])
    assert caught.value.message == 'failed to inject devices: failed to stat CDI host device "/dev/gone": no such file or directory'
    assert oci == {"process": {"env": ["A=1"]}}  # no rollback, as in the reference


def test_spec_edits_come_right_before_the_first_device_of_that_spec(spec_dirs: Any) -> None:
    a = 'cdiVersion: "0.3.0"\nkind: a.com/x\ncontainerEdits: {env: [SPEC_A=1]}\ndevices:\n' \
        '  - {name: "d1", containerEdits: {env: [A1=1]}}\n  - {name: "d2", containerEdits: {env: [A2=1]}}\n'
    b = 'cdiVersion: "0.3.0"\nkind: b.com/y\ncontainerEdits: {env: [SPEC_B=1]}\ndevices: [{name: d1, containerEdits: {env: [B1=1]}}]\n'
    registry = Registry(spec_dirs(etc={"a.yaml": a, "b.yaml": b}))
    assert registry.merged_edits(["a.com/x=d1", "b.com/y=d1", "a.com/x=d2"]).env == ("SPEC_A=1", "A1=1", "SPEC_B=1", "B1=1", "A2=1")
    assert registry.merged_edits(["a.com/x=d1", "a.com/x=d1"]).env == ("SPEC_A=1", "A1=1", "A1=1")


def test_all_env_of_all_devices_comes_before_any_device_node(spec_dirs: Any) -> None:
    stat = FakeStat()
    stat.add("/dev/n1", "c", 5, 1)
    a = ('cdiVersion: "0.3.0"\nkind: a.com/x\ndevices:\n  - {name: d1, containerEdits: {env: [ONE=1], deviceNodes: [{path: /dev/n1}]}}\n'
         '  - {name: d2, containerEdits: {env: [TWO=2], deviceNodes: [{path: /dev/n2}]}}\n')
    oci: dict[str, Any] = {}
    with pytest.raises(CDIError):
        Registry(spec_dirs(etc={"a.yaml": a}), stat=stat).inject_devices(oci, ["a.com/x=d1", "a.com/x=d2"])
    assert oci["process"]["env"] == ["ONE=1", "TWO=2"] and [d["path"] for d in oci["linux"]["devices"]] == ["/dev/n1"]


def test_the_inject_helper_edits_in_place_and_returns_the_spec(spec_dirs: Any) -> None:
    oci: dict[str, Any] = {"ociVersion": "1.0.2", "x-unknown": {"kept": True}}
    dirs = spec_dirs(etc={"vendor1.yaml": VENDOR1_SPEC})
    assert inject(oci, ["vendor1.com/device=dev3"], spec_dirs=dirs, stat=FakeStat()) is oci
    assert oci["x-unknown"] == {"kept": True} and oci["linux"]["devices"] == [block(3)]


# --- regressions_test.go: the containerd-style flow from annotations -----------------------------
REGRESSION_SPECS = {
    "spec-0.yaml": 'cdiVersion: "0.3.0"\nkind: "vendor1.com/device"\ndevices:\n  - name: foo\n    containerEdits:\n'
                   '      deviceNodes:\n        - path: /dev/loop8\n          type: b\n          major: 7\n          minor: 8\n'
                   '      env:\n        - FOO=injected\ncontainerEdits:\n  env:\n    - "VENDOR1=present"\n',
    "spec-1.yaml": 'cdiVersion: "0.3.0"\nkind: "vendor2.com/device"\ndevices:\n  - name: bar\n    containerEdits:\n'
                   '      deviceNodes:\n        - path: /dev/loop9\n          type: b\n          major: 7\n          minor: 9\n'
                   '      env:\n        - BAR=injected\ncontainerEdits:\n  env:\n    - "VENDOR2=present"\n',
}


def with_cdi(annotations: dict[str, str] | None, dirs: list[str], oci: dict[str, Any]) -> None:
    _, devices = parse_annotations(annotations)
    if devices:
        Registry(dirs, stat=FakeStat()).inject_devices(oci, devices)


@pytest.mark.parametrize(
    ("annotations", "error"),
    [(None, None), ({}, None), ({ANNOTATION_PREFIX + "devices": "foobar"}, 'invalid CDI device name "foobar"'),
     ({ANNOTATION_PREFIX + "vendor1_devices": "vendor1.com/device=no-such-dev"},
      "unresolvable CDI devices vendor1.com/device=no-such-dev")],
)
def test_annotations_that_name_nothing_or_nothing_valid(spec_dirs: Any, annotations: Any, error: str | None) -> None:
    oci: dict[str, Any] = {}
    if error is None:
        with_cdi(annotations, spec_dirs(etc=REGRESSION_SPECS), oci)
        assert oci == {}
        return
    with pytest.raises(CDIError) as caught:
        with_cdi(annotations, spec_dirs(etc=REGRESSION_SPECS), oci)
    assert caught.value.message == error


def test_annotations_inject_resolvable_devices(spec_dirs: Any) -> None:
    oci: dict[str, Any] = {}
    with_cdi({ANNOTATION_PREFIX + "vendor1_devices": "vendor1.com/device=foo",
              ANNOTATION_PREFIX + "vendor2_devices": "vendor2.com/device=bar"}, spec_dirs(etc=REGRESSION_SPECS), oci)
    assert oci["linux"]["devices"] == [{"path": "/dev/loop8", "type": "b", "major": 7, "minor": 8},
                                       {"path": "/dev/loop9", "type": "b", "major": 7, "minor": 9}]
    assert oci["process"]["env"] == ["VENDOR1=present", "FOO=injected", "VENDOR2=present", "BAR=injected"]
