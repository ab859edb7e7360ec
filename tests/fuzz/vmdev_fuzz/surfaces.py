"""Running one case of a surface and judging what came out.

:func:`run_plan` builds the case's fake host, reads its OCI document, makes its settings (through
``load_settings`` overrides, as the command-line flags do, or through a ``configuration.toml``),
plans it and hands the answer to the oracles (:mod:`vmdev_fuzz.oracles`). :func:`run_raw_json` and
:func:`run_raw_toml` feed bytes to the readers and plan what they accept.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
from hypothesis import strategies as st

from vmdev.oci import OciSpec, decode_json, load_spec, parse_spec
from vmdev.planner import Plan, plan
from vmdev.settings import SandboxSettings, load_settings
from vmdev_fuzz import hosts, strategies, text
from vmdev_fuzz.cases import PlanCase, RawCase
from vmdev_fuzz.oracles import (
    PATH_CHANGE,
    Hang,
    Request,
    Violation,
    json_strings,
    judge_error,
    node_violation,
    option_violations,
    plan_strings,
    same_path,
    unverified_options,
)
from vmdev_fuzz.strategies import toml_document

if TYPE_CHECKING:
    from vmdev_fuzz.runner import Session

#: the settings key the CDI plugin reads spec directories from (kept inside the fake host)
CDI_DIRS: Final = "cdi_spec_dirs"


@attrs.define
class Outcome:
    """What one case gave: ``accepted`` (a plan), ``refused`` (a VmdevError), ``crash`` or ``hang``."""

    status: str
    violations: list[Violation] = attrs.Factory(list)
    summary: str = ""


def failed(exc: BaseException) -> Outcome:
    if isinstance(exc, Hang):
        raise exc
    violations = judge_error(exc)
    crash = any(v.oracle == "crash" for v in violations)
    return Outcome("crash" if crash else "refused", violations, f"{type(exc).__name__}: {_safe_str(exc)}")


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:300]
    except Exception:  # noqa: BLE001 - judged by judge_error
        return repr(exc)[:300]


@attrs.frozen
class Surface:
    """An input surface: its name (the counts' row), its cases and how one runs."""

    name: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    run: Callable[[Any, Session], Outcome]
    description: str


# --- walking cases ------------------------------------------------------------------------------
def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a case (its hostile texts among them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)
    elif attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            yield from strings_in(getattr(value, field.name))


def is_clean_case(case: Any) -> bool:
    return all(text.is_clean(s.replace(hosts.ROOT, "")) for s in strings_in(case))


def clean_twin(value: Any) -> Any:
    """``value`` with every string made clean (:func:`vmdev_fuzz.text.clean`), ``ROOT`` kept."""
    if isinstance(value, str):
        return hosts.ROOT.join(text.clean(part) for part in value.split(hosts.ROOT))
    if isinstance(value, Mapping):
        return {clean_twin(k): clean_twin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_twin(v) for v in value)
    if attrs.has(type(value)):
        return attrs.evolve(value, **{f.name: clean_twin(getattr(value, f.name))
                                      for f in attrs.fields(type(value)) if f.init})
    return value


# --- planning ------------------------------------------------------------------------------------
def make_settings(case: PlanCase, root: Path, session: Session) -> SandboxSettings:
    options = dict(case.options)
    options.setdefault(CDI_DIRS, [str(root / "cdi")])
    core = {"machine_type": case.machine, "default_memory": case.memory, "hotplug": case.hotplug}
    if case.toml:
        backend = session.pm.backends().get(case.hypervisor).backend
        section = backend.kata_sections[0] if backend.kata_sections else case.hypervisor
        tables: dict[str, Mapping[str, Any]] = {f"hypervisor.{section}": {**core, **options}}
        if case.runtime:
            tables["runtime"] = case.runtime
        path = root / "configuration.toml"
        path.write_bytes(toml_document(tables).encode("utf-8", "surrogatepass"))
        return load_settings(path, hypervisor=case.hypervisor, plugins=session.pm)
    settings = load_settings(None, hypervisor=case.hypervisor, overrides={**options, **core}, plugins=session.pm)
    return attrs.evolve(settings, runtime=case.runtime) if case.runtime else settings


def _fresh_root(session: Session) -> Path:
    return Path(tempfile.mkdtemp(prefix="case-", dir=session.work))


def build_case(case: PlanCase, root: Path) -> tuple[PlanCase, Any]:
    """The case with its paths under ``root``, and its fake host built there (the fuzz kit's own
    work: an exception here is a bug of the kit, never counted as vmdev's)."""
    real: PlanCase = hosts.substitute(case, str(root))
    return real, hosts.build(real.host, root).context()


def plan_case(real: PlanCase, host: Any, root: Path, session: Session) -> tuple[OciSpec, Plan, Any]:
    """Plan the built case: (spec, plan, its JSON)."""
    spec = parse_spec(real.document)
    settings = make_settings(real, root, session)
    result = plan(spec, settings, host=host, plugins=session.pm)
    plan_json = result.to_json()
    json.dumps(plan_json)  # what the command line prints
    return spec, result, plan_json


def run_plan(case: PlanCase, session: Session) -> Outcome:
    root = _fresh_root(session)
    try:
        real, host = build_case(case, root)
        try:
            spec, result, plan_json = plan_case(real, host, root, session)
        except Exception as exc:  # noqa: BLE001 - judged: only one-line VmdevErrors are proper refusals
            return failed(exc)
        return Outcome("accepted", judge_plan(case, real, spec, result, plan_json, host, session))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def twin_argv(case: PlanCase, session: Session) -> list[str] | None:
    """The QEMU-style argv of ``case``'s clean twin, or None when the twin is refused."""
    root = _fresh_root(session)
    try:
        real, host = build_case(clean_twin(case), root)
        _, _, plan_json = plan_case(real, host, root, session)
    except Exception:  # noqa: BLE001 - a refused twin teaches nothing
        return None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return list(plan_strings(plan_json, _plan_key(plan_json))[2])


def _plan_key(plan_json: Mapping[str, Any]) -> str:
    return next((k for k in plan_json if k not in ("hypervisor", "devices")), "")


# --- judging a plan -----------------------------------------------------------------------------
def _backing_expected(entry: hosts.DevEntry) -> str | None:
    spec = entry.backing
    if spec is None or spec.kind not in (hosts.TEXT, hosts.BYTES):
        return None
    raw = spec.content if isinstance(spec.content, bytes) else spec.content.encode("utf-8", "surrogatepass")
    raw = raw[:-1] if raw.endswith(b"\n") else raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "\x00not UTF-8"  # no plan may carry any text for it


def _entry(real: PlanCase, kind: str, major: int, minor: int) -> hosts.DevEntry | None:
    for entry in real.host.devices:
        if (entry.kind, entry.major, entry.minor) == (kind, major, minor):
            return entry
    return None


def _store_socket(real: PlanCase, request: Request) -> str | None:
    store = real.host.store
    if store is None:
        return None
    for entry in store.entries:
        if entry.rdev == (request.major, request.minor) and entry.node == hosts.NODE_BLOCK \
                and hosts.usable_name(entry.name):
            return str(Path(store.path) / "block" / "sockets" / entry.name)
    return None


def _device_paths(real: PlanCase, spec: OciSpec, planned: Any, data: Mapping[str, Any],
                  requests: Mapping[str, Request]) -> list[Violation]:
    out: list[Violation] = []
    name = planned.container_path
    request = requests.get(name) if name is not None else None
    mounts: dict[str, list[str]] = {}
    for mount in spec.mounts:  # several mounts may share a destination; one of them became the device
        mounts.setdefault(mount.destination, []).append(mount.source)
    if name is not None and request is None and name not in mounts:
        out.append(Violation(PATH_CHANGE, f"container path {name!r} is none of the inputs"))
    if request is not None and planned.plugin == "vhostuser":
        expected = _store_socket(real, request)
        if expected is not None and not same_path(planned.host_path, expected):
            out.append(Violation(PATH_CHANGE, f"{name!r}: socket {planned.host_path!r}, not {expected!r}"))
    elif request is not None and request.dev_type in ("b", "c", "u"):
        kind = "block" if request.dev_type == "b" else "char"
        entry = _entry(real, kind, request.major, request.minor)
        if entry is not None and entry.uevent is None:
            expected = hosts.expected_devname_path(entry.devname)
            if planned.host_path != expected:
                out.append(Violation(PATH_CHANGE, f"{name!r}: host path {planned.host_path!r}, but DEVNAME "
                                                  f"{entry.devname!r} names {expected!r}"))
    if name in mounts and planned.kind == "block" and not data.get("pmem") and planned.host_path not in mounts[name]:
        out.append(Violation(PATH_CHANGE, f"{name!r}: host path {planned.host_path!r}, but the mount's "
                                          f"source is {mounts[name]!r}"))
    loop = _entry(real, "block", int(data.get("major", 0) or 0), int(data.get("minor", 0) or 0))
    backing = data.get("backing_file") or (planned.host_path if data.get("pmem") else "")
    if backing and loop is not None:
        expected_backing = _backing_expected(loop)
        if expected_backing is not None and backing != expected_backing:
            out.append(Violation(PATH_CHANGE, f"{name!r}: backing file {backing!r}, but the host's is "
                                              f"{expected_backing!r}"))
    if planned.kind == "rng":
        given = real.options.get("entropy_source", "/dev/urandom")
        if isinstance(given, str) and data.get("filename") != given:
            out.append(Violation(PATH_CHANGE, f"entropy source {data.get('filename')!r}, not {given!r}"))
    return out


def _hypervisor_path(planned: Any, data: Mapping[str, Any], hypervisor: str) -> str:
    """The host path the hypervisor itself must be handed for this device, if any."""
    if planned.kind == "block":
        return str(planned.host_path)
    if planned.kind == "vhost-user":
        return str(data.get("socket_path") or "")
    if planned.kind == "rng" and hypervisor != "firecracker":
        return str(data.get("filename") or "")
    return ""


def json_fidelity(plan_json: Mapping[str, Any]) -> list[Violation]:
    """A plan's JSON must carry every path byte for byte: a lone surrogate (Python's stand-in for a
    byte that is not UTF-8) is written as a ``\\udcXX`` escape that JSON readers turn into U+FFFD,
    so the runtime reading the plan would hand the hypervisor another path."""
    bad = sorted({s for s in json_strings(plan_json) if any("\ud800" <= ch <= "\udfff" for ch in s)})
    return [Violation(PATH_CHANGE, f"the plan's JSON cannot carry {value!r} (a lone surrogate)") for value in bad[:3]]


def judge_plan(case: PlanCase, real: PlanCase, spec: OciSpec, result: Plan, plan_json: Mapping[str, Any],
               host: Any, session: Session) -> list[Violation]:
    requests = {d.container_path: Request(d.container_path, d.dev_type, d.major, d.minor) for d in spec.devices}
    out: list[Violation] = []
    values, problems, argv = plan_strings(plan_json, result.plan_key)
    out += problems
    out += json_fidelity(plan_json)
    for planned in result.devices:
        data = planned.to_json()
        request = requests.get(planned.container_path) if planned.container_path is not None else None
        if request is not None:
            found = node_violation(request, planned.host_path, host,
                                   store_socket=planned.plugin == "vhostuser" and planned.kind == "vhost-user")
            if found is not None:
                out.append(found)
        out += _device_paths(real, spec, planned, data, requests)
        wanted = _hypervisor_path(planned, data, result.settings.hypervisor)
        if wanted and values and wanted not in values:
            out.append(Violation(PATH_CHANGE, f"{planned.name!r}: {wanted!r} is not among what the "
                                              f"{result.plan_key} plan hands the hypervisor"))
    if argv:
        if is_clean_case(case):
            session.clean.learn(argv)
        elif unverified_options(argv, session.clean):
            twin = twin_argv(case, session)
            if twin:
                session.clean.learn(twin)
        out += option_violations(argv, session.clean, strings_in(real))
    return out


# --- raw readers ------------------------------------------------------------------------------------
def _plan_spec(spec: OciSpec, case: RawCase, session: Session, settings: SandboxSettings | None = None) -> Outcome:
    root = _fresh_root(session)
    try:
        host = hosts.build(hosts.HostSpec(), root)
        chosen = settings or load_settings(None, hypervisor=case.hypervisor, plugins=session.pm,
                                           overrides={CDI_DIRS: [str(root / "cdi")], "hotplug": case.hotplug})
        result = plan(spec, chosen, host=host.context(), plugins=session.pm)
        json.dumps(result.to_json())
    except Exception as exc:  # noqa: BLE001
        return failed(exc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    inputs = {d.container_path for d in spec.devices} | {m.destination for m in spec.mounts}
    return Outcome("accepted", [Violation(PATH_CHANGE, f"container path {d.container_path!r} is none of the inputs")
                                for d in result.devices if d.container_path is not None
                                and d.container_path not in inputs])


def run_raw_json(case: RawCase, session: Session) -> Outcome:
    """``config.json`` bytes through :func:`vmdev.oci.load_spec` (a file) and ``decode_json``."""
    path = Path(tempfile.mkstemp(prefix="config-", suffix=".json", dir=session.work)[1])
    try:
        path.write_bytes(case.data)
        try:
            spec = load_spec(path)
            again = parse_spec(decode_json(case.data, source="config.json"))
        except Exception as exc:  # noqa: BLE001
            return failed(exc)
    finally:
        path.unlink(missing_ok=True)
    document = json.loads(case.data)
    paths = [d.get("path") for d in (document.get("linux") or {}).get("devices") or []]
    mismatch = [Violation(PATH_CHANGE, f"container path {d.container_path!r} is not the document's {p!r}")
                for d, p in zip(spec.devices, paths, strict=False) if d.container_path != p]
    if spec != again:
        mismatch.append(Violation(PATH_CHANGE, "load_spec and decode_json+parse_spec read different specs"))
    outcome = _plan_spec(spec, case, session)
    outcome.violations[:0] = mismatch
    return outcome


def run_raw_toml(case: RawCase, session: Session) -> Outcome:
    """``configuration.toml`` bytes through :func:`vmdev.settings.load_settings`, then a plan."""
    root = _fresh_root(session)
    try:
        path = root / "configuration.toml"
        path.write_bytes(case.data)
        try:
            settings = load_settings(path, plugins=session.pm)
            settings = settings.with_options(**{CDI_DIRS: [str(root / "cdi")]})
        except Exception as exc:  # noqa: BLE001
            return failed(exc)
        return _plan_spec(OciSpec(), case, session, settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)


SURFACES: Final[Mapping[str, Surface]] = {
    s.name: s
    for s in (
        Surface("oci-json", strategies.raw_json_case, run_raw_json,
                "config.json bytes: wrong types, surrogates, deep nesting, huge numbers, broken UTF-8"),
        Surface("oci-devices", strategies.oci_devices, run_plan,
                "linux.devices + resources rules against sysfs uevents and /dev nodes that may disagree"),
        Surface("mounts", strategies.mount_case, run_plan,
                "OCI mounts: block nodes, image files, pmem loop mounts, FIFOs, symlink loops"),
        Surface("block-sysfs", strategies.block_sysfs, run_plan,
                "loop devices: backing_file, size, holders, partitions, mountinfo"),
        Surface("vfio", strategies.vfio_case, run_plan,
                "IOMMU groups, PCI attributes (resource, config, class, driver), mdev, AP, cdevs"),
        Surface("vhost-user-store", strategies.store_case, run_plan,
                "vhost-user store nodes and sockets, fs/9p/net settings"),
        Surface("settings", strategies.settings_case, run_plan,
                "every declared settings key of every installed plugin, right and wrong types, edges"),
        Surface("settings-toml", strategies.raw_toml_case, run_raw_toml,
                "configuration.toml bytes: Kata-shaped with hostile values, broken files"),
    )
}

