"""QEMU: ``-chardev socket`` + the device (and ``-netdev vhost-user`` for net), or QMP hot plug;
``-fsdev local`` + ``virtio-9p`` for the 9p share.

Every vhost-user device needs the guest RAM in a shared memory backend (the backend process maps
it): each rendering asks for ``MemoryNeeds(shared=True)`` and the core emits one
``memory-backend-memfd,share=on`` wired as the machine's memory. Without it QEMU starts and the
guest hangs at the first I/O, so this is never left to chance.

The 9p share is Kata's (govmm ``FSDevice``, qemu_arch_base.go ``generic9PVolume``):
``-fsdev local,id=..,path=DIR,security_model=none,multidevs=remap`` and
``-device virtio-9p-{pci,ccw,device},fsdev=..,mount_tag=TAG``. QEMU has no QMP command to add an
``-fsdev``, so the share is always cold-plugged (as Kata adds it before boot); the 9p server
reads guest memory in QEMU's own process, so no shared memory backend.
"""

from __future__ import annotations

from typing import Any, Final

from vmdev.backends.qemu import QemuTarget
from vmdev.errors import UnsupportedError
from vmdev.qemu import MemoryNeeds, OptValue, QemuAttach, QmpCommand, check_id, opts
from vmdev.targets import CCW, MMIO, PCI
from vmdev_vhostuser.config import net_interfaces
from vmdev_vhostuser.device import (
    VHOST_USER_BLK,
    VHOST_USER_FS,
    VHOST_USER_NET,
    VHOST_USER_SCSI,
    VhostUserDeviceAttrs,
    Virtio9pShare,
)
from vmdev_vhostuser.settings import FS_CACHE_SIZE_KEY

#: QEMU device per vhost-user type and transport
DRIVERS: Final[dict[str, dict[str, str]]] = {
    VHOST_USER_BLK: {PCI: "vhost-user-blk-pci", MMIO: "vhost-user-blk"},
    VHOST_USER_SCSI: {PCI: "vhost-user-scsi-pci", MMIO: "vhost-user-scsi"},
    VHOST_USER_FS: {PCI: "vhost-user-fs-pci", MMIO: "vhost-user-fs-device", CCW: "vhost-user-fs-ccw"},
    VHOST_USER_NET: {PCI: "virtio-net-pci", MMIO: "virtio-net-device", CCW: "virtio-net-ccw"},
}
NINEP_DRIVERS: Final = {PCI: "virtio-9p-pci", MMIO: "virtio-9p-device", CCW: "virtio-9p-ccw"}
SHARED_MEMORY: Final = MemoryNeeds(shared=True)


def render(device: VhostUserDeviceAttrs | Virtio9pShare, target: QemuTarget, hotplug: bool) -> QemuAttach:
    if isinstance(device, Virtio9pShare):
        return render_9p(device, target)
    name = device.name
    driver = _driver(device, target, name)
    chardev = check_id(f"chr-{device.id}", device=name)
    netdev = check_id(f"netdev-{device.id}", device=name) if device.type == VHOST_USER_NET else ""
    props = _device_props(device, target, chardev, netdev, name)
    details: dict[str, Any] = {"driver": driver, "chardev": chardev, **({"netdev": netdev} if netdev else {})}
    if not hotplug or target.transport == MMIO:
        return QemuAttach(
            args=_cold_args(device, driver, chardev, netdev, props),
            memory=SHARED_MEMORY,
            details=details,
        )
    bus = target.hotplug_bus(name)
    add = {"driver": driver, "id": device.id, **props, **({"bus": bus} if bus else {})}
    plug = [QmpCommand("chardev-add", {"id": chardev, "backend": _socket_backend(device)})]
    unplug = [QmpCommand("device_del", {"id": device.id})]
    if netdev:
        plug.append(QmpCommand("netdev_add", {"type": "vhost-user", "id": netdev, "chardev": chardev}))
        unplug.append(QmpCommand("netdev_del", {"id": netdev}))
    plug.append(QmpCommand("device_add", add))
    unplug.append(QmpCommand("chardev-remove", {"id": chardev}))
    return QemuAttach(
        hotplug=plug,
        unplug=unplug,
        hotplugged=True,
        memory=SHARED_MEMORY,
        details={**details, "bus": bus or ""},
    )


def _driver(device: VhostUserDeviceAttrs, target: QemuTarget, name: str) -> str:
    driver = DRIVERS[device.type].get(target.transport)
    if driver is None:
        raise UnsupportedError(
            f"QEMU has no {device.type} device for the {target.transport} transport of machine "
            f"{target.settings.machine_type}",
            device=name,
            field="type",
        )
    return driver


def _device_props(
    device: VhostUserDeviceAttrs, target: QemuTarget, chardev: str, netdev: str, name: str
) -> dict[str, OptValue]:
    if device.type == VHOST_USER_NET:
        props: dict[str, OptValue] = {"netdev": netdev, "mac": device.mac_address}
        if target.transport == PCI and not _msix(device, target):
            props["vectors"] = 0
        return {**props, **target.virtio_options()}
    props = {"chardev": chardev}
    if device.type == VHOST_USER_FS:
        if device.cache_size:
            raise UnsupportedError(
                f"QEMU's vhost-user-fs device has no DAX window (no cache-size property); "
                f"{device.cache_size} MiB were asked: set {FS_CACHE_SIZE_KEY} = 0",
                device=name,
                field=FS_CACHE_SIZE_KEY,
            )
        props["tag"] = device.tag
        if device.queue_size:
            props["queue-size"] = device.queue_size
        props.update(target.virtio_options())  # Kata: iommu_platform on CCW for the fs device
    return props


def _msix(device: VhostUserDeviceAttrs, target: QemuTarget) -> bool:
    for interface in net_interfaces(target.settings):
        if (interface.socket, interface.mac) == (device.socket_path, device.mac_address):
            return interface.msix
    return False


def _cold_args(
    device: VhostUserDeviceAttrs, driver: str, chardev: str, netdev: str, props: dict[str, OptValue]
) -> list[str]:
    socket: dict[str, OptValue | None] = {"id": chardev, "path": device.socket_path}
    if device.reconnect_time:
        socket["reconnect"] = device.reconnect_time
    args = ["-chardev", opts("socket", socket)]
    if netdev:
        args += ["-netdev", opts("vhost-user", {"id": netdev, "chardev": chardev})]
    return [*args, "-device", opts(driver, {"id": device.id, **props})]


def _socket_backend(device: VhostUserDeviceAttrs) -> dict[str, Any]:
    data: dict[str, Any] = {"addr": {"type": "unix", "data": {"path": device.socket_path}}, "server": False}
    if device.reconnect_time:
        data["reconnect"] = device.reconnect_time
    return {"type": "socket", "data": data}


def render_9p(device: Virtio9pShare, target: QemuTarget) -> QemuAttach:
    """``-fsdev local`` + the 9p device for the transport; cold plug only (see the module)."""
    fsdev = check_id(f"fsdev-{device.id}", device=device.name)
    driver = NINEP_DRIVERS.get(target.transport)
    if driver is None:
        raise UnsupportedError(
            f"QEMU has no virtio-9p device for the {target.transport} transport of machine "
            f"{target.settings.machine_type}",
            device=device.name,
            field="type",
        )
    fsdev_opts = opts(
        "local",
        {"id": fsdev, "path": device.host_path, "security_model": "none", "multidevs": "remap"},
    )
    args = [
        "-fsdev",
        fsdev_opts,
        "-device",
        opts(driver, {"id": device.id, "fsdev": fsdev, "mount_tag": device.mount_tag,
                      **target.virtio_options()}),
    ]
    return QemuAttach(
        args=args,
        details={"driver": driver, "fsdev": fsdev, "guest_mount": device.guest_mount()},
    )
