"""One exception hierarchy for everything vmdev reports to its caller.

Every error carries the device it is about (normally the container path, or a
sandbox device's id) and the field that is wrong, so a runtime can print one
line that a user can act on: ``/dev/sdb: major: no such device``.
"""

from __future__ import annotations

import re
from typing import Final

#: what would break a message over lines, or cannot be printed: C0/C1 controls, DEL, the Unicode
#: line and paragraph separators, and lone surrogates (a str that no codec can write)
_UNPRINTABLE: Final = "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]"


def one_line(text: str) -> str:
    """``text`` with every character that could end a log line or fail to print escaped as Python
    would write it (``\\n``, ``\\x1b``, ``\\udc80``); everything else is kept, so paths stay readable.
    The class is compiled by ``re`` when first needed (it takes ~0.4 ms, which every ``vmdev plan``
    paid at import when this was a module-level pattern; issue 13)."""
    if text.isascii() and text.isprintable():  # none of them
        return text
    return re.sub(_UNPRINTABLE, lambda m: repr(m.group())[1:-1], text)


class VmdevError(Exception):
    """Base class. ``device`` and ``field`` may be empty when not applicable.

    ``str()`` is always one printable line: the device (a container path, which the container
    chose), the field and the message are passed through :func:`one_line`, so a runtime that logs
    errors line by line cannot be fed forged lines, whatever a message quotes.
    """

    def __init__(self, message: str, *, device: str = "", field: str = "") -> None:
        self.message = message
        self.device = device
        self.field = field
        super().__init__(message)

    def __str__(self) -> str:
        where = ": ".join(one_line(part) for part in (self.device, self.field) if part)
        message = one_line(self.message)
        return f"{where}: {message}" if where else message


class ConfigError(VmdevError):
    """An input document (OCI spec, sandbox settings) is invalid.

    ``field`` holds the JSON path (``$.linux.devices[2].major``) or the settings
    key of the first problem.
    """


class ResolveError(VmdevError):
    """The host path of a device could not be resolved."""


class HostReadError(ResolveError):
    """A host file (sysfs, ``/dev``, ``/proc``) could not be read as expected: unreadable, not a
    regular file (a FIFO, a directory, a loop of symlinks), too large or not UTF-8. ``field``
    names the file; ``reason`` is the problem without the file's name (``Permission denied``,
    ``not a regular file (a FIFO)``), for readers of caller-supplied files that name it their
    way (``vmdev.oci.load_spec``: ``cannot read OCI spec: ...``)."""

    def __init__(self, message: str, *, device: str = "", field: str = "", reason: str = "") -> None:
        super().__init__(message, device=device, field=field)
        self.reason = reason or message


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
