"""One run of the real-world matrix: inputs generated here, every ``vmdev plan`` run up front.

:class:`Session` writes the engine specs (:func:`rwinputs.engines.generate`) and the config
variants, asks the installed ``vmdev`` which backends read which ``[hypervisor.X]`` sections,
then runs every combination through :class:`rwinputs.cliserver.CliServer` (one per CPU) and
keeps the outcomes; the tests only look them up. Validation (QEMU pre-flight, API schemas) runs
in the tests, deduplicated by :class:`rwinputs.preflight.Preflight`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from rwinputs import engines, kata
from rwinputs.causes import Diagnosis
from rwinputs.cliserver import CliServer
from rwinputs.matrix import VARIANTS, Combo, Config, Outcome, Spec, corpus_configs, write_variants
from vmdev_cli import clean_env, run_vmdev, vmdev_executable

ComboId = tuple[str, str, bool]  # (spec name, config key, hot)


def combo_ids() -> list[ComboId]:
    """Every combination, in a stable order (known without generating anything)."""
    ids = [(spec, config.key, hot) for config in kata.corpus() for spec in engines.SPEC_NAMES
           for hot in (False, True)]
    ids += [(spec, f"variant/{variant.name}", hot) for variant in VARIANTS for spec in variant.specs
            for hot in (False, True)]
    return ids


def combo_label(combo_id: ComboId) -> str:
    spec, config, hot = combo_id
    return f"{spec}|{config}|{'hot' if hot else 'cold'}"


@attrs.define
class Session:
    workdir: Path
    vmdev: str
    specs: dict[str, Spec]
    configs: dict[str, Config]
    host: engines.HostDevices
    backends: dict[str, str] = attrs.field(factory=dict)  # kata section -> backend name
    plan_keys: dict[str, str] = attrs.field(factory=dict)  # backend name -> plan key
    outcomes: dict[ComboId, Outcome] = attrs.field(factory=dict)
    diagnoses: dict[ComboId, Diagnosis] = attrs.field(factory=dict)
    validation: dict[ComboId, list[str]] = attrs.field(factory=dict)
    counters: dict[str, int] = attrs.field(factory=dict)  # for the report (pre-flights run...)

    @classmethod
    @contextlib.contextmanager
    def start(cls, workdir: Path) -> Iterator[Session]:
        with engines.generate(workdir / "specs") as (host, written):
            configs = {c.key: c for c in corpus_configs()}
            configs.update({c.key: c for _, c in write_variants(workdir / "variants")})
            session = cls(workdir, vmdev_executable(), {s.name: Spec.of(s) for s in written}, configs, host)
            session._read_backends()
            yield session

    def _read_backends(self) -> None:
        done = run_vmdev("backends", "--json")
        if done.returncode != 0:
            raise RuntimeError(f"vmdev backends --json failed ({done.returncode}): {done.stderr.strip()}")
        for backend in json.loads(done.stdout):
            self.plan_keys[backend["name"]] = backend["plan_key"]
            for section in backend.get("kata_sections") or []:
                self.backends[section] = backend["name"]

    def combo(self, combo_id: ComboId) -> Combo:
        spec, config, hot = combo_id
        return Combo(self.specs[spec], self.configs[config], hot)

    def run_all(self, ids: list[ComboId]) -> None:
        servers = [CliServer(self.vmdev, clean_env()) for _ in range(max(1, os.cpu_count() or 1))]
        try:
            def one(item: tuple[int, ComboId]) -> tuple[ComboId, Outcome]:
                index, combo_id = item
                rc, out, err = servers[index % len(servers)].run(self.combo(combo_id).argv())
                return combo_id, Outcome(rc, out, err)

            with ThreadPoolExecutor(len(servers)) as pool:
                self.outcomes.update(pool.map(one, enumerate(ids)))
        finally:
            for server in servers:
                server.close()

    def run_installed(self, combo_id: ComboId) -> Outcome:
        """The same plan through a plain subprocess of the installed script."""
        done = run_vmdev(*self.combo(combo_id).argv())
        return Outcome(done.returncode, done.stdout, done.stderr)

    def backend_part(self, combo_id: ComboId, plan: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """(backend name, the plan's part for it)."""
        backend = str(plan.get("hypervisor"))
        part: Mapping[str, Any] = plan.get(self.plan_keys.get(backend, backend)) or {}
        return backend, part
