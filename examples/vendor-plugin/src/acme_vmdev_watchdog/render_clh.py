"""The watchdog on Cloud Hypervisor: its virtio-watchdog (``VmConfig.watchdog``), boot only."""

from __future__ import annotations

from acme_vmdev_watchdog.device import WatchdogDev
from vmdev.backends.clh import ClhAttach
from vmdev.targets import RenderTarget


def render(device: WatchdogDev, target: RenderTarget, hotplug: bool) -> ClhAttach:
    """Cloud Hypervisor cannot hot-plug it: the core refuses a hot plug of a VmConfig-only device."""
    return ClhAttach(vm_config={"watchdog": True})
