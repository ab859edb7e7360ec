"""One exception hierarchy for everything vmdev reports to its caller.

Every error carries the device it is about (normally the container path, or a
sandbox device's id) and the field that is wrong, so a runtime can print one
line that a user can act on: ``/dev/loop0: major: no such device``.
"""

from __future__ import annotations


class VmdevError(Exception):
    """Base class. ``device`` and ``field`` may be empty when not applicable."""

    def __init__(self, message: str, *, device: str = "", field: str = "") -> None:
        self.message = message
        self.device = device
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.device, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(VmdevError):
    """An input document (OCI spec, sandbox settings) is invalid.

    ``field`` holds the JSON path (``$.linux.devices[2].major``) or the settings
    key of the first problem.
    """


class ResolveError(VmdevError):
    """The host path of a device could not be resolved."""


class DeviceError(VmdevError):
    """A device request cannot be turned into a device (bad value, wrong host state)."""


class UnsupportedError(VmdevError):
    """The device is valid but the selected hypervisor or machine cannot attach it."""


class UnclaimedDeviceError(VmdevError):
    """No installed plugin handles this device (for example a block device without vmdev-block)."""


class PluginError(VmdevError):
    """A plugin broke its contract (raised an unexpected exception, returned a wrong type)."""


class InvalidIdError(VmdevError):
    """An identifier would not be safe on a QEMU command line or in QMP."""
