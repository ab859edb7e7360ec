"""vmdev-vfio's passthrough devices as libvirt ``<hostdev>`` elements.

* a PCI function: ``<hostdev mode='subsystem' type='pci' managed='no'>`` with ``<driver
  name='vfio'/>``, the host function's ``<source><address>`` and its guest ``<address>``;
* a mediated device: ``<hostdev mode='subsystem' type='mdev' model='vfio-pci'>`` with the mdev's
  UUID as ``<source><address uuid>``;
* an AP matrix device (s390x): the same with ``model='vfio-ap'`` and no PCI address.

The functions of one IOMMU group stay together, as the QEMU backend keeps them: all on slot 0 of
one ``pcie-root-port`` (function 0 with ``multifunction='on'``). Where Kata would place a
device on a switch port or a PCI bridge, the libvirt backend has no such topology yet and says
so; ``no-port`` and ``root-port`` both give the device a root port of its own (libvirt places
every PCIe device so). ``managed`` comes from ``libvirt_managed_hostdevs`` (default ``no``: the
host binds the functions to vfio-pci beforehand, as Kata expects).

What libvirt refuses is refused here first, naming the device: hot plug of a multi-function
group (libvirt attaches one function at a time and cannot make the slot multi-function in a
running domain) and IOMMUFD cdevs (Debian 12's libvirt 9.0 passes devices through the group API
only).
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from typing import Any, Final

from vmdev.errors import DeviceError, UnsupportedError
from vmdev.models import PCIePort
from vmdev_libvirt.settings import MANAGED_HOSTDEVS
from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget, alias
from vmdev_libvirt.xmltree import element, pci_address

_BDF: Final = re.compile(r"(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NORMAL: Final = "NORMAL"
MEDIATED: Final = "MEDIATED"
AP: Final = "AP"


def _type(function: Any) -> str:
    kind = function.type
    return str(getattr(kind, "name", kind)).upper()


def render(device: Any, target: LibvirtTarget, hotplug: bool) -> LibvirtAttach:
    name = str(device.container_path or device.id)
    _check_supported(device, name)
    functions = list(device.functions)
    hot = hotplug and not device.cold_plug
    if hot and len(functions) > 1:
        raise UnsupportedError(
            f"libvirt cannot hot-plug the {len(functions)} functions of IOMMU group "
            f"{device.iommu_group} as one multi-function device; cold-plug it (cold_plug_vfio)",
            device=name,
            field="hotplug",
        )
    managed = bool(target.settings.value(MANAGED_HOSTDEVS))
    if any(_type(f) == AP for f in functions):
        nodes = [_mdev(f, "vfio-ap", None, name) for f in functions]
    else:
        port = target.root_port(name, field="port")
        nodes = []
        for index, function in enumerate(functions):
            address = None if port is None else pci_address(
                port, 0, index, multifunction=index == 0 and len(functions) > 1)
            if _type(function) == MEDIATED:
                nodes.append(_mdev(function, "vfio-pci", address, name))
            else:
                nodes.append(_pci(function, address, managed, name))
    return LibvirtAttach(devices=nodes, hotplugged=hot,
                         details={"libvirt_element": "hostdev", "functions": len(nodes),
                                  "managed": managed})


def _check_supported(device: Any, name: str) -> None:
    backend = str(getattr(device.backend, "value", device.backend))
    if backend != "group":
        raise UnsupportedError(
            f"libvirt 9.0 passes VFIO devices through the group API only, not the {backend} cdev "
            f"{device.host_path}; request the group /dev/vfio/<group> instead",
            device=name,
            field="host_path",
        )
    if device.port in (PCIePort.SWITCH_PORT, PCIePort.BRIDGE_PORT):
        raise UnsupportedError(
            f"the libvirt backend places passed-through devices on root ports; {device.port.value} "
            "is not supported (hot_plug_vfio/cold_plug_vfio = \"root-port\")",
            device=name,
            field="port",
        )


def _pci(function: Any, address: ET.Element | None, managed: bool, name: str) -> ET.Element:
    match = _BDF.fullmatch(str(function.bdf))
    if match is None:
        raise DeviceError(f"{function.bdf!r} is not a PCI address", device=name, field="bdf")
    domain, bus, slot, func = match.groups()
    source = pci_address(int(bus, 16), int(slot, 16), int(func), domain=int(domain or "0", 16), guest=False)
    return element(
        "hostdev", {"mode": "subsystem", "type": "pci", "managed": managed},
        element("driver", {"name": "vfio"}),
        element("source", {}, source),
        element("alias", {"name": alias(str(function.id))}),
        address,
    )


def _mdev(function: Any, model: str, address: ET.Element | None, name: str) -> ET.Element:
    uuid = posixpath.basename(str(function.sysfs_dev).rstrip("/"))
    if not _UUID.fullmatch(uuid):
        raise DeviceError(f"{function.sysfs_dev!r} does not end in a mediated device's UUID", device=name,
                          field="sysfs_dev")
    return element(
        "hostdev", {"mode": "subsystem", "type": "mdev", "model": model},
        element("source", {}, element("address", {"uuid": uuid.lower()})),
        element("alias", {"name": alias(str(function.id))}),
        address,
    )
