"""Why each device of a plan got the options it got: ``vmdev explain``.

``vmdev explain`` takes the arguments of ``vmdev plan`` and plans the same way, but with a
notebook that keeps decisions (:class:`ExplainNotes`). Rendering code says why it chose an option
with :func:`decide` (which plugin's code it is, the settings keys and the host facts that decided,
the limits that applied); outside ``vmdev explain`` that call does nothing and costs nothing, so
plans stay what they are. For each device the explanation also gives what the core knows without
the family's help: which plugin claimed the request and through which hook, which plugin resolved
its host path, the host facts recorded for it (the core's node facts and the family's
``host_facts``), the ports and bridges it got and the topology's limits, and its options. Decisions
about the whole machine (the 64-bit PCI window, guest NUMA) are recorded under :data:`MACHINE`.

It answers "why is my GPU on rp3 and not hot-plugged" without reading code. Rendering code imports
:func:`decide` from :mod:`vmdev.decisions`, which creates no class (it is re-exported here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from vmdev.backend import PlanNotes, RenderContext
from vmdev.decisions import MACHINE, decide, explaining

if TYPE_CHECKING:
    import click

    from vmdev.host import HostContext
    from vmdev.oci import OciSpec
    from vmdev.planner import Built, Pipeline, Plan
    from vmdev.plugins import PluginManager
    from vmdev.settings import SandboxSettings

#: how a request reached the plugin that built it
FROM_SPEC: Final = "build_device (OCI linux.devices)"
FROM_MOUNT: Final = "device_from_mount, then build_device"
FROM_REQUESTS: Final = "device_requests, then build_device"
FROM_SANDBOX: Final = "sandbox_devices"


def _str_map(value: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def _any_map(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Decision:
    """One option and why: the settings keys (with their values) and host facts (sysfs file or
    fact name -> the value read) that decided it, and the limits that applied."""

    option: str
    because: str
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_map)
    facts: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    limits: tuple[str, ...] = attrs.field(default=(), converter=_strs)

    def to_json(self) -> dict[str, Any]:
        return {"option": self.option, "because": self.because, "settings": dict(self.settings),
                "facts": dict(self.facts), "limits": list(self.limits)}


@attrs.define
class ExplainNotes(PlanNotes):
    """A plan's notebook that also keeps the decisions rendering records (``vmdev explain``)."""

    decisions: dict[str, list[Decision]] = attrs.Factory(dict)

    def add(self, device: str, decision: Decision) -> None:
        self.decisions.setdefault(device, []).append(decision)

    def add_decision(self, device: str, **fields: Any) -> None:
        """What :func:`vmdev.decisions.decide` calls: the notebook keeps decisions."""
        self.add(device, Decision(**fields))


# --- the explanation ---------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class DeviceExplanation:
    """What decided one device's options."""

    name: str
    kind: str
    id: str
    plugin: str
    hook: str
    host_path: str
    resolved_by: str
    plug: str
    host_facts: Mapping[str, str]
    decisions: tuple[Decision, ...]
    places: tuple[str, ...]
    options: tuple[str, ...]
    hotplug: tuple[Any, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "id": self.id, "plugin": self.plugin, "hook": self.hook,
            "host_path": self.host_path, "resolved_by": self.resolved_by, "plug": self.plug,
            "host_facts": dict(self.host_facts), "decisions": [d.to_json() for d in self.decisions],
            "places": list(self.places), "options": list(self.options), "hotplug": list(self.hotplug),
        }


@attrs.frozen(kw_only=True)
class Explanation:
    """Every device of a plan, why it got its options, and the machine-wide decisions."""

    hypervisor: str
    devices: tuple[DeviceExplanation, ...]
    machine: tuple[Decision, ...]
    notes: tuple[str, ...]
    plan: Plan

    def to_json(self) -> dict[str, Any]:
        return {"hypervisor": self.hypervisor, "devices": [d.to_json() for d in self.devices],
                "machine": [d.to_json() for d in self.machine], "notes": list(self.notes)}

    def text(self) -> str:
        lines: list[str] = []
        for device in self.devices:
            lines += _device_text(device)
            lines.append("")
        if self.machine or self.notes:
            lines.append(f"machine ({self.hypervisor}):")
            for decision in self.machine:
                lines += _decision_text(decision, "  ")
            lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _device_text(device: DeviceExplanation) -> list[str]:
    lines = [f"{device.name}  ({device.kind} {device.id})",
             f"  claimed by plugin {device.plugin!r} through {device.hook}",
             f"  host path: {device.host_path or '-'}" + (f" (resolved by {device.resolved_by})"
                                                          if device.resolved_by else ""),
             f"  plugged: {device.plug}"]
    if device.host_facts:
        lines.append("  host facts:")
        lines += [f"    {fact} = {value!r}" for fact, value in device.host_facts.items()]
    if device.decisions:
        lines.append("  decisions:")
        for decision in device.decisions:
            lines += _decision_text(decision, "    ")
    else:
        lines.append(f"  decisions: none recorded by plugin {device.plugin!r}")
    if device.places:
        lines.append("  places and limits:")
        lines += [f"    {place}" for place in device.places]
    if device.options:
        lines.append("  options:")
        lines += [f"    {option}" for option in device.options]
    if device.hotplug:
        lines.append("  hot plug:")
        lines += [f"    {json.dumps(command)}" for command in device.hotplug]
    return lines


def _decision_text(decision: Decision, indent: str) -> list[str]:
    lines = [f"{indent}{decision.option}", f"{indent}  because: {decision.because}"]
    for key, value in decision.settings.items():
        lines.append(f"{indent}  setting: {key} = {json.dumps(value, default=str)}")
    for fact, value in decision.facts.items():
        lines.append(f"{indent}  fact: {fact} = {value!r}")
    lines += [f"{indent}  limit: {limit}" for limit in decision.limits]
    return lines


@attrs.frozen(kw_only=True)
class _Origin:
    hook: str
    resolved_by: str


def explain(
    spec: OciSpec,
    settings: SandboxSettings | None = None,
    *,
    host: HostContext | None = None,
    plugins: PluginManager | None = None,
) -> Explanation:
    """Plan ``spec`` as :func:`vmdev.planner.plan` does, keeping every decision, and explain it."""
    from vmdev.hostfacts import node_facts
    from vmdev.planner import Pipeline, check_unique_ids
    from vmdev.resources import Allocator
    from vmdev.settings import SandboxSettings

    pipeline = Pipeline.start(settings or SandboxSettings(), host, plugins)
    alloc = Allocator()
    built: list[Built] = []
    origins: dict[int, _Origin] = {}
    for request, hook in _requests(pipeline, spec):
        info, resolved_by = _resolve(pipeline, request)
        item = pipeline.build(info, alloc)
        origins[len(built)] = _Origin(hook=hook, resolved_by=resolved_by)
        built.append(item)
    for extra in pipeline.sandbox_devices():
        origins[len(built)] = _Origin(hook=FROM_SANDBOX, resolved_by="")
        built.append(extra)
    check_unique_ids(built)
    notes = ExplainNotes()
    target = pipeline.target(RenderContext(notes=notes))
    planned = tuple(pipeline.render(b, target, hotplug=pipeline.settings.hotplug) for b in built)
    result = pipeline.assemble(target, planned, spec)
    topology: Any = getattr(target, "topology", None)
    devices = []
    for index, done in enumerate(planned):
        origin = origins[index]
        name = done.name
        facts = node_facts(done.host_path, pipeline.host)
        facts.update(pipeline.pm.host_facts(done.device, pipeline.host, name=name))
        attach: Any = done.attach
        places = tuple(topology.describe(name)) if hasattr(topology, "describe") else ()
        devices.append(DeviceExplanation(
            name=name, kind=done.kind, id=done.id, plugin=done.plugin, hook=origin.hook,
            host_path=done.host_path, resolved_by=origin.resolved_by, plug=_plug(done.kind, attach),
            host_facts=facts, decisions=tuple(notes.decisions.get(name, ())), places=places,
            options=_options(attach), hotplug=tuple(_json(c) for c in getattr(attach, "hotplug", ()))))
    backend_notes = getattr(result.backend, "notes", ()) or ()
    return Explanation(hypervisor=result.settings.hypervisor, devices=tuple(devices),
                       machine=tuple(notes.decisions.get(MACHINE, ())), notes=tuple(backend_notes),
                       plan=result)


def _requests(pipeline: Pipeline, spec: OciSpec) -> list[tuple[Any, str]]:
    """``Pipeline.requests``, each with the hook that made it, in words."""
    labels = {"": FROM_SPEC, "device_from_mount": FROM_MOUNT, "device_requests": FROM_REQUESTS}
    return [(r.info, labels[r.hook] + (f" (input plugin {r.source!r})" if r.source else ""))
            for r in pipeline.requests(spec)]


def _resolve(pipeline: Pipeline, info: Any) -> tuple[Any, str]:
    """``Pipeline.resolve``, also saying which plugin resolved the host path."""
    from vmdev.host import CORE_RESOLVER

    resolved, by = pipeline.resolve_by(info)
    who = "the core (Kata's GetHostPath through /sys/dev)" if by == CORE_RESOLVER else f"plugin {by!r}"
    return resolved, who


def _plug(kind: str, attach: Any) -> str:
    if getattr(attach, "hotplugged", False):
        return "hot: attached after boot (its hot-plug commands below)"
    if kind == "generic":
        return "no: it stays a container device (nothing attaches to the VM)"
    return "cold: present when the VM boots"


def _options(attach: Any) -> tuple[str, ...]:
    args = list(getattr(attach, "args", ()))
    out = [f"{args[i]} {args[i + 1]}" if i + 1 < len(args) else args[i] for i in range(0, len(args), 2)]
    out += [" ".join(shared) for shared in getattr(attach, "shared_args", {}).values()]
    for key, value in getattr(attach, "machine", {}).items():
        out.append(f"-machine {key}={value}")
    return tuple(out)


def _json(command: Any) -> Any:
    return command.to_json() if hasattr(command, "to_json") else command


# --- the command -------------------------------------------------------------------------------------
def _make_command() -> click.Command:
    import click

    from vmdev.cliutil import SettingsCommand, errors_as_one_line, flag_overrides, host_context

    @click.command("explain", cls=SettingsCommand)
    @click.option("--config", "config_file", type=click.Path(dir_okay=False),
                  help="Sandbox settings TOML (Kata's configuration.toml works).")
    @click.option("--hypervisor", help="An installed backend (vmdev backends); default: the one the --config "
                  "file is for, else qemu.")
    @click.option("--machine-type", help="QEMU machine type (default q35).")
    @click.option("--sysfs-root", type=click.Path(file_okay=False), help="Instead of /sys.")
    @click.option("--memory", type=click.IntRange(min=1), help="Guest memory in MiB (default_memory).")
    @click.option("--hotplug/--coldplug", default=None, help="Hot-plug devices into a running VM.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.argument("oci_config", type=click.Path(dir_okay=False))
    @errors_as_one_line
    def explain_cmd(
        config_file: str | None,
        hypervisor: str | None,
        machine_type: str | None,
        sysfs_root: str | None,
        memory: int | None,
        hotplug: bool | None,
        as_json: bool,
        oci_config: str,
    ) -> None:
        """Explain a plan: for each device, which plugin claimed it and through which hook, which
        settings keys and host facts decided each option, and which limits applied. Takes the
        arguments of vmdev plan."""
        from vmdev.cli import plan_settings
        from vmdev.oci import load_spec

        settings = plan_settings(config_file, hypervisor=hypervisor, machine_type=machine_type, memory=memory,
                                 hotplug=hotplug, flags=flag_overrides())
        result = explain(load_spec(oci_config), settings, host=host_context(sysfs_root))
        text = json.dumps(result.to_json(), indent=2, default=str) if as_json else result.text()
        click.echo(text, nl=as_json)

    return explain_cmd


def __getattr__(name: str) -> Any:
    """``explain_cmd``, the click command, made when the command line asks for it (rendering code
    imports this module for :func:`decide` without importing click)."""
    if name == "explain_cmd":
        command = _make_command()
        globals()["explain_cmd"] = command
        return command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MACHINE",
    "Decision",
    "DeviceExplanation",
    "ExplainNotes",
    "Explanation",
    "decide",
    "explain",
    "explaining",
]
