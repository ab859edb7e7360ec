"""vmdev-cdi: the Container Device Interface in Python, and CDI as an input source of vmdev.

The library part follows the Go reference (``tags.cncf.io/container-device-interface``) rule
for rule and error text for error text; it edits OCI specs given as decoded ``config.json``
dicts and needs nothing else of vmdev::

    from vmdev_cdi import Registry, inject, parse_annotations

    registry = Registry(["/etc/cdi", "/var/run/cdi"])
    registry.list_devices()            # ['nvidia.com/gpu=0', 'nvidia.com/gpu=all', ...]
    registry.errors                    # {'/etc/cdi/broken.yaml': ['failed to load CDI Spec ...']}
    _, names = parse_annotations(oci["annotations"])
    inject(oci, names)                 # edits the OCI spec in place, as containerd and Kata do

The vmdev plugin is :mod:`vmdev_cdi.plugin` (entry point ``cdi``). Every ``vmdev plan`` imports
this package with the plugin, so the names here are imported on first use
(:func:`vmdev.lazy.lazy_exports`), not with the package: a plan without CDI never creates the
model's attrs classes or imports yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.lazy import lazy_exports

if TYPE_CHECKING:
    from vmdev_cdi.annotations import annotation_key, annotation_value, parse_annotations, update_annotations
    from vmdev_cdi.constants import ANNOTATION_PREFIX, DEFAULT_SPEC_DIRS
    from vmdev_cdi.edits import apply_edits, fill_missing_info
    from vmdev_cdi.errors import CDIError, SpecError, UnresolvableError
    from vmdev_cdi.model import (
        ContainerEdits,
        Device,
        DeviceNode,
        Hook,
        IntelRdt,
        LinuxNetDevice,
        Mount,
        SpecDocument,
    )
    from vmdev_cdi.names import (
        is_qualified_name,
        parse_device,
        parse_qualified_name,
        parse_qualifier,
        qualified_name,
        validate_class_name,
        validate_device_name,
        validate_vendor_name,
    )
    from vmdev_cdi.registry import Registry, inject, scan_spec_dirs
    from vmdev_cdi.spec import CDIDevice, Spec, new_spec, parse_spec, read_spec
    from vmdev_cdi.version import CURRENT_VERSION, minimum_required_version, validate_version

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "ANNOTATION_PREFIX": "vmdev_cdi.constants",
    "DEFAULT_SPEC_DIRS": "vmdev_cdi.constants",
    "annotation_key": "vmdev_cdi.annotations",
    "annotation_value": "vmdev_cdi.annotations",
    "parse_annotations": "vmdev_cdi.annotations",
    "update_annotations": "vmdev_cdi.annotations",
    "apply_edits": "vmdev_cdi.edits",
    "fill_missing_info": "vmdev_cdi.edits",
    "CDIError": "vmdev_cdi.errors",
    "SpecError": "vmdev_cdi.errors",
    "UnresolvableError": "vmdev_cdi.errors",
    "ContainerEdits": "vmdev_cdi.model",
    "Device": "vmdev_cdi.model",
    "DeviceNode": "vmdev_cdi.model",
    "Hook": "vmdev_cdi.model",
    "IntelRdt": "vmdev_cdi.model",
    "LinuxNetDevice": "vmdev_cdi.model",
    "Mount": "vmdev_cdi.model",
    "SpecDocument": "vmdev_cdi.model",
    "is_qualified_name": "vmdev_cdi.names",
    "parse_device": "vmdev_cdi.names",
    "parse_qualified_name": "vmdev_cdi.names",
    "parse_qualifier": "vmdev_cdi.names",
    "qualified_name": "vmdev_cdi.names",
    "validate_class_name": "vmdev_cdi.names",
    "validate_device_name": "vmdev_cdi.names",
    "validate_vendor_name": "vmdev_cdi.names",
    "Registry": "vmdev_cdi.registry",
    "inject": "vmdev_cdi.registry",
    "scan_spec_dirs": "vmdev_cdi.registry",
    "CDIDevice": "vmdev_cdi.spec",
    "Spec": "vmdev_cdi.spec",
    "new_spec": "vmdev_cdi.spec",
    "parse_spec": "vmdev_cdi.spec",
    "read_spec": "vmdev_cdi.spec",
    "CURRENT_VERSION": "vmdev_cdi.version",
    "minimum_required_version": "vmdev_cdi.version",
    "validate_version": "vmdev_cdi.version",
}

__all__ = [
    "ANNOTATION_PREFIX",
    "CURRENT_VERSION",
    "DEFAULT_SPEC_DIRS",
    "CDIDevice",
    "CDIError",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "Hook",
    "IntelRdt",
    "LinuxNetDevice",
    "Mount",
    "Registry",
    "Spec",
    "SpecDocument",
    "SpecError",
    "UnresolvableError",
    "annotation_key",
    "annotation_value",
    "apply_edits",
    "fill_missing_info",
    "inject",
    "is_qualified_name",
    "minimum_required_version",
    "new_spec",
    "parse_annotations",
    "parse_device",
    "parse_qualified_name",
    "parse_qualifier",
    "parse_spec",
    "qualified_name",
    "read_spec",
    "scan_spec_dirs",
    "update_annotations",
    "validate_class_name",
    "validate_device_name",
    "validate_vendor_name",
    "validate_version",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
