"""Check every host prerequisite of the rig at once, with the command that fixes it."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import INSTALL_HINT, PIP_HINT, RigSetupError
from .initramfs import BUSYBOX, busybox_applets
from .kernel import DEFAULT_FLAVOUR, KernelInfo, ensure_kernel
from .qmpsync import require_qmp

_TOOLS = (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"))


def check_prerequisites(
    cache_dir: Path | None = None, *, flavour: str = DEFAULT_FLAVOUR
) -> KernelInfo:
    """Raise RigSetupError listing everything missing: QEMU, qemu-img, a static busybox,
    the qemu.qmp package and the guest kernel (fetched into the cache if needed).

    Returns the guest kernel, so that ``Rig(kernel=...)`` need not resolve it again.
    """
    problems = [
        f"{tool} is not on PATH (Debian package {package})"
        for tool, package in _TOOLS
        if shutil.which(tool) is None
    ]
    for check in (lambda: busybox_applets(BUSYBOX), require_qmp):
        try:
            check()
        except RigSetupError as exc:
            problems.append(str(exc))
    kernel: KernelInfo | None = None
    try:
        kernel = ensure_kernel(cache_dir, flavour)
    except RigSetupError as exc:
        problems.append(str(exc))
    if problems or kernel is None:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise RigSetupError(
            f"The vmdev real-guest tests cannot run on this machine:\n{listing}\n"
            f"Fix: run `{INSTALL_HINT}` (as root: installs QEMU, qemu-utils, busybox-static and "
            f"pre-fetches the guest kernel) and `{PIP_HINT}` in the test environment."
        )
    return kernel
