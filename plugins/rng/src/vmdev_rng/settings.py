"""The settings keys vmdev-rng owns, as Kata names them (``[hypervisor.qemu]`` and friends).

``entropy_source`` must be one of ``valid_entropy_sources``. Kata's Go runtime treats the allowed
list as globs and turns ``""`` into ``/dev/urandom``; vmdev compares exact strings and keeps ``""``
as "let the hypervisor choose" (QEMU's ``rng-random`` default). The core parses both keys once
from these declarations; :func:`check_allowed` is the one rule across them.
"""

from __future__ import annotations

import json
from typing import Final

from vmdev.declared import STRING, STRINGS, Setting
from vmdev.errors import ConfigError
from vmdev.settings import SandboxSettings

ENTROPY_SOURCE: Final = "entropy_source"
VALID_ENTROPY_SOURCES: Final = "valid_entropy_sources"
DEFAULT_ENTROPY_SOURCE: Final = "/dev/urandom"
DEFAULT_VALID_ENTROPY_SOURCES: Final = ("/dev/urandom", "/dev/random", "")
#: the machine type whose guests Kata gives no RNG (s390x draws entropy from CPACF)
S390_CCW_MACHINE: Final = "s390-ccw-virtio"


def check_source(source: str) -> None:
    """An entropy source is a host path handed to the hypervisor: no control character (QEMU's
    option value and a log line could not carry it) and no lone surrogate (no file system can name
    it; ``stat`` would fail with an encoding error). ``ValueError``: the core names the key."""
    for ch in source:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError(f"{json.dumps(source)} contains a control character")
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(f"{json.dumps(source)} contains a lone surrogate (not a character)")


SETTINGS: Final = (
    Setting(
        name=ENTROPY_SOURCE, type=STRING, default=DEFAULT_ENTROPY_SOURCE, kata_key=ENTROPY_SOURCE,
        flag="--entropy-source", check=check_source,
        description="the host file the guest's virtio-rng reads (\"\": the hypervisor's default); "
        "must be one of valid_entropy_sources",
    ),
    Setting(
        name=VALID_ENTROPY_SOURCES, type=STRINGS, default=DEFAULT_VALID_ENTROPY_SOURCES,
        kata_key=VALID_ENTROPY_SOURCES,
        description="the entropy sources entropy_source may name (exact paths; Kata allows globs)",
    ),
)


def entropy_source(settings: SandboxSettings) -> str:
    """The configured entropy source (typed by the core)."""
    source: str = settings.value(ENTROPY_SOURCE)
    return source


def check_allowed(settings: SandboxSettings, device: str) -> None:
    """``entropy_source`` must be listed in ``valid_entropy_sources`` (Kata's rule)."""
    source = entropy_source(settings)
    valid: tuple[str, ...] = settings.value(VALID_ENTROPY_SOURCES)
    if source not in valid:
        allowed = ", ".join(repr(v) for v in valid)
        raise ConfigError(
            f"{source!r} is not an allowed entropy source ({VALID_ENTROPY_SOURCES}: {allowed})",
            device=device,
            field=ENTROPY_SOURCE,
        )


def wanted(settings: SandboxSettings) -> bool:
    """Whether the sandbox gets an RNG: Kata's QEMU adds none to an s390x CCW machine (CPACF gives
    the guest entropy) nor to a confidential guest (``confidential_guest``, declared by the QEMU
    backend); other backends always get one. Here, not in ``device.py``, so that a sandbox without
    an RNG never imports the device model."""
    if settings.hypervisor != "qemu":
        return True
    return not (settings.machine_type == S390_CCW_MACHINE or settings.value("confidential_guest", False))
