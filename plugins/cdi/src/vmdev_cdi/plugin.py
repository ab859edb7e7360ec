"""The vmdev-cdi plugin (entry point ``cdi``): CDI as an input source of ``vmdev plan``.

* ``register_settings``: ``cdi_spec_dirs`` (``--cdi-spec-dir``) and ``cdi_devices`` (``--cdi-device``);
* ``device_requests``: the devices of the ``cdi.k8s.io/*`` annotations and of ``cdi_devices`` are
  injected into a copy of the OCI spec; the device nodes they inject are returned as device
  requests, which the other plugins build (a VFIO group is passed through, a block node becomes a
  disk, a character device stays in the container);
* ``finish_plan``: the plan's ``cdi`` section, for the runtime and the guest: what was injected from
  which file, the container's own edits (env, mounts, hooks, ...), the OCI spec as the runtime
  passes it on (host ``cdi.k8s.io/`` annotations removed, the guest's ``cdi.k8s.io/vfio<N>`` added)
  and the guest's CDI spec files (see :mod:`vmdev_cdi.handoff`);
* ``register_lazy_commands``: ``vmdev cdi list|validate|inject`` (imported when it runs).

Every ``vmdev plan`` imports this module, with or without CDI, so it imports only the settings
keys and constants (:mod:`vmdev_cdi.settings`, :mod:`vmdev_cdi.constants`). The library (registry,
spec decoding with yaml, the model's attrs classes, the handoff) is imported by a hook only when
the spec has a ``cdi.k8s.io/`` annotation or the settings name a CDI device, as Kata's Go runtime
consults its CDI cache only when a container requests CDI devices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vmdev import hookimpl
from vmdev_cdi.constants import ANNOTATION_PREFIX
from vmdev_cdi.settings import SETTINGS, devices

if TYPE_CHECKING:
    from vmdev.commands import CommandSpec
    from vmdev.declared import Setting
    from vmdev.host import HostContext
    from vmdev.models import DeviceInfo
    from vmdev.oci import OciSpec
    from vmdev.settings import SandboxSettings


def requests_cdi(spec: OciSpec, settings: SandboxSettings) -> bool:
    """Whether ``spec`` or the settings ask for any CDI device (the cheap test before the library)."""
    return any(key.startswith(ANNOTATION_PREFIX) for key in spec.annotations) or bool(devices(settings))


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


@hookimpl
def device_requests(
    spec: OciSpec, settings: SandboxSettings, host: HostContext
) -> Sequence[DeviceInfo] | None:
    if not requests_cdi(spec, settings):
        return None
    from vmdev_cdi.source import inject_spec

    injection = inject_spec(spec, settings, host)
    return None if injection is None else injection.requests


@hookimpl
def finish_plan(plan: Any, spec: OciSpec, settings: SandboxSettings) -> Mapping[str, object] | None:
    if not requests_cdi(spec, settings):
        return None
    from vmdev_cdi import handoff
    from vmdev_cdi.source import injection_of

    injection = injection_of(spec)
    if injection is None:
        return None
    plan_json = plan.to_json()
    argv = getattr(plan.backend, "argv", None) if getattr(plan, "plan_key", "") == "qemu" else None
    passed = handoff.passed_devices(plan_json, argv, settings.machine_type)
    names = handoff.guest_names(passed)
    guest_annotations = {p.key: f"{names[p.container_path][0]}={names[p.container_path][1]}" for p in passed}
    by_path = {d.get("container_path"): d.get("id") for d in plan_json.get("devices", [])}
    return {"cdi": {
        "spec_dirs": list(injection.spec_dirs),
        "devices": list(injection.names),
        "annotation_keys": list(injection.annotation_keys),
        "injected": [
            {"name": s.name, "spec": s.spec, "priority": s.priority, "device_nodes": list(s.device_nodes),
             "planned": [by_path[p] for p in s.device_nodes if by_path.get(p)]}
            for s in injection.sources
        ],
        "container_edits": handoff.container_edits(injection.edits),
        "oci_spec": handoff.runtime_spec(injection.document, guest_annotations),
        "guest": {
            "annotations": guest_annotations,
            "pci_paths": {p.container_path: None if p.pci_paths is None else list(p.pci_paths)
                          for p in passed},
            "specs": handoff.guest_specs(passed, names),
        },
    }}


#: ``vmdev --help``'s line for ``vmdev cdi``: the first sentence of :func:`vmdev_cdi.cli.cdi_group`'s help
CLI_SUMMARY = "Container Device Interface: spec directories, spec files, injection."


@hookimpl
def register_lazy_commands(register: Callable[[CommandSpec], None]) -> None:
    # the group's module (jsonschema, yaml) loads only when vmdev cdi runs
    from vmdev.commands import CommandSpec

    register(CommandSpec(name="cdi", target="vmdev_cdi.cli:cdi_group", summary=CLI_SUMMARY))
