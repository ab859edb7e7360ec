"""Test helpers for vmdev and its plugins, loaded by pytest as the ``vmdev`` plugin.

Fixtures:

``fake_host``
    a :class:`~vmdev.fakehost.FakeHost` rooted in ``tmp_path``: build a sysfs, ``/dev`` and
    ``/proc`` tree, then ``fake_host.context()`` gives the :class:`HostContext`.
``vmdev_plugins``
    a factory: ``vmdev_plugins("vmdev-rng")`` is a loaded plugin manager with
    only the core defaults and the named distributions (and any extra
    ``(name, plugin)`` pairs passed as ``extra=``), whatever else is installed.

No fixture touches the real host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from vmdev.fakehost import FakeHost
from vmdev.plugins import LoadPolicy, PluginManager

__all__ = ["FakeHost", "PluginFactory", "fake_host", "vmdev_plugins"]

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
