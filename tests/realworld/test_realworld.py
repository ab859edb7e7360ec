"""Issue 10: Kata's shipped configuration files x OCI specs written by real engines, as they are.

Every engine spec (podman, runc, crun, containerd's ctr; real /dev/fuse, /dev/net/tun and a loop
device made here, read-write and ``:r``, and ``--privileged``) is planned with every rendered
Kata 4.1 configuration file (and the variants of rwinputs.matrix), cold and hot, by the
installed ``vmdev plan --config FILE --format json``. Every combination must plan or be refused
in one line; plans must be real (a QEMU pre-flight, the VMMs' API schemas) and honour the spec
and the Kata keys. What does not work today is marked ``xfail(strict=True)`` by cause
(rwinputs.causes), so a fix that lands without its marker turns the suite red.

Needs root, the engines and QEMU: a missing prerequisite fails the module with the command that
fixes it (never a skip).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from collections.abc import Mapping
from typing import Any

import pytest


def _prerequisites() -> str | None:
    from rwinputs import engines

    problems = []
    engine_problem = engines.missing_prerequisites()
    if engine_problem:
        problems.append(engine_problem)
    try:
        from rwinputs.preflight import missing_tools
    except ImportError as exc:
        problems.append(f"the e2e rig is not importable ({exc}): run pytest with "
                        '-o pythonpath="tests/realworld tests/e2e" and pip install qemu.qmp==0.0.6')
    else:
        problems += [f"missing {tool}" for tool in missing_tools()]
    try:
        import jsonschema  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        problems.append(f"{exc.name} is not installed: pip install jsonschema pyyaml")
    if shutil.which("vmdev") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "vmdev")):
        problems.append("the vmdev command is not installed: pip install ./core ./plugins/*")
    return "\n".join(f"  - {p}" for p in problems) or None


_PROBLEM = _prerequisites()
if _PROBLEM:
    pytest.fail(
        "The real-world suite (tests/realworld) cannot run on this machine:\n"
        f"{_PROBLEM}\nFix: as root, scripts/install-test-deps (it installs podman, runc, crun, containerd and "
        "QEMU), then run the suite as root.",
        pytrace=False,
    )

from rwinputs import apischema, engines  # noqa: E402
from rwinputs.causes import BY_KEY, KnownFailure, applying, diagnose, explain, predict  # noqa: E402
from rwinputs.matrix import Combo, Outcome  # noqa: E402
from rwinputs.preflight import Preflight  # noqa: E402
from rwinputs.session import ComboId, Session, combo_ids, combo_label  # noqa: E402

IDS = combo_ids()
LABELS = [combo_label(i) for i in IDS]
PREFLIGHT = Preflight()


# --- the inputs ------------------------------------------------------------------------------------
def _node(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return ("b" if stat.S_ISBLK(st.st_mode) else "c"), os.major(st.st_rdev), os.minor(st.st_rdev)


def _wanted(rw: Session, name: str) -> dict[str, tuple[str, str]]:
    """container path -> (host node, allowed access) each engine spec must carry."""
    fuse, tun, loop = rw.host.fuse, rw.host.tun, rw.host.loop
    return {
        "ctr-devices": {fuse: (fuse, "rwm"), tun: (tun, "rwm"), loop: (loop, "rwm")},
        "ctr-privileged": {fuse: (fuse, "rwm"), tun: (tun, "rwm"), loop: (loop, "rwm")},
        "podman-fuse": {fuse: (fuse, "rwm")},
        "podman-tun": {tun: (tun, "rwm")},
        "podman-loop": {loop: (loop, "rwm")},
        "podman-ro": {fuse: (fuse, "r"), tun: (tun, "r"), loop: (loop, "r")},
        "podman-renamed": {"/dev/xvdb": (loop, "rwm"), "/dev/fuse0": (fuse, "rw")},
        "podman-privileged": {fuse: (fuse, "rwm"), tun: (tun, "rwm"), loop: (loop, "rwm")},
    }.get(name, {})


def _access(spec: Mapping[str, Any], kind: str, major: int, minor: int) -> str | None:
    """Kata's reading of the cgroup rules: the first allow rule naming the device (or all)."""
    for rule in ((spec.get("linux") or {}).get("resources") or {}).get("devices") or []:
        if not rule.get("allow"):
            continue
        if rule.get("type") not in (None, "a", kind):
            continue
        if rule.get("major") not in (None, major) or rule.get("minor") not in (None, minor):
            continue
        return str(rule.get("access", ""))
    return None


@pytest.mark.parametrize("name", engines.SPEC_NAMES)
def test_each_engine_wrote_a_spec_with_the_host_devices_it_was_asked_for(rw: Session, name: str) -> None:
    spec = rw.specs[name]
    doc = spec.doc
    devices = {d["path"]: d for d in spec.devices}
    wanted = _wanted(rw, name)
    if not wanted:
        assert not devices, f"{spec.command} wrote devices {sorted(devices)}"
        return
    for container_path, (host, access) in wanted.items():
        assert container_path in devices, f"{spec.command}: no {container_path} in linux.devices"
        entry, (kind, major, minor) = devices[container_path], _node(host)
        assert (entry["type"], entry["major"], entry["minor"]) == (kind, major, minor), entry
        assert _access(doc, kind, major, minor) == access, f"{container_path}: cgroup access"


# --- the contract: a plan or one clean line ---------------------------------------------------------
@pytest.mark.parametrize("combo_id", IDS, ids=LABELS)
def test_every_combination_plans_or_is_refused_in_one_line(rw: Session, combo_id: ComboId) -> None:
    outcome = rw.outcomes[combo_id]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    if outcome.rc == 0:
        plan = outcome.plan
        assert isinstance(plan, dict), f"exit 0 without a JSON plan: {outcome.stdout[:300]!r}"
        section = rw.combo(combo_id).config.section
        assert plan.get("hypervisor") == rw.backends.get(section), plan.get("hypervisor")
        assert outcome.stderr == "", f"a plan with noise on stderr: {outcome.stderr!r}"
        return
    lines = outcome.stderr.splitlines()
    assert outcome.rc == 1, f"exit {outcome.rc}: {outcome.stderr!r}"
    assert len(lines) == 1 and lines[0].startswith("vmdev: error: "), outcome.stderr
    assert outcome.stdout == ""


# --- works as it is ---------------------------------------------------------------------------------
def _requested(rw: Session, combo: Combo, plan: Mapping[str, Any]) -> list[str]:
    """What the plan does not honour of the spec: every device there, read-only where asked."""
    planned = {d.get("container_path"): d for d in plan.get("devices") or []}
    problems = []
    for entry in combo.spec.devices:
        path = entry["path"]
        device = planned.get(path)
        if device is None:
            problems.append(f"{path}: not in the plan")
            continue
        access = _access(combo.spec.doc, entry["type"], entry["major"], entry["minor"])
        if device.get("kind") == "block" and access is not None and "w" not in access and not device.get("read_only"):
            problems.append(f"{path}: allowed {access!r} only, planned read-write")
    return problems


def _validate(rw: Session, combo_id: ComboId, combo: Combo, outcome: Outcome) -> list[str]:
    plan = outcome.plan
    if plan is None:
        return []
    problems = _requested(rw, combo, plan)
    backend, part = rw.backend_part(combo_id, plan)
    if backend == "qemu":
        complaint = PREFLIGHT.check(plan, part, hotplug=combo.hot)
        rw.counters["QEMU pre-flights run (distinct plans)"] = PREFLIGHT.runs
        if complaint:
            problems.append(f"QEMU pre-flight: {complaint}")
    elif backend == "cloud-hypervisor":
        problems += [f"Cloud Hypervisor API: {p}" for p in apischema.clh_problems(part)]
    elif backend == "firecracker":
        problems += [f"Firecracker API: {p}" for p in apischema.fc_problems(part)]
    rw.validation[combo_id] = problems
    return problems


def _mounted_rw(major: int, minor: int) -> str | None:
    """Where the host has block device major:minor mounted read-write (None: nowhere)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[2] == f"{major}:{minor}" and "rw" in fields[5].split(","):
                return fields[4]
    return None


def _expected_refusal(rw: Session, combo: Combo) -> str | None:
    """The refusal that is the right answer for this combination (a regex of its line), if any.

    * a file for a hypervisor no installed backend reads: the line names the hypervisor;
    * a spec handing over a disk the host has mounted read-write (``--privileged`` passes every
      host device, the root disk included): vmdev refuses it (unless
      allow_host_mounted_block_devices), where Kata would hot-plug it into the guest.
    """
    section = combo.config.section
    if section not in rw.backends:
        return rf"\b{re.escape(section)}\b"
    for entry in combo.spec.devices:
        if entry.get("type") != "b":
            continue
        access = _access(combo.spec.doc, "b", entry["major"], entry["minor"])
        if access and "w" in access and _mounted_rw(entry["major"], entry["minor"]):
            return r"mounted read-write on the host"
    return None


@pytest.mark.parametrize("combo_id", IDS, ids=LABELS)
def test_kata_configuration_works_as_it_is(rw: Session, combo_id: ComboId, request: pytest.FixtureRequest) -> None:
    combo, outcome = rw.combo(combo_id), rw.outcomes[combo_id]
    refusal = _expected_refusal(rw, combo)
    if refusal is not None:
        assert outcome.rc == 1 and re.search(refusal, outcome.error), f"expected a refusal ({refusal}): {outcome.stderr!r}"
        return
    predicted = predict(combo)
    if predicted:
        request.applymarker(pytest.mark.xfail(strict=True, raises=KnownFailure, reason=", ".join(predicted)))
    diagnosis = diagnose(combo, outcome, _validate(rw, combo_id, combo, outcome))
    rw.diagnoses[combo_id] = diagnosis
    if diagnosis.unexplained:
        pytest.fail("\n".join(diagnosis.unexplained), pytrace=False)
    if set(diagnosis.observed) != set(diagnosis.expected):
        pytest.fail(f"the known causes are out of date for this combination: predicted {list(diagnosis.expected)}, "
                    f"observed {list(diagnosis.observed)} (update rwinputs/causes.py and README.md)", pytrace=False)
    if diagnosis.observed:
        plan = outcome.plan
        details = [f"{key}: {explain(combo, plan, key) if plan is not None else outcome.error}"
                   for key in diagnosis.observed]
        raise KnownFailure("\n".join(details))


# --- the fork server is the installed CLI -----------------------------------------------------------
def test_the_fork_server_answers_like_the_installed_script(rw: Session) -> None:
    """One combination per distinct outcome (each error line; each backend's plans, hot and cold)
    is run again as a plain subprocess of the installed ``vmdev``: same status, stdout, stderr.
    (Privileged specs are left out: they name every host device, and other processes attach and
    mount loop devices between the two runs.)"""
    groups: dict[tuple[Any, ...], ComboId] = {}
    for combo_id, outcome in rw.outcomes.items():
        if "privileged" in combo_id[0]:
            continue  # every host device: other processes change them between the two runs
        key = (outcome.rc, outcome.stderr) if outcome.rc else (0, (outcome.plan or {}).get("hypervisor"), combo_id[2])
        groups.setdefault(key, combo_id)
    different = [combo_label(c) for c in groups.values() if rw.run_installed(c) != rw.outcomes[c]]
    rw.counters["outcomes compared with a plain subprocess"] = len(groups)
    assert not different, f"the fork server and the installed script differ on: {different}"
    assert len(groups) >= 4


def test_every_known_cause_applies_to_some_combination(rw: Session) -> None:
    """A cause that no input reaches would guard nothing (fixed ones guard against regressions)."""
    reached = {key for combo_id in IDS for key in applying(rw.combo(combo_id))}
    assert reached == set(BY_KEY), f"never reached: {sorted(set(BY_KEY) - reached)}"
