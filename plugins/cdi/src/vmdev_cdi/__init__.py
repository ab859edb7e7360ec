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

The vmdev plugin is :mod:`vmdev_cdi.plugin` (entry point ``cdi``).
"""

from vmdev_cdi.annotations import (
    ANNOTATION_PREFIX,
    annotation_key,
    annotation_value,
    parse_annotations,
    update_annotations,
)
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
from vmdev_cdi.registry import DEFAULT_SPEC_DIRS, Registry, inject, scan_spec_dirs
from vmdev_cdi.spec import CDIDevice, Spec, new_spec, parse_spec, read_spec
from vmdev_cdi.version import CURRENT_VERSION, minimum_required_version, validate_version

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
