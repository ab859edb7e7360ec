"""The vmdev-rng plugin: the sandbox's virtio-rng device.

Settings (Kata's keys): ``entropy_source`` (default ``/dev/urandom``) must be
one of ``valid_entropy_sources`` (default ``/dev/urandom``, ``/dev/random``,
``""``); ``""`` lets QEMU pick its default source.

Renders:

* QEMU: ``-object rng-random,id=rng0,filename=SRC`` + ``-device virtio-rng-pci``
  (``-ccw`` on s390x, ``-device`` on microvm), or the QMP ``object-add`` +
  ``device_add`` pair when hot plugging (``device_del`` + ``object-del`` to unplug);
* Cloud Hypervisor: ``VmConfig.rng`` (``src``, ``iommu``); it cannot hot-plug an RNG;
* Firecracker: ``PUT /entropy`` (pre-boot only). Firecracker always draws from
  the host kernel's CSPRNG, so only ``/dev/urandom`` (or ``""``) can be honoured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from vmdev import hookimpl
from vmdev.errors import ConfigError, DeviceError, UnsupportedError
from vmdev.host import HostContext
from vmdev.models import RNG_ID, Device, RNGDev
from vmdev.qemu import QemuAttach, QmpCommand, opts
from vmdev.settings import SandboxSettings
from vmdev.targets import (
    MMIO,
    ApiRequest,
    AttachOptions,
    ClhAttach,
    ClhTarget,
    FirecrackerAttach,
    FirecrackerTarget,
    QemuTarget,
    RenderTarget,
)

DEFAULT_ENTROPY_SOURCE: Final = "/dev/urandom"
DEFAULT_VALID_ENTROPY_SOURCES: Final = ("/dev/urandom", "/dev/random", "")
#: QEMU device id of the virtio-rng device (the backend object is ``RNGDev.id``)
DEVICE_ID_PREFIX: Final = "virtio-"


def entropy_settings(settings: SandboxSettings) -> tuple[str, tuple[str, ...]]:
    """The configured entropy source and the allowed list, type-checked."""
    source = settings.str_option("entropy_source", DEFAULT_ENTROPY_SOURCE)
    valid: Any = settings.option("valid_entropy_sources", list(DEFAULT_VALID_ENTROPY_SOURCES))
    if not isinstance(valid, list | tuple) or not all(isinstance(v, str) for v in valid):
        raise ConfigError("must be a list of paths", device=RNG_ID, field="valid_entropy_sources")
    return source, tuple(valid)


@hookimpl
def check_settings(settings: SandboxSettings) -> None:
    source, valid = entropy_settings(settings)
    if source not in valid:
        allowed = ", ".join(repr(v) for v in valid)
        raise ConfigError(
            f"{source!r} is not an allowed entropy source (valid_entropy_sources: {allowed})",
            device=RNG_ID,
            field="entropy_source",
        )


@hookimpl
def sandbox_devices(settings: SandboxSettings, host: HostContext) -> Sequence[Device]:
    source, _ = entropy_settings(settings)
    if source:
        try:
            host.stat(str(host.dev_path(source)))
        except OSError as exc:
            raise DeviceError(
                f"entropy source {source} is not usable on this host: {exc.strerror}",
                device=RNG_ID,
                field="entropy_source",
            ) from None
    return [RNGDev(id=RNG_ID, filename=source)]


@hookimpl
def attach_options(device: Device, target: RenderTarget, hotplug: bool) -> AttachOptions | None:
    if not isinstance(device, RNGDev):
        return None
    if isinstance(target, QemuTarget):
        return _qemu(device, target, hotplug)
    if isinstance(target, ClhTarget):
        src = device.filename or DEFAULT_ENTROPY_SOURCE
        return ClhAttach(vm_config={"rng": {"src": src, "iommu": False}})
    if isinstance(target, FirecrackerTarget):
        if device.filename not in ("", DEFAULT_ENTROPY_SOURCE):
            raise UnsupportedError(
                f"Firecracker's entropy device always uses the host kernel's CSPRNG; "
                f"entropy_source {device.filename} cannot be honoured (use /dev/urandom)",
                device=device.id,
                field="entropy_source",
            )
        return FirecrackerAttach(requests=[ApiRequest("PUT", "/entropy", {})])
    return None


def _qemu(device: RNGDev, target: QemuTarget, hotplug: bool) -> QemuAttach:
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
