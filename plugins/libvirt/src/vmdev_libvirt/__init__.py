"""vmdev-libvirt: the libvirt backend of vmdev (entry point ``libvirt``).

Public names for family plugins that render themselves for libvirt: :class:`LibvirtTarget` (the
render target, with :meth:`~LibvirtTarget.address` for a device's guest PCI address) and
:class:`LibvirtAttach` (what ``attach_options`` returns for it), :func:`element` and
:func:`alias` to build the XML. :class:`LibvirtPlan` is the plan's ``libvirt`` part.
"""

from vmdev_libvirt.domain import LibvirtPlan
from vmdev_libvirt.target import NAME, LibvirtAttach, LibvirtTarget, alias
from vmdev_libvirt.xmltree import element, pci_address, to_xml

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
