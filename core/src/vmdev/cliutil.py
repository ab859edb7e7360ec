"""Helpers shared by the ``vmdev`` commands and by plugins that add commands.

``errors_as_one_line`` turns every error into one line on stderr and exit status 1 (usage
errors stay click's exit 2); ``host_context`` builds the host context from the common flags;
``SettingsCommand`` adds the settings flags the plugins declare; ``LazyCommand`` lists a command
by its summary and imports it only to run it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from vmdev.errors import VmdevError, one_line
from vmdev.host import host_context as host_context  # for plugins' commands
from vmdev.lazy import load_reference

F = TypeVar("F", bound=Callable[..., Any])


class LazyCommand(click.Command):
    """A command ``vmdev --help`` lists by its ``summary``, whose module is imported only when the
    command itself is wanted (to run it, or for its own ``--help``).

    Every plugin's ``register_commands`` runs for every ``vmdev --help``; a plugin that adds
    ``cli.add_command(LazyCommand("doctor", "acme_widgets.doctor:doctor_command", summary=...))``
    keeps the command's module, and everything it imports, out of it (``vmdev cdi``'s imports
    jsonschema and yaml). ``target`` is ``"module:attribute"``; the summary should be the first
    sentence of the command's help (test it against the loaded command's).
    """

    def __init__(self, name: str, target: str, *, summary: str) -> None:
        super().__init__(name, help=summary)
        self.target = target
        self._loaded: click.Command | None = None

    def load(self) -> click.Command:
        """The command ``target`` names (imported once)."""
        if self._loaded is None:
            command = load_reference(self.target)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.target} is not a click command")
            self._loaded = command
        return self._loaded

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        """The real command's context: click runs ``ctx.command``, so the real command runs."""
        return self.load().make_context(info_name, args, parent=parent, **extra)


def fail(message: str) -> None:
    """``message`` as one line on stderr (escaped: an exception's text may hold a newline), exit 1."""
    click.echo(f"vmdev: error: {one_line(message)}", err=True)
    sys.exit(1)


def _debug() -> None:
    """With VMDEV_DEBUG set, the traceback of the error being handled (traceback is imported only then)."""
    if os.environ.get("VMDEV_DEBUG"):
        import traceback

        traceback.print_exc()


def errors_as_one_line(func: F) -> F:
    """Turn every error into one line on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            raise  # stdout was closed (`vmdev plugins | grep -q`): click exits 1 quietly
        except VmdevError as exc:
            _debug()
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - no traceback for users; VMDEV_DEBUG shows it
            _debug()
            fail(f"internal error: {type(exc).__name__}: {exc} (set VMDEV_DEBUG=1 for details)")

    return wrapper  # type: ignore[return-value]


_FLAGS_KEY = "vmdev.setting_flags"


class SettingsCommand(click.Command):
    """A command that also takes the settings flags the loaded plugins declare
    (``Setting.flag``: ``--block-driver``, ``--entropy-source``, ...).

    The options are added when click asks for the command's parameters (so plugins load only
    for commands that take settings); their values are overrides of the settings keys, read
    back with :func:`flag_overrides`.
    """

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        return params[:-1] + _plugin_flag_options() + params[-1:]  # keep --help last


def _plugin_flag_options() -> list[click.Parameter]:
    from vmdev.declared import BOOLEAN, STRINGS, Setting
    from vmdev.plugins import get_plugin_manager

    try:
        declared = get_plugin_manager().declared_settings()
    except VmdevError as exc:
        fail(str(exc))
        return []
    options: list[click.Parameter] = []
    flags: set[str] = set()
    for entry in declared:
        setting: Setting = entry.setting
        if not setting.flag or setting.flag in flags:  # backend-scoped twins share their flag
            continue
        flags.add(setting.flag)

        def store(ctx: click.Context, param: click.Parameter, value: Any, setting: Setting = setting) -> None:
            if value is None or value == ():
                return
            if setting.type == STRINGS:
                value = list(value)
            overrides = ctx.meta.setdefault(_FLAGS_KEY, {})
            overrides[setting.name] = value
            for key, implied in setting.flag_sets.items():
                overrides.setdefault(key, implied)

        decls = [f"{setting.flag}/--no-{setting.flag[2:]}"] if setting.type == BOOLEAN else [setting.flag]
        options.append(click.Option(
            decls,
            default=None,
            multiple=setting.type == STRINGS,
            type=_click_type(setting.type),
            metavar=setting.flag_metavar or None,
            expose_value=False,
            callback=store,
            help=(setting.flag_help or setting.description) + f" (settings key {setting.name})",
        ))
    return options


def _click_type(kind: str) -> Any:
    from vmdev.declared import BOOLEAN, INTEGER, NUMBER

    return {INTEGER: int, NUMBER: float, BOOLEAN: None}.get(kind, str)


def flag_overrides() -> dict[str, Any]:
    """The settings keys the plugin flags of the current command set."""
    ctx = click.get_current_context()
    return dict(ctx.meta.get(_FLAGS_KEY, {}))
