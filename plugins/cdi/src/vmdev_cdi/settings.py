"""vmdev-cdi's settings keys: where spec files are and which devices CRI's ``CDIDevices`` names.

Both keys may be set in ``configuration.toml`` (the hypervisor section or vmdev's ``[vmdev]``
table) or on the command line of ``vmdev plan`` (``--cdi-spec-dir DIR``, ``--cdi-device NAME``,
each repeatable). Kata has no such keys: its Go runtime always reads the library's default
directories, and the CRI field reaches it through containerd's own injection.

This module is imported with the entry module on every ``vmdev plan``, so it imports nothing of
the library at module level: a flag's name is checked by the name parser only when one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from vmdev.declared import STRINGS, Setting
from vmdev_cdi.constants import DEFAULT_SPEC_DIRS

if TYPE_CHECKING:
    from vmdev.settings import SandboxSettings

SPEC_DIRS: Final = "cdi_spec_dirs"
DEVICES: Final = "cdi_devices"


def _check_names(names: Sequence[str]) -> None:
    if not names:
        return
    from vmdev_cdi.errors import CDIError
    from vmdev_cdi.names import parse_qualified_name

    for name in names:
        try:
            parse_qualified_name(name)
        except CDIError as exc:
            raise ValueError(exc.message) from None


def _check_dirs(dirs: Sequence[str]) -> None:
    for directory in dirs:
        if not directory:
            raise ValueError("a spec directory must not be empty")


SETTINGS: Final = (
    Setting(
        name=SPEC_DIRS, type=STRINGS, default=DEFAULT_SPEC_DIRS, check=_check_dirs,
        flag="--cdi-spec-dir", flag_metavar="DIR",
        flag_help="A CDI spec directory (repeatable; a later one wins). Default: /etc/cdi, /var/run/cdi.",
        description="the CDI spec directories, lowest priority first (a later directory wins)",
    ),
    Setting(
        name=DEVICES, type=STRINGS, default=(), check=_check_names,
        flag="--cdi-device", flag_metavar="NAME",
        flag_help="A CDI device to inject, vendor.com/class=name (repeatable; CRI's CDIDevices).",
        description="CDI devices requested besides the cdi.k8s.io/ annotations (CRI's CDIDevices field)",
    ),
)


def spec_dirs(settings: SandboxSettings) -> tuple[str, ...]:
    value: Any = settings.value(SPEC_DIRS)
    return tuple(value) or DEFAULT_SPEC_DIRS


def devices(settings: SandboxSettings) -> tuple[str, ...]:
    value: Any = settings.value(DEVICES)
    return tuple(value)
