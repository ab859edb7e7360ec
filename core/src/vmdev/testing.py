"""Test helpers for vmdev and its plugins, loaded by pytest as the ``vmdev`` plugin.

Fixtures:

``fake_host``
    a :class:`~vmdev.fakehost.FakeHost` rooted in ``tmp_path``: build a sysfs, ``/dev`` and
    ``/proc`` tree, then ``fake_host.context()`` gives the :class:`HostContext`.
``vmdev_plugins``
    a factory: ``vmdev_plugins("vmdev-rng")`` is a loaded plugin manager with
    only the core defaults and the named distributions (and any extra
    ``(name, plugin)`` pairs passed as ``extra=``), whatever else is installed.
``startup_probe``
    ``startup_probe("vmdev-rng", *argv)``: what a fresh interpreter loading only that distribution's
    plugins (``""``: none) imports and which attrs classes it creates, to load them (no ``argv``)
    or to run ``vmdev ARGV`` (:class:`StartupReport`). Every plugin's entry module is imported on
    every ``vmdev plan``: this is how a plugin tests that it stays light (issue 13).
``null_plan``
    ``vmdev plan`` arguments for an OCI spec of one ``/dev/null`` (char 1:3) on a fake sysfs.

No fixture touches the real host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from vmdev.fakehost import FakeHost
from vmdev.plugins import LoadPolicy, PluginManager

__all__ = [
    "FakeHost", "PluginFactory", "StartupProbe", "StartupReport", "fake_host", "null_plan", "startup_probe",
    "vmdev_plugins",
]

PluginFactory = Callable[..., PluginManager]


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    """A fake host tree under ``tmp_path``."""
    return FakeHost(tmp_path / "host")


@pytest.fixture
def vmdev_plugins() -> PluginFactory:
    """Factory for a plugin manager that loads only the named distributions."""

    def make(
        *distributions: str, extra: Iterable[tuple[str, object]] = (), trace: bool = False
    ) -> PluginManager:
        policy = LoadPolicy(only=tuple(distributions), trace=trace)
        return PluginManager(policy, plugins=extra).load()

    return make


class StartupReport(NamedTuple):
    """What one fresh interpreter did (see :func:`startup_probe`)."""

    #: the exit status of ``vmdev ARGV`` (0 when only the plugins were loaded)
    code: int
    #: what ``vmdev ARGV`` printed on stdout
    stdout: str
    #: every module imported, sorted
    modules: list[str]
    #: the module of every attrs class created, in order
    classes: list[str]

    def of(self, package: str) -> list[str]:
        """The modules of ``package`` imported (the package itself included)."""
        return [m for m in self.modules if m == package or m.startswith(package + ".")]

    def classes_of(self, package: str) -> list[str]:
        """The modules of ``package`` whose attrs classes were created (one entry per class)."""
        return [m for m in self.classes if m == package or m.startswith(package + ".")]


#: run in the probed interpreter: counts attrs classes (attrs' private class builder: a test aid,
#: not an API), then loads the plugins or runs ``vmdev ARGV``; one JSON line on the real stdout
_PROBE = """
import io, json, sys
import attr._make as make
built = []
build_class = make._ClassBuilder.build_class
def counting(self):
    cls = build_class(self)
    built.append(cls.__module__)
    return cls
make._ClassBuilder.build_class = counting
out, sys.stdout = sys.stdout, io.StringIO()
code = 0
if sys.argv[1:]:
    sys.argv = ["vmdev", *sys.argv[1:]]
    from vmdev.cli import main
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
else:
    from vmdev.plugins import PluginManager
    PluginManager().load()
printed, sys.stdout = sys.stdout.getvalue(), out
print(json.dumps({"code": code, "stdout": printed, "modules": sorted(sys.modules), "classes": built}))
"""

StartupProbe = Callable[..., StartupReport]


@pytest.fixture
def startup_probe(tmp_path: Path) -> StartupProbe:
    """See the module documentation."""

    def probe(distribution: str, *argv: str) -> StartupReport:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VMDEV_")}
        env["VMDEV_PLUGINS"] = distribution
        done = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, check=True)
        found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return StartupReport(**found)

    return probe


@pytest.fixture
def null_plan(tmp_path: Path) -> list[str]:
    """See the module documentation."""
    host = FakeHost(tmp_path / "null-host")
    host.uevent("char", 1, 3, "MAJOR=1\nMINOR=3\nDEVNAME=null\n")
    spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/"}, "root": {"path": "rootfs"},
            "linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}
    spec_file = tmp_path / "null-spec.json"
    spec_file.write_text(json.dumps(spec))
    return ["plan", "--format", "json", "--sysfs-root", str(host.sysfs), str(spec_file)]
