"""OCI spec validation: strict, with the JSON path of the first problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vmdev.errors import ConfigError
from vmdev.oci import load_spec, parse_spec


def spec(*devices: Any, **linux: Any) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "linux": {"devices": list(devices), **linux}}


def test_devices_and_mounts_are_read() -> None:
    parsed = parse_spec(
        {
            **spec({"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}),
            "mounts": [{"destination": "/data", "source": "/srv", "type": "bind", "options": ["rbind", "ro"]}],
        }
    )
    (dev,) = parsed.devices
    assert (dev.container_path, dev.dev_type, dev.major, dev.minor, dev.file_mode) == ("/dev/null", "c", 1, 3, 438)
    assert dev.host_path == "" and dev.read_only is False
    (mount,) = parsed.mounts
    assert mount.destination == "/data" and mount.read_only


def test_fifo_needs_no_numbers() -> None:
    (dev,) = parse_spec(spec({"path": "/dev/fifo", "type": "p"})).devices
    assert (dev.major, dev.minor) == (0, 0)


@pytest.mark.parametrize(
    ("document", "field", "device", "text"),
    [
        ([], "$", "", "must be an object"),
        ({"linux": []}, "$.linux", "", "must be an object"),
        ({"linux": {"devices": {}}}, "$.linux.devices", "", "must be an array"),
        (spec("x"), "$.linux.devices[0]", "", "must be an object"),
        (spec({"type": "c"}), "$.linux.devices[0].path", "", "is required"),
        (spec({"path": "", "type": "c", "major": 1, "minor": 3}), "$.linux.devices[0].path", "", "must not be empty"),
        (spec({"path": "dev/null", "type": "c", "major": 1, "minor": 3}), "$.linux.devices[0].path", "dev/null", "absolute"),
        (spec({"path": "/dev/a", "type": "x", "major": 1, "minor": 3}), "$.linux.devices[0].type", "/dev/a", "'x' is not one of"),
        (spec({"path": "/dev/a", "type": "c", "minor": 3}), "$.linux.devices[0].major", "/dev/a", "is required"),
        (spec({"path": "/dev/a", "type": "c", "major": "1", "minor": 3}), "$.linux.devices[0].major", "/dev/a", "must be an integer"),
        (spec({"path": "/dev/a", "type": "c", "major": True, "minor": 3}), "$.linux.devices[0].major", "/dev/a", "must be an integer"),
        (spec({"path": "/dev/a", "type": "c", "major": -1, "minor": 3}), "$.linux.devices[0].major", "/dev/a", "between 0"),
        (spec({"path": "/dev/a", "type": "c", "major": 1, "minor": 3}, {"path": "/dev/b", "type": "b", "major": 1, "minor": 2**40}),
         "$.linux.devices[1].minor", "/dev/b", "between 0"),
        (spec({"path": "/dev/a", "type": "c", "major": 1, "minor": 3, "fileMode": 70000}), "$.linux.devices[0].fileMode", "/dev/a", "between"),
        ({"mounts": [{"source": "/x"}]}, "$.mounts[0].destination", "", "is required"),
        ({"mounts": [{"destination": "/d", "options": [1]}]}, "$.mounts[0].options[0]", "/d", "must be a string"),
    ],
)
def test_invalid_documents_name_the_json_path(document: Any, field: str, device: str, text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_spec(document)
    assert exc.value.field == field
    assert exc.value.device == device
    assert text in exc.value.message


def test_read_only_from_the_first_matching_allow_rule() -> None:
    rules = [
        {"allow": False, "major": 7, "minor": 0, "access": "rwm"},
        {"allow": True, "major": 7, "minor": 0, "type": "b", "access": "r"},
        {"allow": True, "major": 7, "minor": 0, "access": "rwm"},
        {"allow": True, "type": "c", "access": "rwm"},
    ]
    devices = parse_spec(
        spec(
            {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0},
            {"path": "/dev/loop1", "type": "b", "major": 7, "minor": 1},
            resources={"devices": rules},
        )
    ).devices
    assert [d.read_only for d in devices] == [True, False]


def test_load_spec_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON") as exc:
        load_spec(bad)
    assert exc.value.device == str(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(spec({"path": "/dev/null", "type": "c", "major": 1, "minor": 3})))
    assert load_spec(good).devices[0].container_path == "/dev/null"


# --- real engines' specs and hostile input (issues 10 and 11) -------------------------------------
def test_podman_file_mode_with_type_bits_keeps_the_permission_bits() -> None:
    # podman writes the whole st_mode: 8630 = S_IFCHR | 0o666 for /dev/fuse
    (dev,) = parse_spec(spec({"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 8630})).devices
    assert dev.file_mode == 0o666
    (blk,) = parse_spec(spec({"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0, "fileMode": 0o60660})).devices
    assert blk.file_mode == 0o660


@pytest.mark.parametrize(("mode", "dev_type", "says"), [
    (0o20666, "b", "a character device"), (0o60660, "c", "a block device"), (0o100644, "c", "a regular file"),
    (0o10644, "b", "a FIFO"),
])
def test_file_mode_type_bits_that_contradict_type_are_an_error(mode: int, dev_type: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_spec(spec({"path": "/dev/x", "type": dev_type, "major": 1, "minor": 1, "fileMode": mode}))
    assert exc.value.field == "$.linux.devices[0].fileMode"
    assert exc.value.message == f"0o{mode:o} says {says}, but type is {dev_type!r}"


@pytest.mark.parametrize(("document", "field"), [
    (spec({"path": "/dev/\ud800", "type": "c", "major": 1, "minor": 3}), "$.linux.devices[0].path"),
    (spec({"path": "/dev/a\nb", "type": "c", "major": 1, "minor": 3}), "$.linux.devices[0].path"),
    (spec({"path": "/dev/a\x00b", "type": "c", "major": 1, "minor": 3}), "$.linux.devices[0].path"),
    ({"mounts": [{"destination": "/d\ud800"}]}, "$.mounts[0].destination"),
    ({"mounts": [{"destination": "/d", "source": "/s\x1b[2J"}]}, "$.mounts[0].source"),
    ({"mounts": [{"destination": "/d", "options": ["ro\udcff"]}]}, "$.mounts[0].options[0]"),
    ({"annotations": {"cdi.k8s.io/x": "\ud800"}}, '$.annotations["cdi.k8s.io/x"]'),
])
def test_strings_that_cannot_be_written_or_paths_with_controls_are_refused(document: Any, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_spec(document)
    assert exc.value.field == field
    assert "\n" not in str(exc.value) and str(exc.value).encode("utf-8")


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"linux": {"devices": [{"path": "/dev/a", "type": "c", "major": ' + "9" * 4301 + ', "minor": 1}]}}',
     "an integer of 4301 digits"),
    ('{"x": NaN}', "NaN is not JSON"),
    (b"\xff\xfe{}", "can't decode byte 0xff"),
])
def test_hostile_json_is_one_clear_error(tmp_path: Path, text: str | bytes, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match="not valid JSON") as exc:
        load_spec(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_annotations_are_kept_for_input_sources() -> None:
    parsed = parse_spec({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}})
    assert parsed.annotations == {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}
    assert parsed.document == {"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}}
