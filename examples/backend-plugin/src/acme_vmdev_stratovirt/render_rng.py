"""vmdev-rng's ``RNGDev`` on StratoVirt: ``-object rng-random`` + ``-device virtio-rng-*``.

As its guidebook documents (``-object rng-random,id=..,filename=..`` and ``-device
virtio-rng-pci,rng=..,bus=pcie.0,addr=..,id=..``). StratoVirt cannot hot-plug an RNG (QMP
``device_add`` takes block, net and VFIO devices only), so the RNG is always on the command line,
as Kata's stratovirt.go puts it. Its ``rng-random`` requires a file, so ``entropy_source = ""``
("the hypervisor's default") becomes ``/dev/urandom``, which is Kata's default too.
"""

from __future__ import annotations

from typing import Any, Final

from acme_vmdev_stratovirt.cmdline import options
from acme_vmdev_stratovirt.target import StratoVirtAttach, StratoVirtTarget

DEFAULT_SOURCE: Final = "/dev/urandom"
#: the virtio-rng device's id: this prefix + the backend object's id (as vmdev-rng does on QEMU)
DEVICE_ID_PREFIX: Final = "virtio-"


def render(device: Any, target: StratoVirtTarget, hotplug: bool) -> StratoVirtAttach:
    """``device`` is a ``vmdev_rng.RNGDev`` (``id``, ``filename``)."""
    name = device.id
    driver = target.virtio_driver("virtio-rng")
    backend = options("rng-random", {"id": device.id, "filename": device.filename or DEFAULT_SOURCE},
                      device=name, fields={"filename": "entropy_source"})
    place = target.cold_place(name)
    frontend = options(driver, {"id": DEVICE_ID_PREFIX + device.id, "rng": device.id, **place}, device=name)
    return StratoVirtAttach(args=("-object", backend, "-device", frontend), details={"driver": driver})
