"""CDI as an input source of vmdev: the devices that ``cdi.k8s.io/*`` annotations and
``cdi_devices`` name, injected into a copy of the OCI spec as containerd and Kata inject them.

The device nodes the edits inject become device requests like the OCI spec's own: the edited
spec is read again by the core's reader (:func:`vmdev.oci.parse_spec`), so type, numbers, ids and
the read-only rule (the first cgroup rule naming the device) are exactly what Kata's sandbox would
take from the spec the shim hands it. The other edits (env, mounts, hooks, GIDs, intelRdt, net
devices) belong to the container; :mod:`vmdev_cdi.handoff` carries them into the plan.

Where this differs from the reference, on purpose:

* names requested twice (by annotations and by ``cdi_devices``) are injected once: a VM device
  cannot be attached twice (Go appends the edits twice);
* a spec file that fails to load is logged and does not stop planning (containerd's behaviour;
  Kata's Go shim fails on any broken file); an unresolvable name reports how many files in the
  searched directories failed, since its spec may be one of them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from vmdev.errors import one_line
from vmdev.host import HostContext
from vmdev.models import DeviceInfo
from vmdev.oci import OciSpec, parse_spec
from vmdev.settings import SandboxSettings
from vmdev_cdi import settings as cdi_settings
from vmdev_cdi.annotations import parse_annotations
from vmdev_cdi.edits import StatFunc, apply_edits
from vmdev_cdi.errors import CDIError, OciSpecError, UnresolvableError
from vmdev_cdi.model import ContainerEdits
from vmdev_cdi.registry import Registry

log = logging.getLogger("vmdev.cdi")


@attrs.frozen(kw_only=True)
class Source:
    """Which CDI device of which spec file put which device nodes into the container."""

    name: str
    spec: str
    priority: int
    device_nodes: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Injection:
    """The outcome of injecting a spec's CDI devices: the edits, the edited document, the requests."""

    annotation_keys: tuple[str, ...]
    names: tuple[str, ...]
    spec_dirs: tuple[str, ...]
    edits: ContainerEdits
    document: Mapping[str, Any] = attrs.field(eq=False)
    requests: tuple[DeviceInfo, ...]
    sources: tuple[Source, ...]


def requested(spec: OciSpec, settings: SandboxSettings) -> tuple[list[str], list[str]]:
    """The annotation keys and the device names ``spec`` and the settings request (once each)."""
    try:
        keys, names = parse_annotations(spec.annotations)
    except CDIError as exc:
        message = f"failed to parse CDI device annotations: {exc.message}"
        raise CDIError(message, field="annotations") from None
    unique: list[str] = []
    for name in [*names, *cdi_settings.devices(settings)]:
        if name not in unique:
            unique.append(name)
    return keys, unique


def host_stat(host: HostContext) -> StatFunc:
    """CDI's ``lstat`` of a host device node through the host context (its ``/dev`` root, its stat
    for tests); a real host gets ``os.lstat``, as the reference does not follow symlinks."""
    stat = os.lstat if host.stat is os.stat else host.stat

    def lstat(path: str) -> os.stat_result:
        return stat(str(host.dev_path(path)))

    return lstat


_INJECTIONS: dict[int, Injection] = {}


def inject_spec(spec: OciSpec, settings: SandboxSettings, host: HostContext) -> Injection | None:
    """Inject what ``spec`` requests, or None when it requests no CDI device. The result is kept
    with ``spec`` (for :func:`injection_of`) for as long as ``spec`` lives."""
    keys, names = requested(spec, settings)
    if not names:
        return None
    registry = Registry(cdi_settings.spec_dirs(settings), stat=host_stat(host))
    for path, errors in registry.errors.items():
        for error in errors:  # the path quoted as the core quotes host paths; the error on one line
            log.warning("CDI spec %s: %s", json.dumps(path), one_line(error))
    edits = _merged(registry, names)
    document: dict[str, Any] = copy.deepcopy(dict(spec.document))
    try:
        apply_edits(document, edits, stat=registry.stat)
    except OciSpecError as exc:  # keeps the JSON path; the device is the node, else the CDI names
        raise OciSpecError(f"CDI device injection failed: {exc.message}",
                           device=exc.device or ", ".join(names), field=exc.field) from None
    except CDIError as exc:
        raise CDIError(f"CDI device injection failed: {exc.message}") from None
    sources = tuple(_sources(registry, names))
    result = Injection(annotation_keys=tuple(keys), names=tuple(names), spec_dirs=registry.spec_dirs,
                       edits=edits, document=document, requests=_requests(spec, document, edits),
                       sources=sources)
    _INJECTIONS[id(spec)] = result
    weakref.finalize(spec, _INJECTIONS.pop, id(spec), None)
    return result


def injection_of(spec: OciSpec) -> Injection | None:
    """What :func:`inject_spec` made of this very ``spec`` object (None if it was not asked)."""
    return _INJECTIONS.get(id(spec))


def _merged(registry: Registry, names: Sequence[str]) -> ContainerEdits:
    try:
        return registry.merged_edits(names)
    except UnresolvableError as exc:
        searched = ", ".join(registry.spec_dirs)
        broken = len(registry.errors)
        note = (f"; {broken} spec file{'s' if broken != 1 else ''} there failed to load "
                "(vmdev cdi list shows why)") if broken else ""
        message = f"{exc.message} (searched {searched}){note}"
        raise UnresolvableError(exc.unresolved, message=message) from None


def _sources(registry: Registry, names: Sequence[str]) -> list[Source]:
    out: list[Source] = []
    seen_specs: list[object] = []
    for name in names:
        device = registry.get_device(name)
        assert device is not None
        nodes = [n.path for n in device.edits.device_nodes]
        if not any(s is device.spec for s in seen_specs):
            seen_specs.append(device.spec)
            nodes = [n.path for n in device.spec.edits.device_nodes] + nodes
        out.append(Source(name=name, spec=device.spec.path, priority=device.spec.priority,
                          device_nodes=tuple(nodes)))
    return out


def _requests(spec: OciSpec, document: Mapping[str, Any], edits: ContainerEdits) -> tuple[DeviceInfo, ...]:
    """The injected device nodes as the core's reader reads them from the edited spec."""
    injected = list(dict.fromkeys(node.path for node in edits.device_nodes))
    edited = {info.container_path: info for info in parse_spec(document).devices}
    original = {info.container_path: info for info in spec.devices}
    out: list[DeviceInfo] = []
    for path in injected:
        info = edited[path]
        before = original.get(path)
        if before is None:
            out.append(info)
        elif (before.dev_type, before.major, before.minor) != (info.dev_type, info.major, info.minor):
            raise CDIError(
                f"a CDI device injects {info.dev_type} {info.major}:{info.minor} here, but linux.devices "
                f"already has {before.dev_type} {before.major}:{before.minor}",
                device=path, field="path",
            )
    return tuple(out)
