"""Live hot plug through libvirt (written last)."""

from __future__ import annotations

from typing import Any

from vmdev.backend import LiveConnection


def connect(connection: LiveConnection) -> Any:
    raise NotImplementedError
