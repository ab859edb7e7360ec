"""Run the real ``vmdev`` command line from the tests' environment and return its plan."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def vmdev_executable() -> str:
    """The ``vmdev`` script installed next to this Python (the tox env's), else on PATH."""
    beside = Path(sys.executable).with_name("vmdev")
    if beside.exists():
        return str(beside)
    found = shutil.which("vmdev")
    if found is None:
        raise RuntimeError(
            "the vmdev command is not installed in this environment (pip install ./core)"
        )
    return found


def clean_env() -> dict[str, str]:
    """The environment vmdev runs in: the caller's without VMDEV_* (which would change the plugins)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VMDEV_")}


def run_vmdev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``vmdev ARGS`` with every installed plugin (VMDEV_* variables cleared unless given)."""
    base = clean_env()
    return subprocess.run(
        [vmdev_executable(), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def plan(
    spec: dict[str, Any], workdir: Path, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Write ``spec`` as config.json in ``workdir``, run ``vmdev plan --format json ARGS`` on it."""
    config = workdir / "config.json"
    config.write_text(json.dumps(spec), encoding="utf-8")
    done = run_vmdev("plan", "--format", "json", *args, str(config), env=env)
    if done.returncode != 0:
        raise AssertionError(f"vmdev plan failed ({done.returncode}): {done.stderr.strip()}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def oci_spec(
    *devices: dict[str, Any], mounts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A minimal OCI runtime spec with these ``linux.devices`` and ``mounts``."""
    return {"ociVersion": "1.0.2", "linux": {"devices": list(devices)}, "mounts": mounts or []}
