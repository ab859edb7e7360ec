"""QEMU: ``-object rng-random`` + ``-device virtio-rng-*``, or the QMP pair for hot plug.

The device is ``virtio-rng-pci`` (``-ccw`` on s390x, ``-device`` on microvm, as the target's
transport says) with id ``virtio-<backend id>``. Hot plug adds the backend object first and removes
it last. microvm has no hot plug, so there the RNG is cold-plugged even when hot plug is asked for.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.qemu import QemuTarget
from vmdev.qemu import QemuAttach, QmpCommand, opts
from vmdev.targets import MMIO
from vmdev_rng.device import RNGDev

#: QEMU id of the virtio-rng device: this prefix + the backend object's id (``RNGDev.id``)
DEVICE_ID_PREFIX: Final = "virtio-"


def render(device: RNGDev, target: QemuTarget, hotplug: bool) -> QemuAttach:
    driver = target.virtio_driver("virtio-rng")
    dev_id = DEVICE_ID_PREFIX + device.id
    backend: dict[str, Any] = {"id": device.id}
    if device.filename:
        backend["filename"] = device.filename
    if not hotplug or target.transport == MMIO:
        return QemuAttach(
            args=[
                "-object", opts("rng-random", backend),
                "-device", opts(driver, {"rng": device.id, "id": dev_id}),
            ],
            details={"driver": driver},
        )
    bus = target.hotplug_bus(device.id)
    add = {"driver": driver, "id": dev_id, "rng": device.id, **({"bus": bus} if bus else {})}
    return QemuAttach(
        hotplug=[
            QmpCommand("object-add", {"qom-type": "rng-random", **backend}),
            QmpCommand("device_add", add),
        ],
        unplug=[
            QmpCommand("device_del", {"id": dev_id}),
            QmpCommand("object-del", {"id": device.id}),
        ],
        hotplugged=True,
        details={"driver": driver, "bus": bus or ""},
    )
