"""vmdev.typedjson: the state file's strict reader (what the state's cattrs hooks did, without cattrs)."""

from __future__ import annotations

import enum
import subprocess
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import attrs
import pytest

from vmdev.errors import ConfigError
from vmdev.typedjson import Invalid, TypedReader


class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


def _positive(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ConfigError("must be positive", field=attribute.name)


@attrs.frozen(kw_only=True)
class Leaf:
    name: str
    size: int = attrs.field(default=1, validator=_positive)
    ratio: float = 0.5
    colour: Colour = Colour.RED


@attrs.frozen(kw_only=True)
class Tree:
    class_: str
    leaves: tuple[Leaf, ...] = ()
    tags: list[str] = attrs.field(factory=list)
    notes: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    parent: Leaf | None = None
    derived: int = 0


def read(value: Any, kind: Any = Tree) -> Any:
    return TypedReader(skip={Tree: ("derived",)}).read(value, kind)


def test_a_document_reads_into_the_classes_it_names() -> None:
    tree = read({"class": "oak", "leaves": [{"name": "a", "size": 2, "ratio": 1, "colour": "blue"}],
                 "tags": ["x"], "notes": {"k": {"d": "v"}}, "extra": {"any": [1, {"thing": None}]},
                 "parent": None, "unknown": "ignored", "derived": 7})
    assert tree == Tree(class_="oak", leaves=(Leaf(name="a", size=2, ratio=1.0, colour=Colour.BLUE),), tags=["x"],
                        notes={"k": {"d": "v"}}, extra={"any": [1, {"thing": None}]})
    assert type(tree.leaves) is tuple and type(tree.tags) is list and type(tree.leaves[0].ratio) is float
    assert tree.derived == 0, "a skipped field keeps its default"
    assert read({"class": "elm", "parent": {"name": "p"}}).parent == Leaf(name="p")


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ({}, "$.class", "required field missing"),
        ({"class": 3}, "$.class", "invalid value, expected str"),
        ({"class": "oak", "leaves": [{"name": "a", "size": "2"}]}, "$.leaves[0].size", "invalid value, expected int"),
        ({"class": "oak", "leaves": [{"name": "a", "size": True}]}, "$.leaves[0].size", "invalid value, expected int"),
        ({"class": "oak", "leaves": [{"name": "a", "ratio": False}]}, "$.leaves[0].ratio",
         "invalid value, expected float"),
        ({"class": "oak", "leaves": [{"name": "a", "colour": "green"}]}, "$.leaves[0].colour",
         "invalid value, expected Colour"),
        ({"class": "oak", "leaves": [{"name": "a", "size": 0}]}, "$.leaves[0]", "size: must be positive"),
        ({"class": "oak", "leaves": [{}]}, "$.leaves[0].name", "required field missing"),
        ({"class": "oak", "leaves": [{"name": "a"}, {"name": "b"}, {"name": "c", "size": "2"}]},
         "$.leaves[2].size", "invalid value, expected int"),
        ({"class": "oak", "notes": {"a": {"x": "1"}, "b": {"y": "2", "z": 3}}}, "$.notes['b']['z']",
         "invalid value, expected str"),
        ({"class": "oak", "leaves": {"name": "a"}}, "$.leaves", "invalid value, expected a list"),
        ({"class": "oak", "tags": "xy"}, "$.tags", "invalid value, expected a list"),
        ({"class": "oak", "leaves": ["a"]}, "$.leaves[0]", "invalid value, expected Leaf"),
        ({"class": "oak", "notes": {"k": {"d": 1}}}, "$.notes['k']['d']", "invalid value, expected str"),
        ({"class": "oak", "notes": ["k"]}, "$.notes", "invalid value, expected Mapping"),
        ({"class": "oak", "parent": 5}, "$.parent", "invalid value, expected Leaf"),
        ("oak", "$", "invalid value, expected Tree"),
    ],
)
def test_the_first_problem_is_named_by_its_json_path(document: Any, path: str, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        read(document)
    assert (exc.value.path, exc.value.message) == (path, message)


def test_paths_continue_from_the_one_given() -> None:
    with pytest.raises(Invalid) as exc:
        TypedReader().read([{"name": 1}], list[Leaf], "line 3.put")
    assert exc.value.path == "line 3.put[0].name"
    with pytest.raises(Invalid) as exc:
        TypedReader().read([{"name": "a"}, {"name": "b", "size": -1}], list[Leaf], "line 3.put")
    assert (exc.value.path, exc.value.message) == ("line 3.put[1]", "size: must be positive")
    assert isinstance(exc.value.error, ConfigError), "what the class's own check raised goes along"


def test_a_type_it_cannot_read_is_a_programming_error_not_a_bad_document() -> None:
    with pytest.raises(TypeError, match="cannot read"):
        TypedReader().read(1, int | str)


#: a module-level name that a class attribute below shadows
Number = int


@attrs.frozen(kw_only=True)
class Base:
    inherited: Number = 0


@attrs.frozen(kw_only=True)
class Tricky(Base):
    Number: ClassVar[type] = str  # get_type_hints takes the module's Number (int) over this
    counted: Number = 0
    quoted: tuple["Leaf", ...] = ()  # noqa: UP037 - a quoted name inside, on purpose
    noted: Annotated[int, "a note"] = 0
    nothing: None = None


def test_each_field_reads_as_the_type_get_type_hints_gives_it() -> None:
    """Annotations are evaluated one field at a time (issue 13); whatever that cannot make is left to
    ``typing.get_type_hints``, the judge here."""
    hints = typing.get_type_hints(Tricky)
    assert (hints["counted"], hints["inherited"], hints["noted"], hints["nothing"]) == (int, int, int, type(None))
    reader = TypedReader()
    document = {"counted": 3, "inherited": 4, "quoted": [{"name": "a"}], "noted": 5, "nothing": None}
    assert reader.read(document, Tricky) == Tricky(counted=3, inherited=4, quoted=(Leaf(name="a"),), noted=5)
    for key in ("counted", "inherited", "noted"):
        with pytest.raises(Invalid, match=rf"\$\.{key}: invalid value, expected int"):
            reader.read({**document, key: "3"}, Tricky)
    with pytest.raises(Invalid, match=r"\$\.quoted\[0\]: invalid value, expected Leaf"):
        reader.read({**document, "quoted": [1]}, Tricky)
    with pytest.raises(Invalid, match=r"\$\.nothing: invalid value, expected None"):
        reader.read({**document, "nothing": 0}, Tricky)


def test_loading_a_state_imports_no_cattrs(tmp_path: Any) -> None:
    """The reason this reader exists (issue 13): every vmdev attach and detach loads the state."""
    code = ("import sys\nfrom vmdev.settings import SandboxSettings\n"
            "from vmdev.state import SandboxState, StateFile\n"
            f"f = StateFile({str(tmp_path / 's.json')!r})\nf.save(SandboxState(settings=SandboxSettings()))\n"
            "assert f.load() == SandboxState(settings=SandboxSettings())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cattrs', 'cattr')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@attrs.frozen(kw_only=True)
class Odd:
    where: Path = Path("/")
    names: frozenset[str] = frozenset()
    tags: set[str] = attrs.field(factory=set)
    mode: Literal["on", "off", 1] = "off"
    pair: tuple[int, str] = (0, "")
    order: Sequence[str] = ()


def test_every_type_to_json_writes_reads_back() -> None:
    from vmdev.serialize import from_json

    odd = Odd(where=Path("/run/x"), names=frozenset({"a", "b"}), tags={"t"}, mode=1, pair=(3, "z"),
              order=["p", "q"])
    data = {"where": "/run/x", "names": ["a", "b"], "tags": ["t"], "mode": 1, "pair": [3, "z"], "order": ["p", "q"]}
    assert from_json(Odd, data) == odd
    assert type(from_json(Odd, data).order) is list


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"where": 1}, "$.where", "invalid value, expected a path (a string)"),
        ({"mode": True}, "$.mode", "invalid value, expected one of 'on', 'off', 1"),
        ({"mode": "1"}, "$.mode", "invalid value, expected one of 'on', 'off', 1"),
        ({"pair": [3]}, "$.pair", "invalid value, expected a list of 2"),
        ({"pair": [3, 4]}, "$.pair[1]", "invalid value, expected str"),
        ({"names": "ab"}, "$.names", "invalid value, expected a list"),
    ],
)
def test_the_other_types_name_their_path_too(change: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        TypedReader().read(change, Odd)
    assert (exc.value.path, exc.value.message) == (path, message)


def test_a_number_too_large_for_a_float_is_a_bad_value_not_a_crash() -> None:
    with pytest.raises(Invalid) as exc:
        read({"class": "oak", "leaves": [{"name": "a", "ratio": 10**400}]})
    assert (exc.value.path, exc.value.message) == ("$.leaves[0].ratio", "invalid value, a number too large for a float")
