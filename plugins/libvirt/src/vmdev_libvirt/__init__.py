"""vmdev-libvirt: the libvirt backend of vmdev (entry point ``libvirt``).

Public names for family plugins that render themselves for libvirt: :class:`LibvirtTarget` (the
render target, with :meth:`~LibvirtTarget.address` for a device's guest PCI address) and
:class:`LibvirtAttach` (what ``attach_options`` returns for it), :func:`element` and
:func:`alias` to build the XML. :class:`LibvirtPlan` is the plan's ``libvirt`` part.

Every ``vmdev plan`` imports this package with the plugin, whatever the hypervisor, so the names
are imported on first use (:func:`vmdev.lazy.lazy_exports`): a QEMU plan never creates the
target's attrs classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev_libvirt.constants import NAME
    from vmdev_libvirt.domain import LibvirtPlan
    from vmdev_libvirt.target import LibvirtAttach, LibvirtTarget, alias
    from vmdev_libvirt.xmltree import element, pci_address, to_xml

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "NAME": "vmdev_libvirt.constants",
    "LibvirtAttach": "vmdev_libvirt.target",
    "LibvirtPlan": "vmdev_libvirt.domain",
    "LibvirtTarget": "vmdev_libvirt.target",
    "alias": "vmdev_libvirt.target",
    "element": "vmdev_libvirt.xmltree",
    "pci_address": "vmdev_libvirt.xmltree",
    "to_xml": "vmdev_libvirt.xmltree",
}

__all__ = [
    "NAME",
    "LibvirtAttach",
    "LibvirtPlan",
    "LibvirtTarget",
    "alias",
    "element",
    "pci_address",
    "to_xml",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
