"""Fixtures for vmdev-block's unit tests: fake hosts with block devices, loop devices and mounts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from vmdev.oci import OciSpec, parse_spec
from vmdev.planner import Plan, plan
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_block import testing

MIB = 1024 * 1024


class Host:
    """A fake host with helpers for the block plugin's kinds of devices."""

    def __init__(self, fake: FakeHost, tmp: Path) -> None:
        self.fake = fake
        self.tmp = tmp

    def disk(self, major: int, minor: int, name: str, size: int = 64 * MIB) -> str:
        """A block device node /dev/<name> (S_ISBLK through the stat seam) of ``size`` bytes."""
        return testing.block_node(self.fake, major, minor, name, size=size)

    def image(self, name: str, size: int = 16 * MIB, pfn: bool = False) -> Path:
        return testing.image_file(self.tmp / name, size, pfn=pfn)

    def loop(self, minor: int, backing: Path) -> str:
        """/dev/loop<minor> backed by ``backing`` (a block node through the stat seam)."""
        testing.loop_device(self.fake, testing.LOOP_MAJOR, minor, backing)
        self.fake.fake_stat(str(self.fake.dev / f"loop{minor}"), mode=testing.BLOCK_NODE_MODE,
                            rdev=(testing.LOOP_MAJOR, minor))
        return f"/dev/loop{minor}"

    def pmem_mount(self, minor: int, *, pfn: bool = True, fstype: str | None = "ext2") -> tuple[Path, Path]:
        """A directory whose file system lives on /dev/loop<minor>; returns (source, backing file)."""
        backing = self.image(f"pmem{minor}.img", pfn=pfn)
        source = testing.loop_mount(self.fake, minor, backing, self.tmp / f"mnt{minor}", fstype=fstype)
        return source, backing

    @staticmethod
    def device(path: str, major: int, minor: int, **extra: Any) -> dict[str, Any]:
        """An OCI ``linux.devices`` entry of type b."""
        return {"path": path, "type": "b", "major": major, "minor": minor, **extra}

    @staticmethod
    def spec(
        devices: Sequence[dict[str, Any]] = (),
        mounts: Sequence[dict[str, Any]] = (),
        rules: Sequence[dict[str, Any]] = (),
    ) -> OciSpec:
        """A parsed OCI spec with these devices, mounts and ``linux.resources.devices`` rules."""
        return parse_spec(
            {"linux": {"devices": list(devices), "resources": {"devices": list(rules)}}, "mounts": list(mounts)}
        )


@pytest.fixture
def host(fake_host: FakeHost, tmp_path: Path) -> Host:
    return Host(fake_host, tmp_path)


Planner = Callable[..., Plan]
Prepared = Callable[..., SandboxSettings]


@pytest.fixture
def prepared(vmdev_plugins: Any) -> Prepared:
    """``prepared(**settings)``: SandboxSettings whose declared keys the core parsed (with only the
    core and vmdev-block loaded), as every hook receives them."""
    pm = vmdev_plugins("vmdev-block")

    def prepared(**settings: Any) -> SandboxSettings:
        ready: SandboxSettings = pm.prepare_settings(SandboxSettings(**settings))
        return ready

    return prepared


@pytest.fixture
def run(fake_host: FakeHost, vmdev_plugins: Any) -> Planner:
    """``run(spec, **settings)``: plan with only the core and vmdev-block loaded."""
    pm = vmdev_plugins("vmdev-block")

    def run(oci: Any, **settings: Any) -> Plan:
        return plan(oci, SandboxSettings(**settings), host=fake_host.context(), plugins=pm)

    return run


DATA = Path(__file__).parent / "data"
#: the integer bounds an OpenAPI ``format`` names
_FORMATS = {"int64": (-(2**63), 2**63 - 1), "int16": (-(2**15), 2**15 - 1), "uint8": (0, 255)}
#: the vendored API schemas (data/ORIGIN.md): file and where its named schemas live
_API_FILES = {"cloud-hypervisor": ("cloud-hypervisor-disks.json", ("components", "schemas")),
              "firecracker": ("firecracker-drives.json", ("definitions",))}


def _strict(node: Any) -> Any:
    """An OpenAPI/Swagger schema as a JSON schema: refs to ``#/definitions/``, integer formats as
    bounds, no property the schema does not name."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if "$ref" in out:
        return {"$ref": "#/definitions/" + out["$ref"].rsplit("/", 1)[-1]}
    low, high = _FORMATS.get(out.get("format", ""), (None, None))
    if out.get("type") == "integer" and low is not None:
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
    return out


def api_validator(api: str, schema: str) -> Callable[[Any], None]:
    """``check(body)``: raises ``jsonschema.ValidationError`` unless ``body`` is a valid ``schema``
    (``DiskConfig``, ``Drive`` ...) of the vendored ``api`` (``cloud-hypervisor``, ``firecracker``)."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the test environment installs it
        pytest.fail("the block plugin's API tests need jsonschema: pip install 'vmdev-block[test]'", pytrace=False)
    name, where = _API_FILES[api]
    document: Any = json.loads((DATA / name).read_text())
    for key in where:
        document = document[key]
    definitions = _strict(copy.deepcopy(document))
    validator = jsonschema.Draft7Validator({**definitions[schema], "definitions": definitions})

    def check(body: Any) -> None:
        validator.validate(body)

    return check


APIValidator = Callable[[str, str], Callable[[Any], None]]


@pytest.fixture
def api() -> APIValidator:
    """``api("cloud-hypervisor", "DiskConfig")(body)``: validate a body against the vendored schema."""
    return api_validator
