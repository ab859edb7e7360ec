"""vmdev: turn a container's device requests into devices attached to its sandbox VM.

Importing vmdev loads no plugin and scans no package metadata: plugins are
loaded on first use (see :mod:`vmdev.plugins`). Public entry points::

    from vmdev import hookimpl              # for plugin authors
    from vmdev import plan, load_spec, load_settings, HostContext, get_plugin_manager
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmdev.errors import (
    ConfigError,
    DeviceError,
    InvalidIdError,
    PluginError,
    ResolveError,
    UnclaimedDeviceError,
    UnsupportedError,
    VmdevError,
)
from vmdev.hookspecs import hookimpl
from vmdev.lazy import lazy_exports
from vmdev.log import set_logger

if TYPE_CHECKING:
    from vmdev.host import HostContext
    from vmdev.oci import load_spec, parse_spec
    from vmdev.planner import Plan, plan
    from vmdev.plugins import LoadPolicy, PluginManager, get_plugin_manager
    from vmdev.settings import SandboxSettings, load_settings

_LAZY = {
    "HostContext": "vmdev.host",
    "load_spec": "vmdev.oci",
    "parse_spec": "vmdev.oci",
    "Plan": "vmdev.planner",
    "plan": "vmdev.planner",
    "LoadPolicy": "vmdev.plugins",
    "PluginManager": "vmdev.plugins",
    "get_plugin_manager": "vmdev.plugins",
    "SandboxSettings": "vmdev.settings",
    "load_settings": "vmdev.settings",
}


__all__ = [
    "ConfigError",
    "DeviceError",
    "HostContext",
    "InvalidIdError",
    "LoadPolicy",
    "Plan",
    "PluginError",
    "PluginManager",
    "ResolveError",
    "SandboxSettings",
    "UnclaimedDeviceError",
    "UnsupportedError",
    "VmdevError",
    "get_plugin_manager",
    "hookimpl",
    "load_settings",
    "load_spec",
    "parse_spec",
    "plan",
    "set_logger",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
