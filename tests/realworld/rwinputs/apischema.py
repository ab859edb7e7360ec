"""Validate Cloud Hypervisor and Firecracker plan bodies against the VMMs' own API descriptions.

The descriptions are vendored in ``tests/realworld/schemas`` (with their licences). A request is
matched to its path template (``/drives/{drive_id}``, ``/vm.add-disk``...) and method, and its
body validated (jsonschema, Draft 4: the dialect both OpenAPI 3.0 and Swagger 2.0 schemas are
written in) against the operation's request schema, ``$ref`` resolved in the same document.

* Cloud Hypervisor: each ``vm_config`` key against ``VmConfig``'s property of that name (vmdev
  plans fragments of the ``VmConfig``, not a whole one), each hot-plug/unplug body against its
  endpoint's request body. CH's description lists properties without ``additionalProperties``;
  it is applied as written.
* Firecracker: every request (method, path, body). Firecracker's API structs are
  ``#[serde(deny_unknown_fields)]``, so an unknown property is an error here too; a path
  parameter must equal the body's id field of the same name (Firecracker refuses a mismatch).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import jsonschema
import yaml

SCHEMAS: Final = Path(__file__).resolve().parent.parent / "schemas"
CLH_API_PREFIX: Final = "/api/v1"


@functools.cache
def document(name: str) -> dict[str, Any]:
    path = SCHEMAS / name / f"{name}.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


@functools.cache
def strict_document(name: str) -> dict[str, Any]:
    """The document with every object schema closed (see :func:`_strict`)."""
    data: dict[str, Any] = _strict(document(name))
    return data


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists properties."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _errors(doc: Mapping[str, Any], schema: Mapping[str, Any], value: Any, where: str) -> list[str]:
    """Validation errors of ``value`` against ``schema`` whose refs point into ``doc``."""
    root = {**doc, **schema}  # Draft 4: "#/..." refs resolve against this root
    validator = jsonschema.Draft4Validator(root)
    return [f"{where}{''.join(f'[{p!r}]' for p in error.absolute_path)}: {error.message}"
            for error in validator.iter_errors(value)]


# --- Cloud Hypervisor ------------------------------------------------------------------------------
def _clh_request_schema(method: str, path: str) -> Mapping[str, Any] | None:
    doc = document("cloud-hypervisor")
    endpoint = path[len(CLH_API_PREFIX):] if path.startswith(CLH_API_PREFIX) else path
    operation = doc["paths"].get(endpoint, {}).get(method.lower())
    if operation is None:
        return None
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema: Mapping[str, Any] = body.get("schema", {})
    return schema


def clh_problems(part: Mapping[str, Any]) -> list[str]:
    """Problems of a plan's ``cloud_hypervisor`` part (empty: every body is valid)."""
    doc = document("cloud-hypervisor")
    vm_config = doc["components"]["schemas"]["VmConfig"]["properties"]
    problems = []
    for key, value in (part.get("vm_config") or {}).items():
        if key not in vm_config:
            problems.append(f"vm_config.{key}: VmConfig has no such property")
            continue
        problems += _errors(doc, vm_config[key], value, f"vm_config.{key}")
    for kind in ("hotplug", "unplug"):
        for index, request in enumerate(part.get(kind) or []):
            where = f"{kind}[{index}] {request.get('method')} {request.get('path')}"
            if not str(request.get("path", "")).startswith(CLH_API_PREFIX + "/"):
                problems.append(f"{where}: not under {CLH_API_PREFIX}")
            schema = _clh_request_schema(str(request.get("method")), str(request.get("path")))
            if schema is None:
                problems.append(f"{where}: no such operation in the Cloud Hypervisor API")
            elif schema:
                problems += _errors(doc, schema, request.get("body"), where)
    return problems


# --- Firecracker -----------------------------------------------------------------------------------
def _fc_templates() -> Iterator[tuple[re.Pattern[str], str, list[str]]]:
    for template in document("firecracker")["paths"]:
        names = re.findall(r"{(\w+)}", template)
        pattern = re.compile("^" + re.sub(r"{\w+}", r"([^/]+)", template) + "$")
        yield pattern, template, names


def _fc_operation(method: str, path: str) -> tuple[str, dict[str, str], Mapping[str, Any]] | None:
    for pattern, template, names in _fc_templates():
        match = pattern.match(path)
        if match:
            operation = document("firecracker")["paths"][template].get(method.lower())
            if operation is None:
                return None
            return template, dict(zip(names, match.groups(), strict=True)), operation
    return None


def fc_problems(part: Mapping[str, Any]) -> list[str]:
    """Problems of a plan's ``firecracker`` part (empty: every request is valid)."""
    doc = strict_document("firecracker")
    problems = []
    for kind in ("requests", "hotplug", "unplug"):
        for index, request in enumerate(part.get(kind) or []):
            method, path, body = str(request.get("method")), str(request.get("path")), request.get("body")
            where = f"{kind}[{index}] {method} {path}"
            found = _fc_operation(method, path)
            if found is None:
                problems.append(f"{where}: no such operation in the Firecracker API")
                continue
            _, params, operation = found
            body_params = [p for p in operation.get("parameters", []) if p.get("in") == "body"]
            if not body_params:
                if body not in (None, {}):
                    problems.append(f"{where}: the operation takes no body")
                continue
            problems += _errors(doc, body_params[0]["schema"], body, where)
            for name, value in params.items():
                if isinstance(body, Mapping) and name in body and body[name] != value:
                    problems.append(f"{where}: body {name} {body[name]!r} is not the path's {value!r}")
    return problems
