"""vmdev's real-guest test rig: boot a Debian kernel + busybox initramfs under QEMU (TCG) with
the QEMU options under test, and read back what the guest saw."""

from .errors import (
    GuestBootError,
    GuestError,
    GuestTimeoutError,
    QMPCommandError,
    RigError,
    RigSetupError,
)
from .guest import BootResult, Rig, RunningGuest
from .images import make_disk
from .initramfs import DEFAULT_MODULES, OPTIONAL_MODULES, build_initramfs
from .kernel import KernelInfo, default_cache_dir, ensure_kernel
from .prereq import check_prerequisites
from .report import (
    BlockDev,
    GuestReport,
    Mount,
    NdDevice,
    PciDevice,
    RngInfo,
    ScsiDevice,
    ShareResult,
    VirtioDevice,
    parse_report,
    parse_reports,
)

__all__ = [
    "DEFAULT_MODULES",
    "OPTIONAL_MODULES",
    "BlockDev",
    "BootResult",
    "GuestBootError",
    "GuestError",
    "GuestReport",
    "GuestTimeoutError",
    "KernelInfo",
    "Mount",
    "NdDevice",
    "PciDevice",
    "QMPCommandError",
    "Rig",
    "RigError",
    "RigSetupError",
    "RngInfo",
    "RunningGuest",
    "ScsiDevice",
    "ShareResult",
    "VirtioDevice",
    "build_initramfs",
    "check_prerequisites",
    "default_cache_dir",
    "ensure_kernel",
    "make_disk",
    "parse_report",
    "parse_reports",
]
