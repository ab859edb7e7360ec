"""Helpers shared by the ``vmdev`` commands and by plugins that add commands.

``errors_as_one_line`` turns every error into one line on stderr and exit status 1 (usage
errors stay click's exit 2); ``host_context`` builds the host context from the common flags.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from vmdev.errors import VmdevError
from vmdev.host import HostContext, VhostUserStore
from vmdev.settings import SandboxSettings

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    click.echo(f"vmdev: error: {message}", err=True)
    sys.exit(1)


def errors_as_one_line(func: F) -> F:
    """Turn every error into one line on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VmdevError as exc:
            if os.environ.get("VMDEV_DEBUG"):
                traceback.print_exc()
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - no traceback for users; VMDEV_DEBUG shows it
            if os.environ.get("VMDEV_DEBUG"):
                traceback.print_exc()
            fail(f"internal error: {type(exc).__name__}: {exc} (set VMDEV_DEBUG=1 for details)")

    return wrapper  # type: ignore[return-value]


def host_context(sysfs_root: str | None, store: str | None, settings: SandboxSettings | None) -> HostContext:
    store_enabled = False
    store_path: str | None = None
    if settings is not None:
        store_enabled = bool(settings.option("enable_vhost_user_store", False))
        store_path = settings.option("vhost_user_store_path")
    if store is not None:
        store_enabled, store_path = True, store
    vhost = VhostUserStore(enabled=store_enabled, **({"path": Path(store_path)} if store_path else {}))
    return HostContext(sysfs_root=Path(sysfs_root or "/sys"), vhost_user_store=vhost)
