"""The watchdog on QEMU: ``-device i6300esb`` on the command line, or ``device_add`` on a hot-plug port."""

from __future__ import annotations

from typing import Final

from acme_vmdev_watchdog.device import WatchdogDev
from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.qemu import QemuAttach, QmpCommand, opts
from vmdev.targets import MMIO, RenderTarget

QEMU_DRIVER: Final = "i6300esb"


def render(device: WatchdogDev, target: RenderTarget, hotplug: bool) -> QemuAttach:
    """``target`` is QEMU's (the plugin chose this module by ``target.hypervisor``)."""
    assert isinstance(target, QemuTarget)
    if target.transport == MMIO:
        raise UnsupportedError(
            f"{QEMU_DRIVER} is a PCI device; machine {target.settings.machine_type} has no PCI bus",
            device=device.container_path,
            field="machine_type",
        )
    if not hotplug:
        return QemuAttach(args=["-device", opts(QEMU_DRIVER, {"id": device.id})])
    bus = target.hotplug_bus(device.container_path)
    add = {"driver": QEMU_DRIVER, "id": device.id, **({"bus": bus} if bus else {})}
    return QemuAttach(
        hotplug=[QmpCommand("device_add", add)],
        unplug=[QmpCommand("device_del", {"id": device.id})],
        hotplugged=True,
    )
