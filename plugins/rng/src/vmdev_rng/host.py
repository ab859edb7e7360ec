"""What vmdev-rng asks the host: does the entropy source exist?

Kata hands the path to QEMU unchecked, so a missing source surfaces as a QEMU start failure;
vmdev refuses it while planning. The check goes through ``HostContext.stat`` (and ``dev_path``,
so a fake ``/dev`` under a test's tmp_path works without root).
"""

from __future__ import annotations

from vmdev.errors import DeviceError
from vmdev.host import HostContext
from vmdev_rng.settings import ENTROPY_SOURCE


def check_entropy_source(source: str, host: HostContext, *, device: str) -> None:
    """Raise a one-line :class:`DeviceError` naming ``device`` if ``source`` cannot be stat'ed."""
    try:
        host.stat(str(host.dev_path(source)))
    except (OSError, ValueError) as exc:  # ValueError: a name no file system can hold (NUL, surrogates)
        reason = exc.strerror if isinstance(exc, OSError) else "not a file name"
        raise DeviceError(
            f"entropy source {source} is not usable on this host: {reason}",
            device=device,
            field=ENTROPY_SOURCE,
        ) from None
