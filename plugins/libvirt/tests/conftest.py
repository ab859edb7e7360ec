"""Helpers for vmdev-libvirt's unit tests: render family devices for libvirt through the real
plugin manager (this plugin and the installed families, nothing else)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import pytest

from vmdev.planner import Plan, PlannedDevice, assemble
from vmdev.plugins import LoadPolicy, PluginManager, get_plugin_manager
from vmdev.settings import SandboxSettings
from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget

DISTRIBUTIONS = ("vmdev-libvirt", "vmdev-rng", "vmdev-block", "vmdev-vfio", "vmdev-vhostuser")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def pm() -> PluginManager:
    """This plugin and the installed families it renders (no other plugin of the environment)."""
    return get_plugin_manager(LoadPolicy(only=tuple(d for d in DISTRIBUTIONS if _installed(d))))


Settings = Callable[..., SandboxSettings]


@pytest.fixture
def settings(pm: PluginManager) -> Settings:
    def make(machine: str = "q35", **options: Any) -> SandboxSettings:
        return pm.prepare_settings(SandboxSettings(hypervisor="libvirt", machine_type=machine, options=options))

    return make


class Renderer:
    """Renders devices for one libvirt target, and assembles them into a plan."""

    def __init__(self, pm: PluginManager, settings: SandboxSettings) -> None:
        self.pm = pm
        self.settings = settings
        self.target = LibvirtTarget(settings)
        self.planned: list[PlannedDevice] = []

    def render(self, device: Any, *, hotplug: bool = False, name: str = "") -> LibvirtAttach:
        name = name or getattr(device, "container_path", "") or device.id
        attach = self.pm.attach_options(device, self.target, hotplug, name=name)
        assert isinstance(attach, LibvirtAttach)
        self.planned.append(PlannedDevice(device=device, plugin="test", container_path=name,
                                          host_path="", attach=attach))
        return attach

    def plan(self) -> Plan:
        return assemble(self.settings, self.target, tuple(self.planned), plugins=self.pm)


@pytest.fixture
def renderer(pm: PluginManager, settings: Settings) -> Callable[..., Renderer]:
    def make(machine: str = "q35", **options: Any) -> Renderer:
        return Renderer(pm, settings(machine, **options))

    return make

