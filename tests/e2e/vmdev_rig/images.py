"""Test disk images."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# Signature of the ``make_disk`` pytest fixture: (path, size_mib, marker) -> image path.
MakeDisk = Callable[["str | Path", int, str], Path]


def make_disk(path: Path, size_mib: int, marker: str) -> Path:
    """Create a sparse raw image of ``size_mib`` MiB with ``marker`` (ASCII) at offset 0.

    The guest reports the leading printable bytes of every disk (up to 16) as ``marker=``, so
    a test can prove which backing file reached which guest disk. Keep markers printable ASCII
    without spaces, at most 16 characters.
    """
    data = marker.encode("ascii")
    if not data or len(data) > 16 or not all(0x21 <= b <= 0x7E for b in data):
        raise ValueError(f"marker must be 1-16 printable non-space ASCII characters: {marker!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as image:
        image.write(data)
        image.truncate(size_mib * 1024 * 1024)
    os.chmod(path, 0o644)
    return path
