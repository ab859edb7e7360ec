"""The watchdog's model (imported by the hooks only when a request or a saved device is one)."""

from __future__ import annotations

from typing import ClassVar

import attrs

from acme_vmdev_watchdog.constants import KIND


@attrs.frozen(kw_only=True)
class WatchdogDev:
    """The sandbox's watchdog, requested by a container."""

    kind: ClassVar[str] = KIND
    id: str
    container_path: str
