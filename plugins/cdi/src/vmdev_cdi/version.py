"""Spec versions and the minimum-version rule (the Go library's ``specs-go/version.go``).

A spec must name one of the ten known versions (one optional leading ``v``) and at least the
newest version whose features it uses. 0.1.0 and 0.2.0 are known but older than the earliest
supported 0.3.0, so they always fail with ``the spec version must be at least v0.3.0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from vmdev_cdi.errors import CDIError
from vmdev_cdi.gotext import goquote
from vmdev_cdi.model import ContainerEdits, SpecDocument

CURRENT_VERSION: Final = "1.1.0"
EARLIEST_VERSION: Final = "0.3.0"
#: newest first, as the reference walks them
KNOWN_VERSIONS: Final = (
    "1.1.0", "1.0.0", "0.8.0", "0.7.0", "0.6.0", "0.5.0", "0.4.0", "0.3.0", "0.2.0", "0.1.0"
)


def _all_edits(spec: SpecDocument) -> Iterable[ContainerEdits]:
    yield spec.container_edits
    for device in spec.device_list():
        yield device.container_edits


def _requires_110(spec: SpecDocument) -> bool:
    for edits in _all_edits(spec):
        rdt = edits.intel_rdt
        if rdt is not None and (rdt.schemata is not None or rdt.enable_monitoring):
            return True
        if edits.net_devices:
            return True
    return False


def _requires_070(spec: SpecDocument) -> bool:
    return any(e.intel_rdt is not None or e.additional_gids for e in _all_edits(spec))


def _requires_060(spec: SpecDocument) -> bool:
    if spec.annotations or any(d.annotations for d in spec.device_list()):
        return True
    _, sep, class_ = spec.kind.partition("/")
    return bool(sep) and "." in class_


def _requires_050(spec: SpecDocument) -> bool:
    if any(d.name[:1].isascii() and d.name[:1].isdigit() for d in spec.device_list()):
        return True
    return any(node.host_path for e in _all_edits(spec) for node in e.device_nodes)


def _requires_040(spec: SpecDocument) -> bool:
    return any(mount.type for e in _all_edits(spec) for mount in e.mounts)


_REQUIRES: Final[tuple[tuple[str, Callable[[SpecDocument], bool]], ...]] = (
    ("1.1.0", _requires_110),
    ("0.7.0", _requires_070),
    ("0.6.0", _requires_060),
    ("0.5.0", _requires_050),
    ("0.4.0", _requires_040),
)


def minimum_required_version(spec: SpecDocument) -> str:
    """The oldest version that has every feature ``spec`` uses (``0.3.0`` at least)."""
    for version, required in _REQUIRES:
        if required(spec):
            return version
    return EARLIEST_VERSION


def validate_version(spec: SpecDocument) -> None:
    """Go's ``ValidateVersion``: a known version, and not older than the features need."""
    version = spec.cdi_version.removeprefix("v")
    if version not in KNOWN_VERSIONS:
        raise CDIError(f"invalid version {goquote(spec.cdi_version)}")
    minimum = minimum_required_version(spec)
    if KNOWN_VERSIONS.index(minimum) < KNOWN_VERSIONS.index(version):
        raise CDIError(f"the spec version must be at least v{minimum}")
