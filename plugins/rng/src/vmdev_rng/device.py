"""The sandbox's entropy device: its model, how it is built, and how it is loaded from state.

One ``RNGDev`` per sandbox, with the fixed id ``rng0`` (Kata's ``rng0``); it is a sandbox device
(no OCI request names it), added by the ``sandbox_devices`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from vmdev.host import HostContext
from vmdev.serialize import from_json
from vmdev.settings import SandboxSettings
from vmdev_rng.host import check_entropy_source
from vmdev_rng.kinds import RNG_ID, RNG_KIND
from vmdev_rng.settings import DEFAULT_ENTROPY_SOURCE, S390_CCW_MACHINE, entropy_source, wanted

__all__ = ["RNG_ID", "S390_CCW_MACHINE", "RNGDev", "build", "from_state", "wanted"]


@attrs.frozen(kw_only=True)
class RNGDev:
    """The sandbox's virtio-rng device and its entropy source on the host."""

    kind: ClassVar[str] = RNG_KIND
    id: str = RNG_ID
    filename: str = DEFAULT_ENTROPY_SOURCE

    @property
    def host_path(self) -> str:
        """The entropy source on the host (``""``: the hypervisor's default source)."""
        return self.filename


def build(settings: SandboxSettings, host: HostContext) -> RNGDev:
    """The sandbox's RNG for these settings; its entropy source must be usable on the host."""
    source = entropy_source(settings)
    if source:
        check_entropy_source(source, host, device=RNG_ID)
    return RNGDev(id=RNG_ID, filename=source)


def from_state(kind: str, data: Mapping[str, Any]) -> RNGDev | None:
    """A saved RNG device rebuilt as it was (the host is not looked at); None for other kinds."""
    return from_json(RNGDev, data) if kind == RNGDev.kind else None
