"""Validation against the CDI JSON schema (the reference's ``schema`` package).

The schema (``data/schema.json`` and ``data/defs.json``, vendored with their licence, see
``data/ORIGIN.md``) is draft-07 and loose: no ``additionalProperties: false``, ``fileMode`` not
described. Three entry points, as in the reference:

* :meth:`Schema.validate` checks a parsed document re-encoded as Go encodes it; this is the spec
  validator the ``cdi`` tool installs for every file it loads (``Spec validation failed: ...``);
* :meth:`Schema.validate_data` checks raw bytes: JSON (text starting with ``{``) as it is, YAML
  converted to JSON first and then also the spec and device annotation keys (Kubernetes
  qualified-name rules; JSON documents skip that check, a quirk kept);
* :meth:`Schema.validate_file`: a ``.json`` file as JSON whatever it holds, anything else as
  :meth:`validate_data`.

The schema library's own messages differ from the Go one's (``santhosh-tekuri/jsonschema``); the
frame ``jsonschema validation failed with 'file:///schema.json#'`` and one ``- at '<pointer>':``
line per failure are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

import jsonschema
from referencing import Registry as RefRegistry
from referencing.jsonschema import DRAFT7

from vmdev_cdi.decode import DecodeError, load_yaml, to_json_value
from vmdev_cdi.errors import CDIError
from vmdev_cdi.model import SpecDocument, to_go
from vmdev_cdi.spec import read_spec_file

SCHEMA_URI: Final = "file:///schema.json"
#: the reference's limit on the total size of one annotation map's keys and values
TOTAL_ANNOTATION_SIZE_LIMIT: Final = 256 * 1024
_QNAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_DNS1123_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character"
)


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """Kubernetes' ``RegexError`` (its two spaces before ``or`` included)."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def qualified_name_errors(value: str) -> list[str]:
    """Kubernetes' ``IsQualifiedName``: ``[prefix/]name`` with a DNS-1123 prefix."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return [
            "a qualified name " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not re.fullmatch(_DNS1123_FMT, prefix):
                errors.append("prefix part " + _regex_error(_DNS1123_MSG, _DNS1123_FMT, "example.com"))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QNAME_FMT, name):
        errors.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errors


def annotation_errors(annotations: Any, name: str = "") -> list[str]:
    """The reference's ``ValidateSpecAnnotations`` on a decoded map (keys lower-cased, sorted)."""
    if not isinstance(annotations, Mapping):
        return []
    for key, value in annotations.items():
        if not isinstance(value, str):
            shown = json.dumps(value) if not isinstance(value, (int, float)) else str(value)
            return [f"invalid annotation {name}.{key}; {shown} is not a string"]
    path = f"{name}.annotations" if name else "annotations"
    errors = [f"{path}.{key} is invalid: {message}"
              for key in sorted(annotations) for message in qualified_name_errors(key.lower())]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE_LIMIT:
        limit = TOTAL_ANNOTATION_SIZE_LIMIT
        errors.append(f"{path} is too long: annotations size {size} is larger than limit {limit}")
    return errors


def _read(name: str) -> Any:
    text = resources.files("vmdev_cdi").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator() -> jsonschema.protocols.Validator:
    registry: RefRegistry[Any] = RefRegistry().with_resources([
        (SCHEMA_URI, DRAFT7.create_resource(_read("schema.json"))),
        ("file:///defs.json", DRAFT7.create_resource(_read("defs.json"))),
    ])
    return jsonschema.Draft7Validator({"$ref": SCHEMA_URI}, registry=registry)


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else ""


class Schema:
    """The built-in CDI schema. Every method raises :class:`CDIError` with the reason."""

    def validate(self, doc: SpecDocument) -> None:
        """Check a parsed document (as the validator of a registry or of :func:`read_spec`)."""
        self.validate_json(to_go(doc))

    def validate_json(self, value: Any) -> None:
        errors = sorted(_validator().iter_errors(value),
                        key=lambda e: (list(map(str, e.absolute_path)), e.message))
        if errors:
            lines = [f"- at '{_pointer(e.absolute_path)}': {e.message}" for e in errors]
            raise CDIError(f"jsonschema validation failed with '{SCHEMA_URI}#'\n" + "\n".join(lines))

    def validate_data(self, data: bytes) -> None:
        """Raw spec bytes: JSON as is, YAML converted (then annotation keys checked too)."""
        if not data.strip().startswith(b"{"):
            try:
                value = to_json_value(load_yaml(data, strict=False), None)
            except DecodeError as exc:
                raise CDIError(f"failed to YAML unmarshal data for validation: {exc}") from None
            self.validate_json(value)
            self._validate_contents(value)
            return
        self.validate_json(_load_json(data))

    def validate_file(self, path: str) -> None:
        data = read_spec_file(path)  # bounded: a FIFO or an oversized file is a SpecError
        if path.endswith(".json"):
            self.validate_json(_load_json(data))
        else:
            self.validate_data(data)

    @staticmethod
    def _validate_contents(value: Any) -> None:
        if not isinstance(value, Mapping):
            return
        errors = annotation_errors(value.get("annotations"))
        if errors:
            raise CDIError("\n".join(errors))
        devices = value.get("devices")
        for device in devices if isinstance(devices, list) else []:
            if not isinstance(device, Mapping):
                got = type(device).__name__
                raise CDIError(f"failed to parse device: expected map[string]any but got {got}")
            name = device.get("name") if isinstance(device.get("name"), str) else ""
            errors = annotation_errors(device.get("annotations"), str(name))
            if errors:
                raise CDIError("\n".join(errors))


def _reject_constant(text: str) -> Any:
    raise ValueError(f"invalid character {text[:1]!r} looking for beginning of value")


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except ValueError as exc:
        raise CDIError(f"failed to load JSON data for validation: {exc}") from None


BUILTIN: Final = Schema()
