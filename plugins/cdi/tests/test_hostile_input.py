"""Hostile spec files and OCI specs: every one is a one-line error of that file (or of the device and
field), never a hang, a traceback, an exhausted memory or a forged log line; the other files load."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vmdev.errors import ConfigError, one_line
from vmdev.oci import parse_spec
from vmdev.planner import plan
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_cdi import spec as spec_module
from vmdev_cdi.decode import DecodeError, load_yaml, parse_document
from vmdev_cdi.edits import apply_edits
from vmdev_cdi.errors import OciSpecError
from vmdev_cdi.model import ContainerEdits, DeviceNode, Hook, Mount
from vmdev_cdi.registry import Registry
from vmdev_cdi.testing import FakeStat

GOOD = ('{"cdiVersion":"0.6.0","kind":"acme.com/dev",'
        '"devices":[{"name":"n","containerEdits":{"deviceNodes":[{"path":"/dev/null"}]}}]}')
LOL = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(5)
)  # 10**6 nodes when expanded: Go refuses it long before
SPEC_HEAD = "cdiVersion: 0.6.0\nkind: acme.com/dev\n"


def node_spec(major: str) -> str:
    return SPEC_HEAD + f"devices: [{{name: m, containerEdits: {{deviceNodes: [{{path: /dev/null, major: {major}}}]}}}}]\n"


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A spec directory holding one good spec, a.json (device acme.com/dev=n)."""
    directory = tmp_path / "cdi"
    directory.mkdir()
    (directory / "a.json").write_text(GOOD)
    return directory


def only_error(registry: Registry, path: Path) -> str:
    """The one recorded error of ``path``, after checking the good file still loaded."""
    assert registry.list_devices() == ["acme.com/dev=n"]
    assert list(registry.errors) == [str(path)]
    [error] = registry.errors[str(path)]
    return error


# --- 1. files that are not regular, or too large ----------------------------------------------
def test_a_fifo_in_a_spec_directory_is_that_file_s_load_error_not_a_hang(spec_dir: Path) -> None:
    fifo = spec_dir / "b.json"
    os.mkfifo(fifo)
    error = only_error(Registry([str(spec_dir)]), fifo)
    assert error == f'failed to load CDI Spec failed to read CDI Spec "{fifo}": "{fifo}" is not a regular file'


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null"])
def test_a_symlink_to_a_device_node_is_a_load_error_not_an_endless_read(spec_dir: Path, target: str) -> None:
    link = spec_dir / "z.yaml"
    link.symlink_to(target)
    assert only_error(Registry([str(spec_dir)]), link).endswith(f'"{link}" is not a regular file')


def test_a_spec_file_over_the_size_cap_is_a_load_error_naming_the_cap(
    spec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spec_module, "MAX_SPEC_BYTES", len(GOOD))
    exact, over = spec_dir / "exact.json", spec_dir / "over.json"
    exact.write_text(GOOD.replace('"name":"n"', '"name":"e"'))  # as long as GOOD: still read
    over.write_text(GOOD.replace('"name":"n"', '"name":"oo"'))
    registry = Registry([str(spec_dir)])
    assert registry.list_devices() == ["acme.com/dev=e", "acme.com/dev=n"]
    assert registry.errors == {str(over): [
        f'failed to load CDI Spec failed to read CDI Spec "{over}": "{over}" holds more than {len(GOOD)} bytes']}


def test_the_size_cap_is_4_mib() -> None:
    assert spec_module.MAX_SPEC_BYTES == 4 * 1024 * 1024


def test_a_directory_behind_a_symlink_keeps_go_s_read_error(spec_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    link = spec_dir / "d.yaml"
    link.symlink_to(tmp_path / "d")
    error = only_error(Registry([str(spec_dir)]), link)
    assert error == f'failed to load CDI Spec failed to read CDI Spec "{link}": read {link}: is a directory'


# --- 2. aliases, as yaml.v2 bounds them ------------------------------------------------------
def test_a_billion_laughs_is_refused_with_yaml_v2_s_text() -> None:
    with pytest.raises(DecodeError) as caught:
        load_yaml(LOL)
    assert str(caught.value) == "error converting YAML to JSON: yaml: document contains excessive aliasing"


def test_a_flat_reuse_of_an_anchor_stays_within_yaml_v2_s_budget() -> None:
    # 200 aliases of a 100-item list: 20,200 of 20,506 visits come from aliases (98.5% < 99%)
    text = "a: &a [" + ",".join(["x"] * 100) + "]\nb: [" + ",".join(["*a"] * 200) + "]\n"
    value = load_yaml(text)
    assert len(value["b"]) == 200 and value["b"][0] == ["x"] * 100


def test_an_anchor_reused_by_devices_loads() -> None:
    text = SPEC_HEAD + ("devices:\n- {name: a, containerEdits: &e {deviceNodes: [{path: /dev/null}]}}\n"
                        "- {name: b, containerEdits: *e}\n")
    document = parse_document(text)
    assert document is not None and [d.name for d in document.device_list()] == ["a", "b"]


def test_an_alias_inside_its_own_anchor_is_refused_with_yaml_v2_s_text() -> None:
    with pytest.raises(DecodeError) as caught:
        load_yaml("a: &a [x, *a]\n")
    assert str(caught.value) == "error converting YAML to JSON: yaml: anchor 'a' value contains itself"


# --- 3. every broken file is that file's error -----------------------------------------------
BROKEN: dict[str, tuple[bytes, str]] = {
    "a NUL byte": (b'{"cdiVersion":"0.6.0\0","kind":"acme.com/dev"}', "yaml: control characters are not allowed"),
    "a raw ESC": (b"cdiVersion: 0.6.0\x1b[31m\nkind: acme.com/dev\n", "yaml: control characters are not allowed"),
    "bytes that are not UTF-8": (SPEC_HEAD.encode() + b"x: \xff\n", "yaml: invalid leading UTF-8 octet"),
    "deep nesting": ((SPEC_HEAD + "annotations: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
                     "yaml: line 3: exceeded max depth of 100"),
    "a 5000-digit integer": (node_spec("9" * 5000).encode(),
                             "json: cannot unmarshal string into Go struct field DeviceNode"),
    "an explicit bool that is not one": (node_spec("!!bool maybe").encode(),
                                         "yaml: cannot decode !!str `maybe` as a !!bool"),
    "an explicit int that is not one": (node_spec("!!int 0x_").encode(), "yaml: cannot decode !!str `0x_` as a !!int"),
    "an alias bomb": (LOL.encode(), "yaml: document contains excessive aliasing"),
}


@pytest.mark.parametrize(("content", "reason"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_spec_file_is_its_own_one_line_load_error_and_the_others_load(
    spec_dir: Path, content: bytes, reason: str
) -> None:
    bad = spec_dir / "b.yaml"
    bad.write_bytes(content)
    error = only_error(Registry([str(spec_dir)]), bad)
    assert error.startswith(f'failed to load CDI Spec failed to parse CDI Spec "{bad}": failed to unmarshal CDI Spec: ')
    assert reason in error
    assert "\n" not in error and "\x1b" not in error and "\0" not in error


def test_a_python_error_the_decoder_did_not_foresee_is_that_file_s_error(
    spec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(data: bytes | str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("vmdev_cdi.decode.unmarshal_strict", broken)
    registry = Registry([str(spec_dir)])
    assert registry.list_devices() == []
    assert registry.errors[str(spec_dir / "a.json")] == [
        f'failed to load CDI Spec failed to parse CDI Spec "{spec_dir}/a.json": failed to unmarshal CDI Spec: '
        "vmdev cannot read this document (RecursionError: maximum recursion depth exceeded)"]


def test_any_other_failure_while_loading_a_file_is_still_that_file_s_error(
    spec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: str, priority: int, validator: Any = None) -> None:
        raise RuntimeError("boom\nforged")

    monkeypatch.setattr("vmdev_cdi.registry.read_spec", broken)
    registry = Registry([str(spec_dir)])
    assert registry.errors == {str(spec_dir / "a.json"): [
        f'failed to load CDI Spec failed to parse CDI Spec "{spec_dir}/a.json": '
        "vmdev-cdi cannot read it (RuntimeError: boom\nforged)"]}


# --- through the command line and the planner ------------------------------------------------
@pytest.fixture
def vmdev(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VMDEV_PLUGINS", "vmdev-cdi")
    from vmdev.cli import main

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return run


def test_cdi_validate_reports_each_broken_file_on_one_line(vmdev: Any, spec_dir: Path) -> None:
    files = []
    for index, (content, _) in enumerate(BROKEN.values()):
        files.append(spec_dir / f"bad{index}.yaml")
        files[-1].write_bytes(content)
    os.mkfifo(spec_dir / "fifo.yaml")
    files.append(spec_dir / "fifo.yaml")
    result = vmdev("cdi", "validate", *map(str, files))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(files)
    for line, path in zip(lines, files, strict=True):
        assert line.startswith(f"vmdev: error: {path}: failed to ")
    assert "internal error" not in result.stderr and "\x1b" not in result.stderr


def test_cdi_validate_reports_an_unforeseen_failure_on_one_line(
    vmdev: Any, spec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: str, priority: int, validator: Any = None) -> None:
        raise RuntimeError("boom\nforged")

    monkeypatch.setattr("vmdev_cdi.cli.read_spec", broken)
    result = vmdev("cdi", "validate", str(spec_dir / "a.json"))
    assert result.exit_code == 1
    assert result.stderr == f"vmdev: error: {spec_dir}/a.json: vmdev-cdi cannot read it (RuntimeError: boom\\nforged)\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deeply"),  # was a RecursionError
        (b'{"a": ' + b"[" * 101 + b"]" * 101 + b"}",
         "$.a[0][0][0][0]...: not valid JSON: nested more than 100 levels deep"),
        (b'{"process": {"env": [NaN]}}', "not valid JSON: NaN is not JSON"),  # was printed back as NaN
        (b'{"a": 1e999}', "not valid JSON: the number 1e999 is too large for a float"),
    ],
)
def test_cdi_inject_reads_the_oci_spec_as_strictly_as_the_core(
    vmdev: Any, spec_dir: Path, content: bytes, message: str
) -> None:
    config = spec_dir.parent / "config.json"
    config.write_bytes(content)
    result = vmdev("cdi", "inject", "--spec-dir", str(spec_dir), "--device", "vendor.com/x=y", str(config))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"vmdev: error: {config}: {message}") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("kind", ["fifo", "device", "stdin too large"])
def test_cdi_inject_refuses_an_oci_spec_it_cannot_read_whole_without_blocking(
    spec_dir: Path, kind: str
) -> None:
    """In a child process with a deadline: the old reader blocked on a FIFO and read /dev/zero
    until memory ran out."""
    import subprocess
    import sys

    from vmdev.oci import MAX_SPEC_BYTES

    path, stdin = str(spec_dir.parent / "config.json"), b""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = "/dev/zero"
    else:
        path, stdin = "-", b" " * (MAX_SPEC_BYTES + 1)
    done = subprocess.run(
        [sys.executable, "-m", "vmdev", "cdi", "inject", "--spec-dir", str(spec_dir), "--device", "vendor.com/x=y",
         path], input=stdin, capture_output=True, timeout=60, check=False,
        env={**os.environ, "VMDEV_PLUGINS": "vmdev-cdi"})
    expected = {"fifo": "not a regular file (a FIFO)", "device": "not a regular file (a character device)",
                "stdin too large": f"larger than {MAX_SPEC_BYTES} bytes"}[kind]
    assert done.returncode == 1
    assert done.stderr.decode() == f"vmdev: error: {path}: cannot read OCI spec: {expected}\n"


def test_cdi_list_escapes_control_characters_in_file_names(vmdev: Any, spec_dir: Path) -> None:
    (spec_dir / "x\nvmdev: error: forged \x1b[31mRED.json").write_text("{")
    (spec_dir / "y\x1b[0m.json").write_text(GOOD.replace('"name":"n"', '"name":"y"'))
    result = vmdev("cdi", "list", "--spec-dir", str(spec_dir))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert result.output.splitlines()[-3:] == [
        f"acme.com/dev=n  0         {spec_dir}/a.json",
        f"acme.com/dev=y  0         {spec_dir}/y\\x1b[0m.json",
        f"error: {spec_dir}/x\\nvmdev: error: forged \\x1b[31mRED.json: failed to load CDI Spec failed to parse CDI Spec "
        f'"{spec_dir}/x\\nvmdev: error: forged \\x1b[31mRED.json": failed to unmarshal CDI Spec: error converting YAML '
        "to JSON: yaml: line 1: expected the node content, but found '<stream end>'",
    ]


@pytest.fixture
def host(fake_host: FakeHost) -> FakeHost:
    fake_host.char_device(1, 3, "null")
    fake_host.fake_stat(str(fake_host.dev / "null"), mode=stat.S_IFCHR | 0o666, rdev=(1, 3))
    return fake_host


def plan_with(vmdev_plugins: Any, host: FakeHost, spec_dir: Path, document: dict[str, Any]) -> Any:
    document = {"annotations": {"cdi.k8s.io/x": "acme.com/dev=n"}, **document}
    settings = SandboxSettings(options={"cdi_spec_dirs": [str(spec_dir)]})
    return plan(parse_spec(document), settings, host=host.context(), plugins=vmdev_plugins("vmdev-cdi"))


def test_planning_goes_on_when_a_spec_file_fails_and_the_warning_is_one_quoted_line(
    vmdev_plugins: Any, host: FakeHost, spec_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = spec_dir / "x\nvmdev: error: forged \x1b[31mRED.yaml"
    bad.write_bytes(BROKEN["an explicit bool that is not one"][0])
    os.mkfifo(spec_dir / "fifo.json")
    with caplog.at_level(logging.WARNING, logger="vmdev.cdi"):
        result = plan_with(vmdev_plugins, host, spec_dir, {})
    assert [d["container_path"] for d in result.to_json()["devices"]] == ["/dev/null"]
    messages = [r.getMessage() for r in caplog.records if r.name == "vmdev.cdi"]
    assert len(messages) == 2
    assert messages[1].startswith(f"CDI spec {json.dumps(str(bad))}: failed to load CDI Spec failed to parse CDI Spec ")
    assert messages[0].startswith(f'CDI spec "{spec_dir}/fifo.json": failed to load CDI Spec failed to read ')
    assert all(message == one_line(message) for message in messages)


# --- 4. a malformed OCI spec where an edit goes -------------------------------------------------
MALFORMED: dict[str, tuple[dict[str, Any], str, str]] = {
    "process not an object": ({"process": [1]}, "$.process", "must be an object"),
    "user not an object": ({"process": {"user": "root"}}, "$.process.user", "must be an object"),
    "uid a string": ({"process": {"user": {"uid": "abc"}}}, "$.process.user.uid",
                     "must be an integer from 0 to 4294967295"),
    "gid a bool": ({"process": {"user": {"gid": True}}}, "$.process.user.gid",
                   "must be an integer from 0 to 4294967295"),
    "uid beyond uint32": ({"process": {"user": {"uid": 2**40}}}, "$.process.user.uid",
                          "must be an integer from 0 to 4294967295"),
    "uid a float": ({"process": {"user": {"uid": 1e308}}}, "$.process.user.uid",
                    "must be an integer from 0 to 4294967295"),
    "linux not an object": ({"linux": []}, "$.linux", "must be an object"),
    "a linux device not an object": ({"linux": {"devices": [5]}}, "$.linux.devices[0]", "must be an object"),
    "cgroup rules not an array": ({"linux": {"resources": {"devices": {}}}}, "$.linux.resources.devices",
                                  "must be an array"),
}


@pytest.mark.parametrize(("document", "field", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_oci_field_where_a_device_node_goes_names_the_node_and_the_json_path(
    fake_stat: FakeStat, document: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(OciSpecError) as caught:
        apply_edits(document, ContainerEdits(device_nodes=[DeviceNode(path="/dev/null")]), stat=fake_stat)
    assert isinstance(caught.value, ConfigError)
    assert (caught.value.device, caught.value.field, caught.value.message) == ("/dev/null", field, message)


@pytest.mark.parametrize(("document", "edits", "field", "message"), [
    ({"process": {"env": "PATH=/bin"}}, ContainerEdits(env=["A=1"]), "$.process.env", "must be an array"),
    ({"process": {"env": [1]}}, ContainerEdits(env=["A=1"]), "$.process.env[0]", "must be a string"),
    ({"process": {"user": {"additionalGids": 7}}}, ContainerEdits(additional_gids=[44]),
     "$.process.user.additionalGids", "must be an array"),
    ({"mounts": {}}, ContainerEdits(mounts=[Mount(host_path="/a", container_path="/b")]), "$.mounts", "must be an array"),
    ({"linux": {"namespaces": "user"}}, ContainerEdits(mounts=[Mount(host_path="/a", container_path="/b")]),
     "$.linux.namespaces", "must be an array"),
    ({"hooks": {"prestart": {}}}, ContainerEdits(hooks=[Hook(hook_name="prestart", path="/h")]),
     "$.hooks.prestart", "must be an array"),
])
def test_other_malformed_oci_fields_an_edit_extends_name_their_json_path(
    document: dict[str, Any], edits: ContainerEdits, field: str, message: str
) -> None:
    with pytest.raises(OciSpecError) as caught:
        apply_edits(document, edits)
    assert (caught.value.field, caught.value.message) == (field, message)


@pytest.mark.parametrize(("process", "field"), [
    ({"user": {"uid": "abc"}}, "$.process.user.uid"),
    ([1], "$.process"),
])
def test_a_plan_with_a_malformed_process_is_one_line_naming_the_device_and_the_field(
    vmdev_plugins: Any, host: FakeHost, spec_dir: Path, process: Any, field: str
) -> None:
    with pytest.raises(OciSpecError) as caught:
        plan_with(vmdev_plugins, host, spec_dir, {"process": process})
    assert (caught.value.device, caught.value.field) == ("/dev/null", field)
    assert str(caught.value).startswith(f"/dev/null: {field}: CDI device injection failed: must be ")


def test_inject_names_the_requested_devices_when_no_node_is_at_fault(
    vmdev: Any, spec_dir: Path, tmp_path: Path
) -> None:
    (spec_dir / "env.json").write_text(GOOD.replace('"deviceNodes":[{"path":"/dev/null"}]', '"env":["A=1"]')
                                       .replace('"name":"n"', '"name":"e"'))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"process": {"env": "PATH=/bin"}}))
    result = vmdev("cdi", "inject", "--spec-dir", str(spec_dir), "--device", "acme.com/dev=e", str(config))
    assert result.exit_code == 1
    assert result.stderr == ("vmdev: error: acme.com/dev=e: $.process.env: failed to inject devices: "
                             "must be an array\n")
