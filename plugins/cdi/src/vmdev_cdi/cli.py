"""``vmdev cdi``: list the devices of spec directories, validate spec files, inject into an OCI spec.

``list`` and ``inject`` read the directories as ``vmdev plan`` does (no JSON schema, like the Go
library's ``pkg/cdi`` that containerd and Kata use); ``validate`` also applies the schema, like
the Go project's ``cdi`` and ``validate`` tools. ``inject`` prints the edited spec as JSON, as the
Go ``cdi inject`` prints it (without its ``Updated OCI Spec:`` heading), and accepts the same
glob patterns (``nvidia.com/gpu=*``); unlike the Go tool, a name or pattern that matches nothing
is an error, not a silent no-op.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from vmdev.cliutil import errors_as_one_line
from vmdev.errors import ConfigError, one_line
from vmdev_cdi.errors import CDIError, UnresolvableError
from vmdev_cdi.registry import Registry
from vmdev_cdi.schema import BUILTIN
from vmdev_cdi.spec import read_spec
from vmdev_cdi.version import minimum_required_version

_SPEC_DIR = click.option(
    "--spec-dir", "spec_dirs", multiple=True, metavar="DIR",
    help="A CDI spec directory (repeatable; later ones win). Default: /etc/cdi, /var/run/cdi.",
)


@click.group("cdi")
def cdi_group() -> None:
    """Container Device Interface: spec directories, spec files, injection."""


@cdi_group.command("list")
@_SPEC_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors_as_one_line
def list_cmd(spec_dirs: tuple[str, ...], as_json: bool) -> None:
    """Every device of the spec directories with its spec file and priority, and every file's errors."""
    registry = Registry(spec_dirs)
    rows: list[dict[str, Any]] = []
    for name in registry.list_devices():
        device = registry.get_device(name)
        assert device is not None
        rows.append({"name": name, "vendor": device.spec.vendor, "class": device.spec.class_,
                     "spec": device.spec.path, "priority": device.spec.priority})
    if as_json:
        data = {"spec_dirs": list(registry.spec_dirs), "devices": rows, "errors": registry.errors}
        click.echo(json.dumps(data, indent=2))
        return
    # paths are file names anyone who can write a spec directory chose: every control character
    # is escaped (one_line), so no file name can forge or colour a line
    click.echo("spec directories (a later one wins):")
    for priority, directory in enumerate(registry.spec_dirs):
        click.echo(f"  {priority}  {one_line(directory)}")
    if rows:
        table = [("DEVICE", "PRIORITY", "SPEC FILE")]
        table += [(str(r["name"]), str(r["priority"]), one_line(str(r["spec"]))) for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        for row in table:
            click.echo(f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}")
    else:
        click.echo("no CDI devices found")
    for path, errors in registry.errors.items():
        for error in errors:
            click.echo(f"error: {one_line(path)}: {one_line(error)}")


@cdi_group.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@errors_as_one_line
def validate_cmd(files: tuple[str, ...]) -> None:
    """Check spec files against every rule of the reference and the CDI JSON schema; exit 1 if one fails.

    Each file is read as the ``cdi`` tool reads it (parsed, then checked against the schema, then
    validated), then its raw content is checked against the schema as the ``validate`` tool does
    (which also checks annotation keys of YAML files).
    """
    failed = False
    for path in files:
        try:
            spec = read_spec(path, 0, BUILTIN)
            BUILTIN.validate_file(path)
        except CDIError as exc:
            reason = exc.message
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - one file's failure is one line, as in cdi list
            reason = f"vmdev-cdi cannot read it ({type(exc).__name__}: {exc})"
        else:
            reason = ""
        if reason:
            failed = True
            click.echo(f"vmdev: error: {one_line(path)}: {one_line(reason)}", err=True)
            continue
        count = len(spec.devices)
        click.echo(f"{one_line(path)}: valid: kind {spec.kind}, {count} device{'s' if count != 1 else ''}, "
                   f"cdiVersion {spec.raw.cdi_version} (needs at least {minimum_required_version(spec.raw)})")
    if failed:
        sys.exit(1)


@cdi_group.command("inject")
@_SPEC_DIR
@click.option("--device", "devices", multiple=True, required=True, metavar="NAME",
              help="A qualified device name or a glob pattern such as nvidia.com/gpu=* (repeatable).")
@click.argument("oci_config", type=click.Path(dir_okay=False, allow_dash=True))
@errors_as_one_line
def inject_cmd(spec_dirs: tuple[str, ...], devices: tuple[str, ...], oci_config: str) -> None:
    """Print OCI_CONFIG (a config.json, or - for stdin) with the named CDI devices injected."""
    oci = _read_oci(oci_config)
    registry = Registry(spec_dirs)
    for path, errors in registry.errors.items():
        for error in errors:
            click.echo(f"vmdev: warning: {one_line(path)}: {one_line(error)}", err=True)
    names = resolve_patterns(registry, devices)
    try:
        registry.inject_devices(oci, names)
    except UnresolvableError as exc:
        raise UnresolvableError(exc.unresolved, message=exc.message + searched(registry)) from None
    click.echo(json.dumps(oci, indent=2))


def searched(registry: Registry) -> str:
    """`` (searched /etc/cdi, /var/run/cdi)``, for errors about names that were not found."""
    return f" (searched {', '.join(registry.spec_dirs)})"


def _read_oci(path: str) -> dict[str, Any]:
    """The OCI spec to inject into, read as the core reads every ``config.json``: a regular file of
    at most ``MAX_SPEC_BYTES`` (a FIFO would block, ``/dev/zero`` never ends), or as much from
    stdin, decoded as strict JSON (no NaN, which the printed spec would carry on; nesting the
    decoder would stop at with a RecursionError)."""
    from vmdev.oci import MAX_SPEC_BYTES, decode_json, read_document

    if path == "-":
        data = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise ConfigError(f"cannot read OCI spec: larger than {MAX_SPEC_BYTES} bytes", device=path)
        document = decode_json(data, source=path)
    else:
        document = read_document(path)
    if not isinstance(document, dict):
        raise ConfigError("must be a JSON object", device=path)
    return document


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``filepath.Match`` pattern as a regex: ``*`` and ``?`` never match ``/``."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and index < len(pattern):
            out.append(re.escape(pattern[index]))
            index += 1
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                raise ConfigError(f"{pattern!r}: syntax error in pattern", field="--device")
            body = pattern[index:end]
            body = "^" + body[1:] if body.startswith("^") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            index = end + 1
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def resolve_patterns(registry: Registry, patterns: Sequence[str]) -> list[str]:
    """Names as given; patterns (``*?[``) expanded against the registry, sorted, as the Go tool does."""
    names: list[str] = []
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            names.append(pattern)
            continue
        regex = glob_regex(pattern)
        matches = [name for name in registry.list_devices() if regex.fullmatch(name)]
        if not matches:
            raise UnresolvableError([pattern], message=f"no CDI device matches {pattern}{searched(registry)}")
        names += [m for m in sorted(matches) if m not in names]
    return names

