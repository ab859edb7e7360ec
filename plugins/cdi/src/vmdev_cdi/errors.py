"""The errors of the CDI library: :class:`vmdev.errors.VmdevError` subclasses whose message is the
Go library's text, exactly (``str(error)`` is that text when no device or field is set)."""

from __future__ import annotations

from collections.abc import Sequence

from vmdev.errors import ConfigError, VmdevError


class CDIError(VmdevError):
    """Something the CDI reference reports as an error (a name, a spec file, an injection)."""


class SpecError(CDIError, ConfigError):
    """A CDI spec file cannot be read, parsed or validated."""


class OciSpecError(CDIError, ConfigError):
    """The OCI spec being edited has a field of the wrong shape where an edit goes (Go would not
    have decoded it at all); ``field`` is its JSON path, as in the core's OCI errors."""


class UnresolvableError(CDIError):
    """Requested devices that no loaded spec provides (Go: ``unresolvable CDI devices ...``)."""

    def __init__(
        self, unresolved: Sequence[str], *, message: str = "", device: str = "", field: str = ""
    ) -> None:
        self.unresolved = tuple(unresolved)
        super().__init__(message or "unresolvable CDI devices " + ", ".join(self.unresolved),
                         device=device, field=field)
