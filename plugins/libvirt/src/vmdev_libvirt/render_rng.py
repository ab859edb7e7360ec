"""vmdev-rng's ``RNGDev`` as libvirt's ``<rng model='virtio'>``.

The entropy source is ``<backend model='random'>PATH</backend>``; the empty source (QEMU's own
default) is ``<backend model='builtin'/>`` (QEMU's ``rng-builtin``, libvirt 6.1 and later).
"""

from __future__ import annotations

from typing import Any

from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget, alias
from vmdev_libvirt.xmltree import check_text, element


def render(device: Any, target: LibvirtTarget, hotplug: bool) -> LibvirtAttach:
    name = str(device.id)
    source = str(device.filename)
    if source:
        backend = element("backend", {"model": "random"},
                          text=check_text(source, device=name, field="entropy_source"))
    else:
        backend = element("backend", {"model": "builtin"})
    rng = element("rng", {"model": "virtio"}, backend, element("alias", {"name": alias(name)}),
                  target.address(name))
    return LibvirtAttach(devices=[rng], hotplugged=hotplug, details={"libvirt_element": "rng"})
