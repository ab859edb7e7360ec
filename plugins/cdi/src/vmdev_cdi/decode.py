"""Reading spec bytes as the Go library does: ``sigs.k8s.io/yaml.UnmarshalStrict`` into ``specs.Spec``.

JSON and YAML files go through the same three steps, as in the reference:

1. YAML 1.1 as ``gopkg.in/yaml.v2`` reads it (only the first document; ``y``/``n``/``on``/``off``
   are booleans, ``0666`` is octal, timestamps stay strings; a repeated key is an error);
2. conversion to JSON: where the Go field is a string, a number or boolean becomes its text
   (``name: 0`` is ``"0"``, ``cdiVersion: 1.0`` is ``"1"``); map keys become strings;
3. Go's ``encoding/json`` with unknown fields refused: keys match fields exactly or ignoring case,
   objects are visited in sorted key order (Go re-encodes maps sorted) and the first error met
   is the one reported (``json: unknown field "xyzzy"``).

Hostile documents are refused as yaml.v2 refuses them, with its texts: aliases are counted as
yaml.v2's decoder counts node visits and a document whose visits are mostly alias expansions
(a "billion laughs") is ``document contains excessive aliasing``; an alias inside its own anchor
is ``anchor 'a' value contains itself``; an explicit tag its value does not fit (``!!bool maybe``)
is ``cannot decode !!str `maybe` as a !!bool``; control characters and bad UTF-8 get yaml.v2's
reader texts. Where vmdev differs: nesting deeper than :data:`MAX_DEPTH` levels is refused
(yaml.v2 allows 10000; PyYAML composes recursively, and no valid spec nests beyond 8 levels).

Where the texts come from a parser (YAML syntax errors) they follow PyYAML's wording in Go's
``yaml: line N: ...`` frame; type errors follow Go's ``json: cannot unmarshal ...`` form, which
the reference says to compare by prefix only.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs
import yaml

from vmdev_cdi.gotext import format_float32, go_json_number, goquote
from vmdev_cdi.model import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    LinuxNetDevice,
    Mount,
    SpecDocument,
)


class DecodeError(Exception):
    """One of the three steps failed; ``str()`` is the Go text of that step."""


# --- step 1: YAML as yaml.v2 reads it ---------------------------------------------------------
_NUMBER_TAG: Final = "tag:vmdev-cdi,2024:number"
BOOLS: Final = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
}
SPECIAL_FLOATS: Final = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_GO_INT: Final = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_YAML_FLOAT: Final = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


#: how deep vmdev composes a YAML document (see the module docstring)
MAX_DEPTH: Final = 100


class GoYAMLError(Exception):
    """A yaml.v2 failure without a line (its ``failf``): ``str()`` is the text after ``yaml: ``."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with yaml.v2's implicit types and duplicate-key errors; it records
    which children are aliases (PyYAML hands back the anchored node itself) for
    :func:`check_aliasing`, and refuses to nest deeper than :data:`MAX_DEPTH`."""

    duplicates: list[str]
    #: id(container node) -> per child, in order (keys and values alternating for a mapping), the
    #: anchor name if the child was an alias, else None
    alias_children: dict[int, list[str | None]]
    #: whether any alias was met (without one, no aliasing can be excessive: nothing to walk)
    aliased: bool
    depth: int

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        alias = event.anchor if isinstance(event, yaml.AliasEvent) else None
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"exceeded max depth of {MAX_DEPTH}",
                                              event.start_mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if parent is not None:
            self.alias_children.setdefault(id(parent), []).append(alias)
        self.aliased = self.aliased or alias is not None
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                continue
            if repeated:
                shown = goquote(key) if isinstance(key, str) else str(key)
                self.duplicates.append(f"line {key_node.start_mark.line + 1}: key {shown} already set in map")
        return super().construct_mapping(node, deep=deep)


def _go_int(text: str) -> int | None:
    if not _GO_INT.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    octal = 8 if body.startswith("0") and len(body) > 1 else 10
    base = {"x": 16, "o": 8, "b": 2}.get(body[1:2].lower(), octal)
    digits = body[2:] if base in (16, 2) or body[1:2] in ("o", "O") else body
    if len(digits.lstrip("0")) > 64:  # beyond 64 bits in any base; and int() refuses 4300 digits
        return None
    value = sign * int(digits or "0", base)
    if -(2**63) <= value < 2**64:
        return value
    return None


def _construct_number(loader: _Loader, node: yaml.ScalarNode) -> Any:
    return yaml_number(node.value)


def yaml_number(text: str) -> Any:
    """A plain scalar that starts like a number, as yaml.v2 resolves it (int, float or the text)."""
    if text in SPECIAL_FLOATS:
        return SPECIAL_FLOATS[text]
    plain = text.replace("_", "")
    value = _go_int(plain)
    if value is not None:
        return value
    if _YAML_FLOAT.fullmatch(plain):
        number = float(plain)
        return number if math.isfinite(number) else text  # Go's ParseFloat: out of range, a string
    return text


_NULLS: Final = ("~", "null", "Null", "NULL", "")


def resolved_tag(text: str) -> str:
    """The tag yaml.v2 resolves a plain scalar to, for its ``cannot decode`` text."""
    if text in BOOLS:
        return "!!bool"
    if text in _NULLS:
        return "!!null"
    value = yaml_number(text) if text[:1] in "-+.0123456789" else text
    return "!!str" if isinstance(value, str) else ("!!int" if isinstance(value, int) else "!!float")


def _cannot_decode(node: yaml.ScalarNode, tag: str) -> GoYAMLError:
    return GoYAMLError(f"cannot decode {resolved_tag(node.value)} `{node.value}` as a {tag}")


def _construct_bool(loader: _Loader, node: yaml.ScalarNode) -> bool:
    if node.value not in BOOLS:  # only an explicit !!bool gets here with another value
        raise _cannot_decode(node, "!!bool")
    return BOOLS[node.value]


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    value = yaml_number(node.value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _cannot_decode(node, "!!int")
    return value


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> float:
    value = yaml_number(node.value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _cannot_decode(node, "!!float")
    return float(value)


def _construct_null(loader: _Loader, node: yaml.ScalarNode) -> None:
    if node.value not in _NULLS:
        raise _cannot_decode(node, "!!null")


def _construct_timestamp_as_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    return str(node.value)


def _install_resolvers() -> None:
    _Loader.yaml_implicit_resolvers = {}  # its own table: none of PyYAML's YAML 1.1 defaults
    add = _Loader.add_implicit_resolver
    add("tag:yaml.org,2002:bool", re.compile("^(?:" + "|".join(BOOLS) + ")$"), list("yYnNtTfFoO"))
    add("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
    add("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
    add(_NUMBER_TAG, re.compile(r"^[-+.0-9][-+._0-9a-zA-Z]*$"), list("-+.0123456789"))
    _Loader.add_constructor(_NUMBER_TAG, _construct_number)
    _Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
    _Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
    _Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
    _Loader.add_constructor("tag:yaml.org,2002:null", _construct_null)
    _Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)


_install_resolvers()


def load_yaml(data: bytes | str, *, strict: bool = True) -> Any:
    """The first YAML document of ``data`` as plain Python values (None when there is none).

    ``strict`` (yaml.v2's ``UnmarshalStrict``) makes a repeated mapping key an error.
    """
    try:
        loader = _Loader(data)
    except yaml.YAMLError as exc:  # the reader checks the first characters at once
        raise _yaml_error(exc) from None
    loader.duplicates, loader.alias_children, loader.aliased, loader.depth = [], {}, False, 0
    try:
        node = loader.get_node() if loader.check_node() else None
        if node is not None and loader.aliased:
            check_aliasing(node, loader.alias_children)
        value = loader.construct_document(node) if node is not None else None
    except (yaml.YAMLError, GoYAMLError) as exc:
        raise _yaml_error(exc) from None
    finally:
        loader.dispose()
    if strict and loader.duplicates:
        raise DecodeError("error converting YAML to JSON: yaml: unmarshal errors:\n  "
                          + "\n  ".join(loader.duplicates))
    return value


#: PyYAML's reasons for bytes that are not UTF-8, as yaml.v2's reader words them (its other reason,
#: ``special characters are not allowed``, is yaml.v2's ``control characters are not allowed``)
_UTF8_ERRORS: Final = {
    "invalid start byte": "invalid leading UTF-8 octet",
    "invalid continuation byte": "invalid trailing UTF-8 octet",
    "unexpected end of data": "incomplete UTF-8 octet sequence",
}


def _yaml_error(exc: Exception) -> DecodeError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        text = f"{where}{exc.problem or exc.context}"
    elif isinstance(exc, yaml.reader.ReaderError):
        text = _UTF8_ERRORS.get(exc.reason, "control characters are not allowed")
    else:
        text = str(exc)
    return DecodeError(f"error converting YAML to JSON: yaml: {text}")


# yaml.v2's alias budget (decode.go, since v2.2.8 for CVE-2019-11254): every node the decoder
# visits counts, alias expansions again; past 1000 visits and 100 alias visits, the share of alias
# visits may be at most 99% up to 400,000 visits, falling to 10% at 4,000,000.
_ALIAS_LOW: Final = 400_000
_ALIAS_HIGH: Final = 4_000_000


def _allowed_alias_ratio(count: int) -> float:
    if count <= _ALIAS_LOW:
        return 0.99
    if count >= _ALIAS_HIGH:
        return 0.10
    return 0.99 - 0.89 * (count - _ALIAS_LOW) / (_ALIAS_HIGH - _ALIAS_LOW)


def check_aliasing(root: yaml.Node, alias_children: Mapping[int, list[str | None]]) -> None:
    """Visit the document as yaml.v2's decoder does (aliases expanded, in document order) and fail
    as it does on excessive aliasing or an alias inside its own anchor. Bounded: it stops at the
    first visit over budget, so a billion laughs costs a few thousand steps."""
    visits, alias_visits = 1, 0  # the document node
    # (node, is an alias to it (its anchor), alias depth, anchored nodes being expanded)
    stack: list[tuple[yaml.Node, str | None, int, tuple[int, ...]]] = [(root, None, 0, ())]
    while stack:
        node, alias, depth, expanding = stack.pop()
        visits += 1
        alias_visits += depth > 0
        if alias_visits > 100 and visits > 1000 and alias_visits / visits > _allowed_alias_ratio(visits):
            raise GoYAMLError("document contains excessive aliasing")
        if alias is not None:
            if id(node) in expanding:
                raise GoYAMLError(f"anchor '{alias}' value contains itself")
            stack.append((node, None, depth + 1, (*expanding, id(node))))
            continue
        stack.extend(reversed([(child, kind, depth, expanding)
                               for child, kind in _children(node, alias_children)]))


def _children(node: yaml.Node, alias_children: Mapping[int, list[str | None]]
              ) -> list[tuple[yaml.Node, str | None]]:
    """The children yaml.v2 visits, each with its anchor if it is an alias; a merge key (``<<``)
    is not visited and the maps of a merged sequence are visited without the sequence."""
    flags = alias_children.get(id(node), [])
    if isinstance(node, yaml.SequenceNode):
        return list(zip(node.value, flags, strict=True))
    if not isinstance(node, yaml.MappingNode):
        return []
    out: list[tuple[yaml.Node, str | None]] = []
    for index, (key, value) in enumerate(node.value):
        key_alias, value_alias = flags[2 * index:2 * index + 2] or (None, None)
        if key_alias is None and key.tag == "tag:yaml.org,2002:merge":
            if value_alias is None and isinstance(value, yaml.SequenceNode):
                merged = alias_children.get(id(value), [])
                out.extend(reversed(list(zip(value.value, merged, strict=True))))
            else:
                out.append((value, value_alias))
            continue
        out += [(key, key_alias), (value, value_alias)]
    return out


# --- the Go types ------------------------------------------------------------------------------
@attrs.frozen
class Kind:
    """A Go type as the JSON decoder sees it: ``scalar`` (``name`` is the Go type), ``list``,
    ``map`` (string keys), ``ptr`` or ``struct`` (``fields``: JSON name -> kind)."""

    base: str
    name: str
    elem: Kind | None = None
    fields: tuple[tuple[str, Kind], ...] = ()

    @property
    def target(self) -> Kind:
        """What a non-null value decodes into (pointers are followed)."""
        return self.elem.target if self.base == "ptr" and self.elem is not None else self

    def field(self, key: str) -> tuple[str, Kind] | None:
        for name, kind in self.fields:
            if name == key:
                return name, kind
        for name, kind in self.fields:
            if name.casefold() == key.casefold():
                return name, kind
        return None


def _scalar(name: str) -> Kind:
    return Kind("scalar", name)


def _list(elem: Kind) -> Kind:
    shown = "*" + elem.target.name if elem.base == "ptr" else elem.name
    return Kind("list", "[]" + shown, elem)


def _ptr(elem: Kind) -> Kind:
    return Kind("ptr", "*" + elem.name, elem)


def _struct(name: str, *fields: tuple[str, Kind]) -> Kind:
    return Kind("struct", "specs." + name, fields=fields)


STRING: Final = _scalar("string")
_STRINGS: Final = _list(STRING)
_INT64: Final = _scalar("int64")
_UINT32: Final = _scalar("uint32")
_INT: Final = _scalar("int")
_MODE: Final = _scalar("fs.FileMode")
_BOOL: Final = _scalar("bool")
_RANGES: Final = {
    "int64": (-(2**63), 2**63 - 1),
    "int": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "fs.FileMode": (0, 2**32 - 1),
}
_NET: Final = _struct("LinuxNetDevice", ("hostInterfaceName", STRING), ("name", STRING))
_RDT: Final = _struct(
    "IntelRdt", ("closID", STRING), ("l3CacheSchema", STRING), ("memBwSchema", STRING),
    ("schemata", _STRINGS), ("enableMonitoring", _BOOL),
)
_HOOK: Final = _struct(
    "Hook", ("hookName", STRING), ("path", STRING), ("args", _STRINGS), ("env", _STRINGS),
    ("timeout", _ptr(_INT)),
)
_MOUNT: Final = _struct(
    "Mount", ("hostPath", STRING), ("containerPath", STRING), ("options", _STRINGS), ("type", STRING)
)
_NODE: Final = _struct(
    "DeviceNode", ("path", STRING), ("hostPath", STRING), ("type", STRING), ("major", _INT64),
    ("minor", _INT64), ("fileMode", _ptr(_MODE)), ("permissions", STRING), ("uid", _ptr(_UINT32)),
    ("gid", _ptr(_UINT32)),
)
_EDITS: Final = _struct(
    "ContainerEdits", ("env", _STRINGS), ("deviceNodes", _list(_ptr(_NODE))),
    ("netDevices", _list(_ptr(_NET))), ("hooks", _list(_ptr(_HOOK))), ("mounts", _list(_ptr(_MOUNT))),
    ("intelRdt", _ptr(_RDT)), ("additionalGids", _list(_UINT32)),
)
_ANNOTATIONS: Final = Kind("map", "map[string]string", STRING)
_DEVICE: Final = _struct(
    "Device", ("name", STRING), ("annotations", _ANNOTATIONS), ("containerEdits", _EDITS)
)
SPEC: Final = _struct(
    "Spec", ("cdiVersion", STRING), ("kind", STRING), ("annotations", _ANNOTATIONS),
    ("devices", _list(_DEVICE)), ("containerEdits", _EDITS),
)


# --- step 2: YAML values to JSON values, with sigs.k8s.io/yaml's coercion ----------------------
def to_json_value(value: Any, kind: Kind | None) -> Any:
    """``convertToJSONableObject``: strings where the Go field is a string, string map keys."""
    target = kind.target if kind is not None else None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            text = _key_text(key)
            out[text] = to_json_value(item, _member(target, text))
        return out
    if isinstance(value, list):
        elem = target.elem if target is not None and target.base == "list" else None
        return [to_json_value(item, elem) for item in value]
    if target is STRING:
        return _as_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        raise DecodeError(f"error converting YAML to JSON: json: unsupported value: {shown}")
    if isinstance(value, (bytes, datetime.date)):
        return _as_text(value)
    return value


def _member(target: Kind | None, key: str) -> Kind | None:
    if target is None:
        return None
    if target.base == "struct":
        found = target.field(key)
        return found[1] if found else None
    if target.base == "map":
        return target.elem
    return None


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return format_float32(key)
    if key is None:
        return "null"
    raise DecodeError(f"error converting YAML to JSON: Unsupported map key of type: {type(key).__name__}")


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float32(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


# --- step 3: Go's encoding/json with DisallowUnknownFields ------------------------------------
@attrs.define
class _Decoder:
    error: str = ""

    def save(self, message: str) -> None:
        if not self.error:
            self.error = message

    def type_error(self, value: Any, kind: Kind, where: tuple[str, str]) -> None:
        struct, path = where
        what = _json_type(value)
        if struct:
            self.save(f"json: cannot unmarshal {what} into Go struct field {struct}.{path} "
                      f"of type {kind.name}")
        else:
            self.save(f"json: cannot unmarshal {what} into Go value of type {kind.name}")

    def decode(self, value: Any, kind: Kind, where: tuple[str, str], into: Any = None) -> Any:
        if value is None:
            return None if kind.base in ("ptr", "list", "map") else into
        target = kind.target
        if target.base == "struct":
            if not isinstance(value, dict):
                self.type_error(value, target, where)
                return into
            return self._struct(value, target, where, into if isinstance(into, dict) else {})
        if target.base == "list":
            if not isinstance(value, list):
                self.type_error(value, target, where)
                return into
            assert target.elem is not None
            return [self._element(item, target.elem, where) for item in value]
        if target.base == "map":
            if not isinstance(value, dict):
                self.type_error(value, target, where)
                return into
            out = dict(into) if isinstance(into, dict) else {}
            for key in sorted(value):
                item = self.decode(value[key], STRING, where, out.get(key, ""))
                out[key] = item
            return out
        return self._scalar(value, target, where, into)

    def _element(self, value: Any, kind: Kind, where: tuple[str, str]) -> Any:
        decoded = self.decode(value, kind, where)
        if decoded is None and kind.target.base == "struct":
            return {}  # Go would keep a nil pointer and panic on it later; an empty entry fails validation
        return decoded

    def _struct(
        self, value: dict[str, Any], kind: Kind, where: tuple[str, str], out: dict[str, Any]
    ) -> dict[str, Any]:
        prefix = where[1] + "." if where[1] else ""
        struct_name = kind.name.removeprefix("specs.")
        for key in sorted(value):
            found = kind.field(key)
            if found is None:
                self.save(f"json: unknown field {goquote(key)}")
                continue
            name, field_kind = found
            out[name] = self.decode(value[key], field_kind, (struct_name, prefix + name), out.get(name))
        return out

    def _scalar(self, value: Any, kind: Kind, where: tuple[str, str], into: Any) -> Any:
        if kind is STRING:
            if isinstance(value, str):
                return value
            self.type_error(value, kind, where)
            return into
        if kind is _BOOL:
            if isinstance(value, bool):
                return value
            self.type_error(value, kind, where)
            return into
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.type_error(value, kind, where)
            return into
        literal = go_json_number(float(value)) if isinstance(value, float) else str(value)
        low, high = _RANGES[kind.name]
        if not re.fullmatch(r"-?[0-9]+", literal) or not low <= int(literal) <= high:
            struct, path = where
            self.save(f"json: cannot unmarshal number {literal} into Go struct field {struct}.{path} "
                      f"of type {kind.name}")
            return into
        return int(literal)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode_json(value: Any, kind: Kind) -> Any:
    """Go's ``json.Decoder`` with ``DisallowUnknownFields`` into ``kind``; the first error wins."""
    decoder = _Decoder()
    result = decoder.decode(value, kind, ("", ""))
    if decoder.error:
        raise DecodeError(f"error unmarshaling JSON: while decoding JSON: {decoder.error}")
    return result


def unmarshal_strict(data: bytes | str) -> dict[str, Any] | None:
    """Steps 1-3 for a spec: the decoded fields (JSON names), or None for an empty document."""
    raw = load_yaml(data)
    value = to_json_value(raw, SPEC)
    if value is None:
        return None
    decoded = decode_json(value, SPEC)
    return decoded if isinstance(decoded, dict) else {}


# --- decoded fields to the model ----------------------------------------------------------------
Fields = Mapping[str, Any]


def _text(fields: Fields, key: str) -> str:
    value = fields.get(key)
    return value if isinstance(value, str) else ""


def _number(fields: Fields, key: str) -> int:
    value = fields.get(key)
    return value if isinstance(value, int) else 0


def _optional(fields: Fields, key: str) -> int | None:
    value = fields.get(key)
    return value if isinstance(value, int) else None


def _texts(fields: Fields, key: str) -> list[str]:
    return list(fields.get(key) or ())


def _objects(fields: Fields, key: str) -> list[Fields]:
    return [item or {} for item in fields.get(key) or ()]


def _node(fields: Fields) -> DeviceNode:
    return DeviceNode(
        path=_text(fields, "path"),
        host_path=_text(fields, "hostPath"),
        type=_text(fields, "type"),
        major=_number(fields, "major"),
        minor=_number(fields, "minor"),
        file_mode=_optional(fields, "fileMode"),
        permissions=_text(fields, "permissions"),
        uid=_optional(fields, "uid"),
        gid=_optional(fields, "gid"),
    )


def _rdt(fields: Fields) -> IntelRdt:
    schemata = fields.get("schemata")
    return IntelRdt(
        clos_id=_text(fields, "closID"), l3_cache_schema=_text(fields, "l3CacheSchema"),
        mem_bw_schema=_text(fields, "memBwSchema"), schemata=None if schemata is None else list(schemata),
        enable_monitoring=fields.get("enableMonitoring") is True,
    )


def _edits(fields: Fields | None) -> ContainerEdits:
    fields = fields or {}
    rdt = fields.get("intelRdt")
    return ContainerEdits(
        env=_texts(fields, "env"),
        device_nodes=[_node(n) for n in _objects(fields, "deviceNodes")],
        net_devices=[LinuxNetDevice(host_interface_name=_text(n, "hostInterfaceName"), name=_text(n, "name"))
                     for n in _objects(fields, "netDevices")],
        hooks=[Hook(hook_name=_text(h, "hookName"), path=_text(h, "path"), args=_texts(h, "args"),
                    env=_texts(h, "env"), timeout=_optional(h, "timeout"))
               for h in _objects(fields, "hooks")],
        mounts=[Mount(host_path=_text(m, "hostPath"), container_path=_text(m, "containerPath"),
                      options=_texts(m, "options"), type=_text(m, "type"))
                for m in _objects(fields, "mounts")],
        intel_rdt=None if rdt is None else _rdt(rdt),
        additional_gids=list(fields.get("additionalGids") or ()),
    )


def _device(fields: Fields) -> Device:
    return Device(name=_text(fields, "name"), annotations=fields.get("annotations") or {},
                  container_edits=_edits(fields.get("containerEdits")))


def to_document(fields: Fields) -> SpecDocument:
    """The model of decoded spec fields (JSON names)."""
    devices = fields.get("devices")
    return SpecDocument(
        cdi_version=_text(fields, "cdiVersion"), kind=_text(fields, "kind"),
        annotations=fields.get("annotations") or {},
        devices=None if devices is None else [_device(d or {}) for d in devices],
        container_edits=_edits(fields.get("containerEdits")),
    )


def parse_document(data: bytes | str) -> SpecDocument | None:
    """Go's ``ParseSpec``: the document, None for an empty one, :class:`DecodeError` otherwise.

    A document that breaks this emulation in a way not foreseen (Python's own limits) is a
    :class:`DecodeError` too, naming the Python error: one bad file must stay that file's error.
    """
    try:
        fields = unmarshal_strict(data)
        return None if fields is None else to_document(fields)
    except (RecursionError, ValueError, TypeError, KeyError, OverflowError, AttributeError) as exc:
        raise DecodeError(f"vmdev cannot read this document ({type(exc).__name__}: {exc})") from None
