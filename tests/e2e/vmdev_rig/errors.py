"""Exceptions raised by the real-guest test rig."""

from __future__ import annotations

INSTALL_HINT = "sudo scripts/install-test-deps"
PIP_HINT = "pip install 'qemu.qmp==0.0.6'"


class RigError(Exception):
    """Base class of every error raised by the rig."""


class RigSetupError(RigError):
    """A host prerequisite (QEMU, busybox, guest kernel, qemu.qmp) is missing or broken."""


class GuestError(RigError):
    """QEMU or the guest did not behave as expected."""

    def __init__(
        self, message: str, *, rc: int | None = None, stderr: str = "", serial_tail: str = ""
    ) -> None:
        parts = [message]
        if rc is not None:
            parts.append(f"QEMU exit code: {rc}")
        if stderr.strip():
            parts.append(f"QEMU stderr:\n{stderr.rstrip()}")
        if serial_tail.strip():
            parts.append(f"serial console (tail):\n{serial_tail.rstrip()}")
        super().__init__("\n".join(parts))
        self.rc = rc
        self.stderr = stderr
        self.serial_tail = serial_tail


class GuestBootError(GuestError):
    """QEMU refused the options, exited early, or the guest printed no report."""


class GuestTimeoutError(GuestError):
    """QEMU or the guest did not reach the expected state in time (QEMU was killed)."""


class QMPCommandError(RigError):
    """A QMP command returned an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command} failed: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc
