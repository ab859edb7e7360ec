"""Spec files: parsing as sigs.k8s.io/yaml does, validation order and texts (spec_test.go,
device_test.go, container-edits_test.go's validation table), writing as the Go writer does."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from vmdev_cdi import (
    CDIError,
    ContainerEdits,
    Device,
    SpecDocument,
    SpecError,
    new_spec,
    parse_spec,
    read_spec,
)
from vmdev_cdi.model import DeviceNode, Hook, IntelRdt, LinuxNetDevice, Mount
from vmdev_cdi.registry import Registry, write_spec_file
from vmdev_cdi.spec import (
    encode_spec,
    generate_name_for_spec,
    generate_spec_name,
    generate_transient_spec_name,
)
from vmdev_cdi.validate import validate_device, validate_edits

VALID = """
cdiVersion: "0.3.0"
kind: vendor.com/device
devices:
  - name: "dev1"
    containerEdits:
      env:
        - "FOO=BAR"
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def read_error(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = write(tmp_path, text, name)
    with pytest.raises(SpecError) as caught:
        read_spec(path, 0)
    return caught.value.message


# --- ReadSpec ---------------------------------------------------------------------------------
def test_a_valid_spec_reads_with_its_path_priority_vendor_class_and_devices(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    spec = read_spec(path, 1)
    assert (spec.path, spec.priority, spec.vendor, spec.class_) == (path, 1, "vendor.com", "device")
    device = spec.get_device("dev1")
    assert device is not None and device.spec is spec
    assert device.qualified_name == "vendor.com/device=dev1"
    assert device.edits.env == ("FOO=BAR",)


def test_an_unknown_field_is_a_parse_error_with_the_full_chain(tmp_path: Path) -> None:
    path = write(tmp_path, "xyzzy: garbled\n")
    assert read_error(tmp_path, "xyzzy: garbled\n") == (
        f'failed to parse CDI Spec "{path}": failed to unmarshal CDI Spec: error unmarshaling JSON: '
        'while decoding JSON: json: unknown field "xyzzy"'
    )


@pytest.mark.parametrize("text", ["", "null\n", "# only a comment\n", "---\n"])
def test_an_empty_document_has_no_spec_data(tmp_path: Path, text: str) -> None:
    path = str(tmp_path / "spec.yaml")
    assert read_error(tmp_path, text) == f'failed to parse CDI Spec "{path}", no Spec data'


def test_a_missing_file_is_the_raw_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_spec(str(tmp_path / "nope.yaml"), 0)


def test_an_unreadable_path_is_a_read_error(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(SpecError) as caught:
        read_spec(str(tmp_path / "dir.yaml"), 0)
    path = tmp_path / "dir.yaml"
    assert caught.value.message == f'failed to read CDI Spec "{path}": read {path}: is a directory'


# --- parsing details (sigs.k8s.io/yaml UnmarshalStrict) ----------------------------------------
def test_json_and_yaml_go_through_the_same_yaml_parser_whatever_the_extension(tmp_path: Path) -> None:
    text = '{"cdiVersion":"0.3.0","kind":"vendor.com/device","devices":[{"name":"d","containerEdits":{"deviceNodes":[{"path":"/dev/x","fileMode":0666}]}}]}'
    spec = read_spec(write(tmp_path, text, "x.json"), 0)
    assert spec.devices["d"].edits.device_nodes[0].file_mode == 0o666  # not JSON, read as YAML 1.1 octal
    assert read_spec(write(tmp_path, VALID, "y.json"), 0).vendor == "vendor.com"


@pytest.mark.parametrize(
    ("scalar", "text"),
    [("0", "0"), ("on", "true"), ("y", "true"), ("yes", "true"), ("n", "false"), ("off", "false"),
     ("1.0", "1"), ("1.5", "1.5"), ("1e6", "1e+06"), ("100000", "100000"), ("0x1F", "31"), ("0666", "438"),
     ("1_000", "1000"), ("2001-12-14", "2001-12-14"), ("190:20:30", "190:20:30"), ("'0'", "0"), ("0.1", "0.1")],
)
def test_scalars_become_the_text_go_gives_a_string_field(scalar: str, text: str) -> None:
    doc = parse_spec(f"kind: {scalar}\n")
    assert doc is not None and doc.kind == text


def test_a_float_version_becomes_its_shortest_text_and_then_fails(tmp_path: Path) -> None:
    assert read_error(tmp_path, VALID.replace('"0.3.0"', "1.0")) == 'invalid CDI Spec: invalid version "1"'


def test_keys_match_fields_ignoring_case_and_the_last_in_sorted_order_wins() -> None:
    doc = parse_spec("CDIVERSION: 0.3.0\nKind: a.com/b\nDevices: []\n")
    assert doc is not None and (doc.cdi_version, doc.kind, doc.devices) == ("0.3.0", "a.com/b", ())
    doc = parse_spec("KIND: first\nkind: second\n")
    assert doc is not None and doc.kind == "second"


def test_a_repeated_key_is_an_error_naming_its_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec('cdiVersion: "0.3.0"\nkind: a.com/b\nkind: a.com/c\n')
    assert caught.value.message == ('failed to unmarshal CDI Spec: error converting YAML to JSON: yaml: unmarshal '
                                    'errors:\n  line 3: key "kind" already set in map')


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("devices: x\n", "json: cannot unmarshal string into Go struct field Spec.devices of type []specs.Device"),
        ("devices: [{containerEdits: {deviceNodes: [{major: '1'}]}}]\n",
         "json: cannot unmarshal string into Go struct field DeviceNode.devices.containerEdits.deviceNodes.major"),
        ("devices: [{containerEdits: {deviceNodes: [{uid: 4294967296}]}}]\n",
         "json: cannot unmarshal number 4294967296 into Go struct field DeviceNode.devices.containerEdits.deviceNodes.uid"),
        ("devices: [{containerEdits: {deviceNodes: [{uid: -1}]}}]\n", "json: cannot unmarshal number -1"),
        ("containerEdits: {additionalGids: [1.5]}\n", "json: cannot unmarshal number 1.5"),
        ("containerEdits: {intelRdt: {enableMonitoring: 1}}\n", "json: cannot unmarshal number into Go struct field IntelRdt"),
        ("containerEdits: {env: [[1]]}\n", "json: cannot unmarshal array into Go struct field ContainerEdits.containerEdits.env of type string"),
        ("- 1\n", "json: cannot unmarshal array into Go value of type specs.Spec"),
        ("containerEdits: {intelRdt: {enableCMT: true}}\n", 'json: unknown field "enableCMT"'),
        ("devices: [{name: x, containerEdits: {}, extra: 1}]\n", 'json: unknown field "extra"'),
    ],
)
def test_decoding_errors_have_go_s_json_texts(text: str, prefix: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    assert caught.value.message.startswith("failed to unmarshal CDI Spec: error unmarshaling JSON: while decoding JSON: " + prefix)


def test_the_first_error_in_sorted_key_order_is_reported() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("zzz: 1\naaa: 2\n")
    assert caught.value.message.endswith('json: unknown field "aaa"')


def test_a_float_that_is_an_integer_decodes_into_an_integer_field() -> None:
    doc = parse_spec("containerEdits: {additionalGids: [5.0]}\n")
    assert doc is not None and doc.container_edits.additional_gids == (5,)


def test_nan_outside_a_string_field_cannot_become_json() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("containerEdits: {additionalGids: [.nan]}\n")
    assert caught.value.message == "failed to unmarshal CDI Spec: error converting YAML to JSON: json: unsupported value: NaN"
    doc = parse_spec("kind: .nan\n")
    assert doc is not None and doc.kind == "NaN"


def test_only_the_first_yaml_document_counts() -> None:
    doc = parse_spec("kind: a.com/b\n---\nkind: c.com/d\n")
    assert doc is not None and doc.kind == "a.com/b"


def test_a_yaml_syntax_error_is_a_conversion_error() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("devices: [\n")
    assert caught.value.message.startswith("failed to unmarshal CDI Spec: error converting YAML to JSON: yaml: line ")


def test_null_and_empty_tell_nil_from_present() -> None:
    doc = parse_spec("containerEdits: {intelRdt: null}\ndevices: null\n")
    assert doc is not None and doc.container_edits.intel_rdt is None and doc.devices is None
    doc = parse_spec("containerEdits: {intelRdt: {}}\ndevices: []\n")
    assert doc is not None and doc.container_edits.intel_rdt == IntelRdt() and doc.devices == ()
    doc = parse_spec("containerEdits: {intelRdt: {schemata: []}}\n")
    assert doc is not None and doc.container_edits.intel_rdt == IntelRdt(schemata=())


# --- newSpec: the order of checks and their texts --------------------------------------------
SPEC_ERRORS = [
    ("missing version", "kind: vendor.com/device\ndevices: [{name: dev1, containerEdits: {env: [FOO=BAR]}}]\n",
     'invalid CDI Spec: invalid version ""'),
    ("version 0.0.0", 'cdiVersion: "0.0.0"\nkind: vendor.com/device\ndevices: [{name: dev1, containerEdits: {env: [FOO=BAR]}}]\n',
     'invalid CDI Spec: invalid version "0.0.0"'),
    ("missing kind", 'cdiVersion: "0.3.0"\ndevices: [{name: dev1, containerEdits: {env: [FOO=BAR]}}]\n',
     "invalid CDI Spec: invalid vendor. empty name"),
    ("kind without class", 'cdiVersion: "0.3.0"\nkind: vendor.comdevice\ndevices: [{name: d, containerEdits: {env: [A=1]}}]\n',
     "invalid CDI Spec: invalid vendor. empty name"),
    ("invalid vendor", 'cdiVersion: "0.3.0"\nkind: vendor.com-/device\ndevices: [{name: d, containerEdits: {env: [A=1]}}]\n',
     'invalid CDI Spec: invalid vendor. "vendor.com-", should end with a letter or digit'),
    ("invalid class", 'cdiVersion: "0.3.0"\nkind: vendor.com/device=\ndevices: [{name: d, containerEdits: {env: [A=1]}}]\n',
     'invalid CDI Spec: invalid class. "device=", should end with a letter or digit'),
    ("missing device edits", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices: [{name: dev1}]\n',
     'invalid CDI Spec: failed add device "dev1": invalid device, empty device edits'),
    ("null device edits", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices: [{name: dev1, containerEdits: null}]\n',
     'invalid CDI Spec: failed add device "dev1": invalid device, empty device edits'),
    ("conflicting devices", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n'
     '  - {name: dev1, containerEdits: {env: [FOO=BAR]}}\n  - {name: dev2, containerEdits: {env: [BAR=FOO]}}\n'
     '  - {name: dev1, containerEdits: {env: [SPACE=BAR]}}\n', 'invalid CDI Spec: invalid spec, multiple device "dev1"'),
    ("duplicate reported after the duplicate validated", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n'
     '  - {name: dev1, containerEdits: {env: [FOO=BAR]}}\n  - {name: dev1}\n',
     'invalid CDI Spec: failed add device "dev1": invalid device, empty device edits'),
    ("no devices", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ncontainerEdits: {env: [FOO=BAR]}\n',
     "invalid CDI Spec: invalid spec, no devices"),
    ("empty device list", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices: []\n', "invalid CDI Spec: invalid spec, no devices"),
    ("bad device name", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices: [{name: "a dev ice", containerEdits: {env: [A=1]}}]\n',
     'invalid CDI Spec: failed add device "a dev ice": invalid character \' \' in device name "a dev ice"'),
    ("bad device edits", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices: [{name: dev, containerEdits: {env: ["=BAR"]}}]\n',
     'invalid CDI Spec: failed add device "dev": invalid device "dev": invalid container edits: invalid environment variable "=BAR"'),
    ("bad spec edits are not wrapped", 'cdiVersion: "0.3.0"\nkind: vendor.com/device\ncontainerEdits: {hooks: [{hookName: x, path: /p}]}\n'
     'devices: [{name: d, containerEdits: {env: [A=1]}}]\n', 'invalid CDI Spec: invalid hook name "x"'),
    ("version checked before kind", 'cdiVersion: "9"\nkind: "-"\ndevices: []\n', 'invalid CDI Spec: invalid version "9"'),
    ("digit-first name needs 0.5.0", 'cdiVersion: "0.4.0"\nkind: a.com/b\ndevices: [{name: "0", containerEdits: {env: [A=1]}}]\n',
     "invalid CDI Spec: the spec version must be at least v0.5.0"),
    ("annotations need 0.6.0 (the Kata design doc's example)", 'cdiVersion: "0.4.0"\nkind: nvidia.com/gpu\n'
     'devices: [{name: "gpu0", annotations: {bdf: "41:00.0"}, containerEdits: {env: [A=1]}}]\n',
     "invalid CDI Spec: the spec version must be at least v0.6.0"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in SPEC_ERRORS], ids=[d for d, _, _ in SPEC_ERRORS])
def test_spec_validation_texts(tmp_path: Path, text: str, message: str) -> None:
    assert read_error(tmp_path, text) == message


def test_annotation_keys_are_not_checked_when_loading() -> None:
    doc = parse_spec('cdiVersion: "0.6.0"\nkind: a.com/b\nannotations: {"inva$$lid_CDIKEY": x}\n'
                     'devices: [{name: d, annotations: {"%%": zz}, containerEdits: {env: [A=1]}}]\n')
    assert doc is not None
    assert new_spec(doc, "/x.yaml", 0).devices["d"].raw.annotations == {"%%": "zz"}


def test_a_path_without_a_spec_extension_gets_yaml_appended_and_is_cleaned() -> None:
    doc = parse_spec(VALID)
    assert doc is not None
    assert new_spec(doc, "/etc//cdi/./x", 0).path == "/etc/cdi/x.yaml"
    assert new_spec(doc, "/etc/cdi/x.json", 0).path == "/etc/cdi/x.json"
    assert new_spec(doc, "/etc/cdi/vendor.com-device", 0).path == "/etc/cdi/vendor.com-device.yaml"


class _Refuse:
    def validate(self, doc: SpecDocument) -> None:
        raise CDIError("no thanks")


def test_a_validator_runs_first() -> None:
    doc = parse_spec("kind: x\n")
    assert doc is not None
    with pytest.raises(SpecError) as caught:
        new_spec(doc, "/x.yaml", 0, _Refuse())
    assert caught.value.message == "Spec validation failed: no thanks"


# --- device_test.go and container-edits_test.go: Validate ----------------------------------------
@pytest.mark.parametrize(
    ("device", "message"),
    [
        (Device(name="dev", container_edits=ContainerEdits(env=["FOO=BAR"])), ""),
        (Device(name="dev", container_edits=ContainerEdits(env=["=BAR"])),
         'invalid device "dev": invalid container edits: invalid environment variable "=BAR"'),
        (Device(name="a dev ice", container_edits=ContainerEdits(env=["FOO=BAR"])),
         "invalid character ' ' in device name \"a dev ice\""),
        (Device(name="dev", container_edits=ContainerEdits(intel_rdt=IntelRdt())), ""),
    ],
)
def test_device_validate(device: Device, message: str) -> None:
    if not message:
        validate_device(device)
        return
    with pytest.raises(CDIError) as caught:
        validate_device(device)
    assert caught.value.message == message


ALL_HOOKS = [Hook(hook_name=n, path=f"/usr/local/bin/{n}-vendor-hook", env=["VENDOR_ENV=v"])
             for n in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")]
EDITS = [
    ("empty edits", None, ""),
    ("env var", ContainerEdits(env=["BAR=BARVALUE1"]), ""),
    ("empty env var", ContainerEdits(env=[""]), 'invalid container edits: invalid environment variable ""'),
    ("no var name", ContainerEdits(env=["=foo"]), 'invalid container edits: invalid environment variable "=foo"'),
    ("no assignment", ContainerEdits(env=["FOOBAR"]), 'invalid container edits: invalid environment variable "FOOBAR"'),
    ("empty value is fine", ContainerEdits(env=["FOO="]), ""),
    ("device path only", ContainerEdits(device_nodes=[DeviceNode(path="/dev/null")]), ""),
    ("device path+type", ContainerEdits(device_nodes=[DeviceNode(path="/dev/null", type="c")]), ""),
    ("device path+type+permissions", ContainerEdits(device_nodes=[DeviceNode(path="/dev/null", type="b", permissions="rwm")]), ""),
    ("permissions in any order, repeated", ContainerEdits(device_nodes=[DeviceNode(path="/d", permissions="mwrrw")]), ""),
    ("device empty path", ContainerEdits(device_nodes=[DeviceNode(path="")]), "invalid (empty) device path"),
    ("device wrong type", ContainerEdits(device_nodes=[DeviceNode(path="/dev/vendorctl", type="f")]),
     'device "/dev/vendorctl": invalid type "f"'),
    ("device wrong permissions", ContainerEdits(device_nodes=[DeviceNode(path="/dev/vendorctl", type="b", permissions="to land")]),
     'device "/dev/vendorctl": invalid permissions "to land"'),
    ("device NoPermissions", ContainerEdits(device_nodes=[DeviceNode(path="/dev/vendorctl", type="b", permissions="none")]), ""),
    ("valid mount", ContainerEdits(mounts=[Mount(host_path="/dev/vendorctl", container_path="/dev/vendorctl")]), ""),
    ("mount empty host path", ContainerEdits(mounts=[Mount(host_path="", container_path="/dev/vendorctl")]),
     "invalid mount, empty host path"),
    ("mount empty container path", ContainerEdits(mounts=[Mount(host_path="/dev/vendorctl", container_path="")]),
     "invalid mount, empty container path"),
    ("valid hooks", ContainerEdits(hooks=ALL_HOOKS), ""),
    ("hook empty path", ContainerEdits(hooks=[Hook(hook_name="prestart")]), 'invalid hook "prestart" with empty path'),
    ("hook wrong name", ContainerEdits(hooks=[Hook(hook_name="misCreateRuntime", path="/x")]), 'invalid hook name "misCreateRuntime"'),
    ("hook name case", ContainerEdits(hooks=[Hook(hook_name="Prestart", path="/x")]), 'invalid hook name "Prestart"'),
    ("hook wrong env", ContainerEdits(hooks=[Hook(hook_name="poststart", path="/x", env=["=value2"])]),
     'invalid hook "poststart": invalid environment variable "=value2"'),
    ("rdt config", ContainerEdits(intel_rdt=IntelRdt(clos_id="foo.bar")), ""),
    ("rdt root clos", ContainerEdits(intel_rdt=IntelRdt(clos_id="/")), ""),
    ("rdt slash", ContainerEdits(intel_rdt=IntelRdt(clos_id="foo/bar")), "invalid ClosID"),
    ("rdt dot", ContainerEdits(intel_rdt=IntelRdt(clos_id=".")), "invalid ClosID"),
    ("rdt double dot", ContainerEdits(intel_rdt=IntelRdt(clos_id="..")), "invalid ClosID"),
    ("rdt newline", ContainerEdits(intel_rdt=IntelRdt(clos_id="foo\nbar")), "invalid ClosID"),
    ("rdt 4095 bytes", ContainerEdits(intel_rdt=IntelRdt(clos_id="c" * 4095)), ""),
    ("rdt 4096 bytes", ContainerEdits(intel_rdt=IntelRdt(clos_id="c" * 4096)), "invalid ClosID"),
    ("net device", ContainerEdits(net_devices=[LinuxNetDevice(host_interface_name="eno1", name="netdev0")]), ""),
    ("net empty host name", ContainerEdits(net_devices=[LinuxNetDevice(host_interface_name="", name="netdev0")]),
     "invalid linux net device, empty HostInterfaceName"),
    ("net empty name", ContainerEdits(net_devices=[LinuxNetDevice(host_interface_name="eno1", name="")]),
     "invalid linux net device, empty Name"),
    ("net duplicate host name", ContainerEdits(net_devices=[LinuxNetDevice(host_interface_name="eno1", name="a"),
                                                            LinuxNetDevice(host_interface_name="eno1", name="b")]),
     'invalid linux net device, duplicate HostInterfaceName "eno1" with names "b" and "a"'),
    ("net duplicate name", ContainerEdits(net_devices=[LinuxNetDevice(host_interface_name="eno1", name="a"),
                                                       LinuxNetDevice(host_interface_name="eno2", name="a")]),
     'invalid linux net device, duplicate Name "a" with HostInterfaceName "eno2" and "eno1"'),
    ("env checked before nodes", ContainerEdits(env=["X"], device_nodes=[DeviceNode()]),
     'invalid container edits: invalid environment variable "X"'),
    ("nodes before hooks before mounts", ContainerEdits(hooks=[Hook()], mounts=[Mount()], device_nodes=[DeviceNode()]),
     "invalid (empty) device path"),
    ("hooks before mounts", ContainerEdits(hooks=[Hook()], mounts=[Mount()]), 'invalid hook name ""'),
    ("mounts before rdt", ContainerEdits(mounts=[Mount()], intel_rdt=IntelRdt(clos_id=".")), "invalid mount, empty host path"),
    ("rdt before net devices", ContainerEdits(intel_rdt=IntelRdt(clos_id="."), net_devices=[LinuxNetDevice()]), "invalid ClosID"),
]


@pytest.mark.parametrize(("edits", "message"), [(e, m) for _, e, m in EDITS], ids=[d for d, _, _ in EDITS])
def test_validate_container_edits(edits: ContainerEdits | None, message: str) -> None:
    if not message:
        validate_edits(edits)
        return
    with pytest.raises(CDIError) as caught:
        validate_edits(edits)
    assert caught.value.message == message


def test_a_null_list_entry_fails_validation_where_go_would_panic() -> None:
    doc = parse_spec('cdiVersion: "0.3.0"\nkind: a.com/b\ndevices: [{name: d, containerEdits: {deviceNodes: [null]}}]\n')
    assert doc is not None
    with pytest.raises(SpecError) as caught:
        new_spec(doc, "/x.yaml", 0)
    assert caught.value.message == 'invalid CDI Spec: failed add device "d": invalid device "d": invalid (empty) device path'


# --- writing (spec_test.go TestWriteSpec, cache WriteSpec/RemoveSpec) ---------------------------------
WRITE = [
    ("spec1", VALID),
    ("spec2", """
        cdiVersion: "0.3.0"
        kind: vendor.com/device
        devices:
          - name: "dev4"
            containerEdits:
              env: ["BAR=FOO"]
          - name: "dev5"
            containerEdits:
              env: ["XYZ=ZY"]
        """),
    ("every field", """
        cdiVersion: "1.1.0"
        kind: vendor.com/class.sub
        annotations: {a.b/c: "1", z: "yes"}
        devices:
          - name: "0"
            annotations: {bdf: "41:00.0", clique-id: "0", attach-pci: "true"}
            containerEdits:
              env: ["A=0", "B="]
              deviceNodes:
                - {path: /dev/x, hostPath: /h/x, type: c, major: 10, minor: 200, fileMode: 0, permissions: rw, uid: 0, gid: 7}
              netDevices: [{hostInterfaceName: eno1, name: net0}]
              hooks: [{hookName: createContainer, path: /bin/h, args: [h, "755", "a: b", "#x"], env: [E=1], timeout: 5}]
              mounts: [{hostPath: /a, containerPath: /b, options: [ro, rbind], type: bind}]
              intelRdt: {closID: c, l3CacheSchema: "L3:0=ff", memBwSchema: "MB:0=50", schemata: ["L2:0=ff"], enableMonitoring: true}
              additionalGids: [0, 5]
        containerEdits:
          env: ["TAB=a\\tb", "Q='\\""]
        """),
]


@pytest.mark.parametrize("ext", [".yaml", ".json"])
@pytest.mark.parametrize(("name", "text"), WRITE, ids=[n for n, _ in WRITE])
def test_a_written_spec_reads_back_equal(tmp_path: Path, name: str, text: str, ext: str) -> None:
    doc = parse_spec(textwrap.dedent(text))
    assert doc is not None
    registry = Registry([str(tmp_path / "etc"), str(tmp_path / "run")])
    path = registry.write_spec(doc, name + ext)
    assert path == str(tmp_path / "run" / (name + ext))
    assert read_spec(path, 1).raw == doc
    data = Path(path).read_bytes()
    assert data.startswith(b"---\n") if ext == ".yaml" else data.startswith(b'{"cdiVersion":')
    assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")]


def test_writing_refuses_an_invalid_spec_and_overwrites_a_valid_one(tmp_path: Path) -> None:
    registry = Registry([str(tmp_path)])
    bad = parse_spec(VALID.replace('"0.3.0"', '""'))
    assert bad is not None
    with pytest.raises(SpecError, match='invalid version ""'):
        registry.write_spec(bad, "x")
    assert not (tmp_path / "x.yaml").exists()
    good = parse_spec(VALID)
    assert good is not None
    assert registry.write_spec(good, "x") == str(tmp_path / "x.yaml")
    assert registry.write_spec(good, "x") == str(tmp_path / "x.yaml")
    registry.remove_spec("x")
    registry.remove_spec("x")  # already gone: fine
    assert not (tmp_path / "x.yaml").exists()


def test_the_writer_drops_an_empty_schemata_list_as_go_s_omitempty_does() -> None:
    doc = parse_spec('cdiVersion: "1.1.0"\nkind: a.com/b\ndevices: [{name: d, containerEdits: {intelRdt: {schemata: []}}}]\n')
    assert doc is not None
    again = parse_spec(encode_spec(doc, "x.yaml"))
    assert again is not None
    assert again.device_list()[0].container_edits.intel_rdt == IntelRdt()  # schemata nil: now needs only 0.7.0


def test_write_spec_file_without_overwrite_refuses_an_existing_file(tmp_path: Path) -> None:
    doc = parse_spec(VALID)
    assert doc is not None
    write_spec_file(doc, str(tmp_path / "a.yaml"))
    with pytest.raises(CDIError, match="failed to write Spec file"):
        write_spec_file(doc, str(tmp_path / "a.yaml"), overwrite=False)


def test_the_writer_uses_go_s_yaml_and_json_shapes() -> None:
    doc = parse_spec(textwrap.dedent(WRITE[2][1]))
    assert doc is not None
    yaml_text = encode_spec(doc, "x.yaml").decode()
    assert yaml_text.splitlines()[:12] == [
        "---",
        "cdiVersion: 1.1.0",
        "kind: vendor.com/class.sub",
        "annotations:",
        '    a.b/c: "1"',
        '    z: "yes"',
        "devices:",
        '    - name: "0"',
        "      annotations:",
        "        attach-pci: \"true\"",
        '        bdf: "41:00.0"',
        '        clique-id: "0"',
    ]
    assert "                - \"755\"" in yaml_text and "                - 'a: b'" in yaml_text
    json_text = encode_spec(doc, "x.json").decode()
    assert json_text.startswith('{"cdiVersion":"1.1.0","kind":"vendor.com/class.sub","annotations":{"a.b/c":"1"')
    minimal = parse_spec(VALID)
    assert minimal is not None
    assert encode_spec(minimal, "m.json").decode().endswith('"containerEdits":{}}')  # json never omits a struct
    assert "containerEdits: {}" not in encode_spec(minimal, "m.yaml").decode().split("devices:")[0]


def test_spec_names() -> None:
    assert generate_spec_name("vendor.com", "device") == "vendor.com-device"
    assert generate_transient_spec_name("vendor.com", "device", "a/b/c") == "vendor.com-device_a_b_c"
    doc = parse_spec(VALID)
    assert doc is not None
    assert generate_name_for_spec(doc) == "vendor.com-device"
    assert generate_name_for_spec(doc, "id/1") == "vendor.com-device_id_1"
    with pytest.raises(SpecError) as caught:
        generate_name_for_spec(SpecDocument(kind="nokind"))
    assert caught.value.message == 'invalid vendor/class "nokind" in Spec'
