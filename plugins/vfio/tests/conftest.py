"""Fixtures: the L1 machine's real sysfs (see :mod:`vmdev_vfio.testing`) and a planner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vmdev.oci import parse_spec
from vmdev.planner import Pipeline, Plan, plan
from vmdev.settings import SandboxSettings
from vmdev.testing import FakeHost
from vmdev_vfio.testing import build_l1_host


@pytest.fixture
def l1_host(fake_host: FakeHost) -> FakeHost:
    """Debian 6.1's view of the L1 machine (legacy groups only)."""
    return build_l1_host(fake_host)


@pytest.fixture
def l1_iommufd_host(fake_host: FakeHost) -> FakeHost:
    """The IOMMUFD-enabled 6.12 kernel's view: groups plus /dev/vfio/devices and /dev/iommu."""
    return build_l1_host(fake_host, iommufd=True)


@pytest.fixture
def make_plan(vmdev_plugins: Any) -> Callable[..., Plan]:
    """``make_plan(host, *devices, **settings)`` with only the core and vmdev-vfio loaded.

    Settings keys that are not SandboxSettings fields become options of the hypervisor section
    (Kata's keys), except those Kata reads from ``[runtime]`` (``vfio_mode``)."""
    pm = vmdev_plugins("vmdev-vfio")

    def run(host: FakeHost, *devices: dict[str, Any], **settings: Any) -> Plan:
        spec = parse_spec({"linux": {"devices": list(devices)}})
        return plan(spec, sandbox_settings(settings), host=host.context(), plugins=pm)

    return run


@pytest.fixture
def start(vmdev_plugins: Any) -> Callable[..., Pipeline]:
    """``start(host, **settings)``: the core's pipeline with only vmdev-vfio loaded, to build and
    render devices one by one (without making a Plan)."""
    pm = vmdev_plugins("vmdev-vfio")

    def run(host: FakeHost, **settings: Any) -> Pipeline:
        return Pipeline.start(sandbox_settings(settings), host.context(), pm)

    return run


def sandbox_settings(settings: dict[str, Any]) -> SandboxSettings:
    fields = {"hypervisor", "machine_type", "memory_mib", "hotplug"}
    runtime_keys = {"vfio_mode"}
    options = {k: v for k, v in settings.items() if k not in fields | runtime_keys}
    runtime = {k: v for k, v in settings.items() if k in runtime_keys}
    base = {k: v for k, v in settings.items() if k in fields}
    return SandboxSettings(**base, options=options, runtime=runtime)
