"""The JSON schema: schema_test.go's good and bad documents, the YAML path's annotation-key rules,
and the schema as the validator of a registry (the ``cdi`` tool's setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmdev_cdi import CDIError, Registry, SpecError, read_spec
from vmdev_cdi.schema import BUILTIN, qualified_name_errors

DATA = Path(__file__).parent / "data"
EXAMPLE = "e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'"
NAME_REGEX = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
              f"alphanumeric character ({EXAMPLE})")


@pytest.mark.parametrize("name", ["schema-good-minimal.json", "schema-good-spec-example.json", "nvidia-gpu.yaml",
                                  "go-writer-vfio.json", "gpu.example.com_metadata_2f6b1a3c-9d8e-4f5a-b7c6-0d1e2f3a4b5c_gpu.json"])
def test_good_documents_validate_as_file_data_and_spec(name: str) -> None:
    path = DATA / name
    BUILTIN.validate_file(str(path))
    BUILTIN.validate_data(path.read_bytes())
    assert read_spec(str(path), 0, BUILTIN).devices


def test_an_explicitly_empty_document_fails_naming_the_required_fields() -> None:
    with pytest.raises(CDIError) as caught:
        BUILTIN.validate_file(str(DATA / "schema-bad-explicit-empty.json"))
    assert caught.value.message == (
        "jsonschema validation failed with 'file:///schema.json#'\n"
        "- at '': 'cdiVersion' is a required property\n"
        "- at '': 'devices' is a required property\n"
        "- at '': 'kind' is a required property")


@pytest.mark.parametrize(
    ("text", "pointer"),
    [
        ('{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"d"}]}', "/devices/0"),
        ('{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"d","containerEdits":{"deviceNodes":[{"uid":-1,"path":"/x"}]}}]}',
         "/devices/0/containerEdits/deviceNodes/0/uid"),
        ('{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"d","containerEdits":{"hooks":[{"hookName":"x"}]}}]}',
         "/devices/0/containerEdits/hooks/0"),
        ('{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"d","containerEdits":{"mounts":[{"hostPath":"/a"}]}}]}',
         "/devices/0/containerEdits/mounts/0"),
        ('{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"d","containerEdits":{"additionalGids":[4294967296]}}]}',
         "/devices/0/containerEdits/additionalGids/0"),
        ('{"cdiVersion":"0.3.0","kind":"a/b","annotations":{"k":1},"devices":[]}', "/annotations/k"),
        ("cdiVersion: 0.3.0\nkind: a/b\ndevices: [{name: 0, containerEdits: {}}]\n", "/devices/0/name"),
    ],
)
def test_schema_violations_name_where(text: str, pointer: str) -> None:
    with pytest.raises(CDIError) as caught:
        BUILTIN.validate_data(text.encode())
    assert f"- at '{pointer}': " in caught.value.message


def test_yaml_documents_have_their_annotation_keys_checked_and_json_documents_do_not() -> None:
    yaml_text = b'cdiVersion: "0.6.0"\nkind: a.com/b\nannotations: {"inva$$lid_CDIKEY": x}\ndevices: []\n'
    with pytest.raises(CDIError) as caught:
        BUILTIN.validate_data(yaml_text)
    assert caught.value.message == f"annotations.inva$$lid_CDIKEY is invalid: {NAME_REGEX}"
    BUILTIN.validate_data(b'{"cdiVersion": "0.6.0", "kind": "a.com/b", "annotations": {"inva$$lid_CDIKEY": "x"}, "devices": []}')


def test_device_annotation_errors_name_the_device() -> None:
    with pytest.raises(CDIError) as caught:
        BUILTIN.validate_data(b"cdiVersion: 0.6.0\nkind: a.com/b\ndevices: [{name: gpu0, annotations: {'a/b/c': x}, containerEdits: {}}]\n")
    assert caught.value.message.startswith("gpu0.annotations.a/b/c is invalid: a qualified name must consist of")
    assert caught.value.message.endswith(" with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        ("bdf", []),
        ("example.com/Name", []),
        ("example.com/x", []),
        ("/x", ["prefix part must be non-empty"]),
        ("Ex_ample.com/x", ["prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                            "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                            "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]),
        ("a" * 254 + "/x", ["prefix part must be no more than 253 characters"]),
        ("p/", ["name part must be non-empty", NAME_REGEX]),
        ("n" * 64, ["name part must be no more than 63 characters"]),
        ("-x", [NAME_REGEX]),
    ],
)
def test_kubernetes_qualified_name_rules(key: str, errors: list[str]) -> None:
    assert qualified_name_errors(key) == errors


def test_annotations_over_256_kib_are_too_long() -> None:
    big = "v" * (256 * 1024)
    with pytest.raises(CDIError) as caught:
        BUILTIN.validate_data(f"cdiVersion: 0.6.0\nkind: a.com/b\nannotations: {{k: {big}}}\ndevices: []\n".encode())
    assert caught.value.message == "annotations is too long: annotations size 262145 is larger than limit 262144"


def test_a_yaml_file_named_json_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text((DATA / "nvidia-gpu.yaml").read_text())
    with pytest.raises(CDIError, match=r"^failed to load JSON data for validation: "):
        BUILTIN.validate_file(str(path))
    read_spec(str(path), 0)  # the spec reader itself takes YAML whatever the name


def test_as_a_registry_validator_it_runs_first_on_the_re_encoded_document(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text('cdiVersion: "0.3.0"\nkind: a.com/b\ncontainerEdits: {hooks: [{hookName: prestart, path: /h, timeout: -1}]}\n'
                                     "devices: [{name: d, containerEdits: {env: [A=1]}}]\n")
    (tmp_path / "b.yaml").write_text('cdiVersion: "0.3.0"\nkind: a.com/c\n')
    assert Registry([str(tmp_path)]).list_devices() == ["a.com/b=d"]  # no schema by default, as pkg/cdi
    registry = Registry([str(tmp_path)], validator=BUILTIN)
    assert registry.list_devices() == []
    errors = registry.errors
    assert errors[str(tmp_path / "a.yaml")] == [
        "failed to load CDI Spec Spec validation failed: jsonschema validation failed with 'file:///schema.json#'\n"
        "- at '/containerEdits/hooks/0/timeout': -1 is less than the minimum of 0"]
    assert errors[str(tmp_path / "b.yaml")] == [
        "failed to load CDI Spec Spec validation failed: jsonschema validation failed with 'file:///schema.json#'\n"
        "- at '/devices': None is not of type 'array'"]


def test_the_vendored_schema_is_the_reference_s_with_its_licence() -> None:
    import importlib.resources

    data = importlib.resources.files("vmdev_cdi").joinpath("data")
    assert "Apache License" in data.joinpath("LICENSE").read_text()
    assert "05ae4b5bb730a036cb3f79477bd6676eea4a8c83" in data.joinpath("ORIGIN.md").read_text()
    with pytest.raises(SpecError):
        read_spec(str(DATA / "schema-bad-explicit-empty.json"), 0, BUILTIN)
