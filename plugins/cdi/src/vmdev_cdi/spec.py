"""A loaded CDI spec file: its document, path, priority, vendor, class and devices (Go's ``Spec``).

:func:`read_spec` is Go's ``ReadSpec`` and :func:`new_spec` its ``newSpec``: the same checks in
the same order, the same error wrapping::

    failed to parse CDI Spec "/etc/cdi/x.yaml": failed to unmarshal CDI Spec: <decode error>
    failed to parse CDI Spec "/etc/cdi/x.yaml", no Spec data
    invalid CDI Spec: failed add device "dev1": invalid device, empty device edits

A validator (:class:`vmdev_cdi.schema.Schema`, the reference's ``SetSpecValidator``) may be given;
it runs first and its failure reads ``Spec validation failed: ...``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Final, Protocol

import attrs

from vmdev.errors import HostReadError
from vmdev.host import read_regular
from vmdev_cdi.decode import DecodeError, parse_document
from vmdev_cdi.errors import CDIError, SpecError
from vmdev_cdi.gotext import clean, ext, goquote, path_error
from vmdev_cdi.model import ContainerEdits, Device, SpecDocument, to_go
from vmdev_cdi.names import parse_qualifier, qualified_name, validate_class_name, validate_vendor_name
from vmdev_cdi.validate import validate_device, validate_edits
from vmdev_cdi.version import validate_version

DEFAULT_SPEC_EXT = ".yaml"
SPEC_EXTS = (".json", ".yaml")

#: the most a spec file may hold. The Go library reads any size; vmdev parses specs with PyYAML in
#: pure Python, measured at about 4 s and 100 MB of memory per MiB of spec, so the core's 16 MiB
#: cap for config.json would let one bad file cost a minute and 1.7 GB on every ``vmdev plan``.
#: Generated specs are small: a device entry is 100-500 bytes, so even 2048 IMEX channels or 8 GPUs
#: with all their MIG devices stay well under 1 MiB. 4 MiB keeps that headroom and bounds a bad
#: file to about 15 s and 450 MB; a larger file is that file's load error.
MAX_SPEC_BYTES: Final = 4 * 1024 * 1024


class SpecValidator(Protocol):
    """An extra check of every document read or written (Go's ``SetSpecValidator``)."""

    def validate(self, doc: SpecDocument) -> None:
        """Raise :class:`vmdev_cdi.errors.CDIError` with the reason."""


@attrs.define(eq=False)
class CDIDevice:
    """One device of a loaded spec: its document entry and the spec it came from."""

    raw: Device
    spec: Spec

    @property
    def name(self) -> str:
        return self.raw.name

    @property
    def qualified_name(self) -> str:
        return qualified_name(self.spec.vendor, self.spec.class_, self.raw.name)

    @property
    def edits(self) -> ContainerEdits:
        return self.raw.container_edits


@attrs.define(eq=False)
class Spec:
    """A validated spec document loaded from ``path`` with ``priority`` (its directory's index)."""

    raw: SpecDocument
    path: str
    priority: int
    vendor: str
    class_: str
    devices: dict[str, CDIDevice] = attrs.field(factory=dict)

    @property
    def kind(self) -> str:
        return self.raw.kind

    @property
    def edits(self) -> ContainerEdits:
        return self.raw.container_edits

    def get_device(self, name: str) -> CDIDevice | None:
        """The device called ``name`` (unqualified) in this spec."""
        return self.devices.get(name)


def read_spec(path: str, priority: int, validator: SpecValidator | None = None) -> Spec:
    """Read, parse and validate the spec file at ``path`` (Go's ``ReadSpec``).

    A missing file raises :class:`FileNotFoundError` (Go returns the raw ``os`` error); every
    other problem is a :class:`SpecError` with the reference's text.
    """
    data = read_spec_file(path)
    try:
        doc = parse_document(data)
    except DecodeError as exc:
        raise SpecError(
            f"failed to parse CDI Spec {goquote(path)}: failed to unmarshal CDI Spec: {exc}"
        ) from None
    if doc is None:
        raise SpecError(f"failed to parse CDI Spec {goquote(path)}, no Spec data")
    return new_spec(doc, path, priority, validator)


def read_spec_file(path: str) -> bytes:
    """The bytes of the spec file ``path``, through the core's bounded reader: a FIFO, a device
    node (``/dev/zero`` behind a symlink) or a file over :data:`MAX_SPEC_BYTES` is a
    :class:`SpecError`, never a hang or a full memory. Missing is :class:`FileNotFoundError` and a
    directory or a failed ``stat`` keep Go's ``*fs.PathError`` text."""
    try:
        data = read_regular(path, limit=MAX_SPEC_BYTES)
    except HostReadError as exc:
        _go_stat_error(path)
        raise SpecError(f"failed to read CDI Spec {goquote(path)}: {exc.message}") from None
    if data is None:
        _go_stat_error(path)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    return data


def _go_stat_error(path: str) -> None:
    """After the reader failed: raise what Go's reader says when ``path`` is a directory
    (``read``), cannot be looked up (``open``) or is missing (:class:`FileNotFoundError`); return
    for anything else. Only a failed read pays for this second look."""
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        op = "read" if exc.errno == errno.EISDIR else "open"
        raise SpecError(f"failed to read CDI Spec {goquote(path)}: {path_error(op, path, exc)}") from None


def parse_spec(data: bytes | str) -> SpecDocument | None:
    """Go's ``ParseSpec``: the document of ``data`` (None for an empty one), not validated."""
    try:
        return parse_document(data)
    except DecodeError as exc:
        raise SpecError(f"failed to unmarshal CDI Spec: {exc}") from None


def new_spec(doc: SpecDocument, path: str, priority: int, validator: SpecValidator | None = None) -> Spec:
    """Validate ``doc`` as loaded from ``path`` (Go's ``newSpec``); ``.yaml`` is appended to a path
    with another extension."""
    run_validator(doc, validator)
    path = clean(path)
    if ext(path) not in SPEC_EXTS:
        path += DEFAULT_SPEC_EXT
    vendor, class_ = parse_qualifier(doc.kind)
    spec = Spec(raw=doc, path=path, priority=priority, vendor=vendor, class_=class_)
    try:
        spec.devices = _validate(spec)
    except CDIError as exc:
        raise SpecError(f"invalid CDI Spec: {exc.message}") from None
    return spec


def run_validator(doc: SpecDocument, validator: SpecValidator | None) -> None:
    if validator is None:
        return
    try:
        validator.validate(doc)
    except CDIError as exc:
        raise SpecError(f"Spec validation failed: {exc.message}") from None


def _validate(spec: Spec) -> dict[str, CDIDevice]:
    doc = spec.raw
    validate_version(doc)
    validate_vendor_name(spec.vendor)
    validate_class_name(spec.class_)
    validate_edits(doc.container_edits)
    devices: dict[str, CDIDevice] = {}
    for device in doc.device_list():
        try:
            validate_device(device)
        except CDIError as exc:
            raise CDIError(f"failed add device {goquote(device.name)}: {exc.message}") from None
        if device.name in devices:
            raise CDIError(f"invalid spec, multiple device {goquote(device.name)}")
        devices[device.name] = CDIDevice(raw=device, spec=spec)
    if not devices:
        raise CDIError("invalid spec, no devices")
    return devices


# --- names and writing (Go's GenerateSpecName, Spec.write) ------------------------------------
def generate_spec_name(vendor: str, class_: str) -> str:
    return f"{vendor}-{class_}"


def generate_transient_spec_name(vendor: str, class_: str, transient_id: str) -> str:
    return generate_spec_name(vendor, class_) + "_" + transient_id.replace("/", "_")


def generate_name_for_spec(doc: SpecDocument, transient_id: str | None = None) -> str:
    """``vendor-class`` (plus ``_<id>``) from the document's kind; only emptiness is checked."""
    vendor, class_ = parse_qualifier(doc.kind)
    if not vendor:
        raise SpecError(f"invalid vendor/class {goquote(doc.kind)} in Spec")
    if transient_id is None:
        return generate_spec_name(vendor, class_)
    return generate_transient_spec_name(vendor, class_, transient_id)


def encode_spec(doc: SpecDocument, path: str) -> bytes:
    """The file content Go writes for ``path``: ``---`` + YAML for ``.yaml``, compact JSON else."""
    from vmdev_cdi.yamlout import dump_yaml

    if ext(path) == ".yaml":
        return ("---\n" + dump_yaml(to_go(doc, yaml=True))).encode("utf-8")
    return go_json(to_go(doc)).encode("utf-8")


def go_json(value: object, *, indent: int | None = None) -> str:
    """``json.Marshal``'s text: HTML-sensitive characters escaped as Go does."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text
