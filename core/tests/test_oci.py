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
