"""vmdev-vhostuser's devices as libvirt elements served by an external vhost-user backend.

* vhost-user-blk: ``<disk type='vhostuser' device='disk'>`` with ``<source type='unix' path>``
  (and ``<reconnect>`` when a reconnect time is set), ``<target dev='vdX' bus='virtio'>`` from
  Kata's sandbox block index;
* virtio-fs: ``<filesystem type='mount'>`` with ``<driver type='virtiofs' queue>``, the daemon's
  socket as ``<source socket>`` (libvirt starts no virtiofsd then) and the tag as ``<target dir>``;
* vhost-user-net: ``<interface type='vhostuser'>`` with the MAC, ``<source type='unix' mode='client'>``
  and ``<model type='virtio'>``.

Each needs the guest RAM shared with the backend process: the domain gets ``<memoryBacking>``
with a shared memfd source (the QEMU backend's ``memory-backend-memfd,share=on``). libvirt has
no vhost-user-scsi device (its ``vhost_scsi`` is the kernel's vhost), and QEMU's virtio-fs has
no DAX window: both are refused. Where the QEMU backend turns MSI-X off for vhost-user-net (QEMU
7.2's masking crash), libvirt has no such switch in a device element; the plan says so
(``details.msix``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Final

from vmdev.errors import UnsupportedError
from vmdev.qemu import MemoryNeeds
from vmdev_libvirt.render_block import drive_name
from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget, alias
from vmdev_libvirt.xmltree import check_text, element

VHOST_USER_SCSI: Final = "vhost-user-scsi-pci"
VHOST_USER_NET: Final = "virtio-net-pci"
VHOST_USER_BLK: Final = "vhost-user-blk-pci"
VHOST_USER_FS: Final = "vhost-user-fs-pci"
SHARED_MEMORY: Final = MemoryNeeds(shared=True)
FS_CACHE_SIZE_KEY: Final = "virtio_fs_cache_size"


def render(device: Any, target: LibvirtTarget, hotplug: bool) -> LibvirtAttach:
    name = str(device.container_path or device.id)
    kind = str(device.type)
    socket = check_text(str(device.socket_path), device=name, field="socket_path")
    if kind == VHOST_USER_BLK:
        node, details = _blk(device, target, name, socket), {"libvirt_element": "disk"}
    elif kind == VHOST_USER_FS:
        node, details = _fs(device, target, name, socket), {"libvirt_element": "filesystem"}
    elif kind == VHOST_USER_NET:
        node = _net(device, target, name, socket)
        details = {"libvirt_element": "interface", "msix": "on (libvirt cannot set vectors=0)"}
    else:
        raise UnsupportedError(
            f"libvirt has no {kind} device (its vhost_scsi is the kernel's vhost, not vhost-user)",
            device=name,
            field="type",
        )
    return LibvirtAttach(devices=[node], hotplugged=hotplug, memory=SHARED_MEMORY, details=details)


def _source(device: Any, socket: str, **extra: str) -> ET.Element:
    reconnect = int(device.reconnect_time or 0)
    return element(
        "source", {"type": "unix", "path": socket, **extra},
        element("reconnect", {"enabled": "yes", "timeout": reconnect}) if reconnect else None,
    )


def _blk(device: Any, target: LibvirtTarget, name: str, socket: str) -> ET.Element:
    return element(
        "disk", {"type": "vhostuser", "device": "disk"},
        element("driver", {"name": "qemu", "type": "raw"}),
        _source(device, socket),
        element("target", {"dev": drive_name("vd", max(int(device.index), 0), device=name), "bus": "virtio"}),
        element("alias", {"name": alias(str(device.id))}),
        target.address(name),
    )


def _fs(device: Any, target: LibvirtTarget, name: str, socket: str) -> ET.Element:
    if device.cache_size:
        raise UnsupportedError(
            f"QEMU's vhost-user-fs device has no DAX window; {device.cache_size} MiB were asked: set "
            f"{FS_CACHE_SIZE_KEY} = 0",
            device=name,
            field=FS_CACHE_SIZE_KEY,
        )
    return element(
        "filesystem", {"type": "mount"},
        element("driver", {"type": "virtiofs", "queue": int(device.queue_size) or None}),
        element("source", {"socket": socket}),
        element("target", {"dir": check_text(str(device.tag), device=name, field="tag")}),
        element("alias", {"name": alias(str(device.id))}),
        target.address(name),
    )


def _net(device: Any, target: LibvirtTarget, name: str, socket: str) -> ET.Element:
    return element(
        "interface", {"type": "vhostuser"},
        element("mac", {"address": str(device.mac_address).lower()}) if device.mac_address else None,
        _source(device, socket, mode="client"),
        element("model", {"type": "virtio"}),
        element("alias", {"name": alias(str(device.id))}),
        target.address(name),
    )
