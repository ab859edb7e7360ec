"""Firecracker: ``PUT /entropy`` before boot (it cannot hot-plug one).

Firecracker's virtio-rng always draws from the host kernel's CSPRNG and takes no source, so only
``/dev/urandom`` (or ``""``) can be honoured; anything else is refused rather than ignored.
"""

from __future__ import annotations

from vmdev.backends.firecracker import FirecrackerAttach, FirecrackerTarget
from vmdev.errors import UnsupportedError
from vmdev.targets import ApiRequest
from vmdev_rng.device import RNGDev
from vmdev_rng.settings import DEFAULT_ENTROPY_SOURCE, ENTROPY_SOURCE


def render(device: RNGDev, target: FirecrackerTarget, hotplug: bool) -> FirecrackerAttach:
    if device.filename not in ("", DEFAULT_ENTROPY_SOURCE):
        raise UnsupportedError(
            f"Firecracker's entropy device always uses the host kernel's CSPRNG; "
            f"{ENTROPY_SOURCE} {device.filename} cannot be honoured (use {DEFAULT_ENTROPY_SOURCE})",
            device=device.id,
            field=ENTROPY_SOURCE,
        )
    return FirecrackerAttach(requests=[ApiRequest("PUT", "/entropy", {})])
