"""to_json walks models without cattrs (a plan's start-up does not pay for it) and gives what
cattrs' unstructuring gave; from_json reads it back with vmdev.typedjson, strictly."""

from __future__ import annotations

import enum
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import cattrs
import pytest
from cattrs.gen import make_dict_unstructure_fn, override

from vmdev.errors import VmdevError
from vmdev.models import DeviceInfo, GenericDevice, PCIePort, PciPath
from vmdev.qemu import MemoryNeeds, QemuAttach, QmpCommand
from vmdev.serialize import from_json, to_json
from vmdev.typedjson import Invalid


def cattrs_to_json(value: Any) -> Any:
    """The unstructuring vmdev used before: cattrs with its hooks, then plain values."""
    converter = cattrs.Converter()
    converter.register_unstructure_hook(PciPath, str)
    converter.register_unstructure_hook(enum.Enum, lambda member: member.value)

    def attrs_hook(cls: type[Any]) -> Any:
        renames = {f.name: override(rename=f.name.rstrip("_")) for f in attrs.fields(cls) if f.name.endswith("_")}
        return make_dict_unstructure_fn(cls, converter, **renames)  # type: ignore[arg-type]

    converter.register_unstructure_hook_factory(attrs.has, attrs_hook)
    return _plain(converter.unstructure(value))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 2


@attrs.frozen(kw_only=True)
class Inner:
    class_: str = "0x0200"
    path: PciPath = attrs.field(factory=lambda: PciPath(slots=(2, 0, 1)))
    colour: Colour = Colour.RED


@attrs.frozen(kw_only=True)
class Outer:
    inners: tuple[Inner, ...] = ()
    by_name: Mapping[str, Inner] = attrs.field(factory=dict)
    keyed: Mapping[Any, int] = attrs.field(factory=dict)
    port: PCIePort = PCIePort.ROOT_PORT
    level: Level = Level.HIGH
    extra: Any = None
    hidden: int = attrs.field(init=False, default=7)
    type_: str = "x"


SAMPLES: list[Any] = [
    None, 3, 2.5, "text", True, [1, (2, 3)], {"a": (1, 2)},
    Inner(),
    Outer(inners=(Inner(), Inner(class_="0x0300", colour=Colour.RED)), by_name={"n": Inner()},
          keyed={Colour.RED: 1, PCIePort.BRIDGE_PORT: 2, 3: 3, Level.HIGH: 4, PciPath(slots=(3,)): 5,
                 Path("/k"): 6},
          extra={"deep": [Inner(), PCIePort.NO_PORT], "set": {Colour.RED}}),
    Outer(extra=MappingProxyType({"view": (Level.HIGH, PciPath())})),
    DeviceInfo(container_path="/dev/x", dev_type="c", major=1, minor=3, driver_options={"k": "v"}),
    GenericDevice(id="generic-1", container_path="/dev/x", host_path="/dev/x", dev_type="c", major=1, minor=3),
    QemuAttach(args=("-device", "x"), hotplug=[QmpCommand("device_add", {"id": "x"})],
               shared_args={"scsi": ("-device", "virtio-scsi-pci")}, machine={"nvdimm": True},
               memory=MemoryNeeds(slots=1), details={"bus": "rp0", "path": PciPath(slots=(1,))}),
    {"paths": [Path("/x")], "nested": {"port": PCIePort.SWITCH_PORT}},
]


def test_to_json_gives_what_cattrs_gave_for_every_kind_of_value() -> None:
    for value in SAMPLES:
        assert to_json(value) == cattrs_to_json(value), value


def test_json_names_drop_a_trailing_underscore_and_init_false_fields_are_left_out() -> None:
    data = to_json(Outer())
    assert ("type" in data, "type_" in data, "hidden" in data) == (True, False, False)
    assert to_json(Inner()) == {"class": "0x0200", "path": "02/00/01", "colour": "red"}


def test_a_device_comes_back_from_its_json() -> None:
    device = GenericDevice(id="generic-1", container_path="/dev/x", host_path="/dev/x", dev_type="c",
                           major=1, minor=3, file_mode=0o666)
    assert from_json(GenericDevice, to_json(device)) == device


def test_models_come_back_from_their_json_with_pci_paths_enums_and_json_names() -> None:
    for value in (Inner(), Inner(path=PciPath(), colour=Colour.RED),
                  DeviceInfo(container_path="/dev/x", dev_type="b", major=8, minor=0, port=PCIePort.SWITCH_PORT,
                             driver_options={"k": "v"}, file_mode=0o600)):
        assert from_json(type(value), to_json(value)) == value


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        ({"path": "zz"}, Invalid, "$.path: invalid PCI path 'zz'"),
        ({"path": 2}, Invalid, "$.path: invalid value, expected PciPath"),
        ({"colour": "green"}, Invalid, "$.colour: invalid value, expected Colour"),
        ({"class": 200}, Invalid, "$.class: invalid value, expected str"),
    ],
)
def test_json_that_does_not_fit_is_named_by_its_path(change: dict[str, Any], error: type, text: str) -> None:
    with pytest.raises(error) as exc:
        from_json(Inner, {**to_json(Inner()), **change})
    assert str(exc.value) == text


def test_what_a_model_s_own_checks_raise_comes_out_as_raised() -> None:
    saved = {**to_json(DeviceInfo(container_path="/dev/x", dev_type="c", major=1, minor=3)), "dev_type": "x"}
    with pytest.raises(VmdevError) as exc:
        from_json(DeviceInfo, saved)
    assert exc.value.field == "dev_type" and "'x' is not one of" in exc.value.message


def test_to_json_and_from_json_load_no_cattrs() -> None:
    code = ("import sys\nfrom vmdev.serialize import from_json, to_json\nfrom vmdev.models import PciPath\n"
            "assert to_json({'p': PciPath(slots=(1,))}) == {'p': '01'}\n"
            "assert from_json(PciPath, '01') == PciPath(slots=(1,))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cattrs'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
