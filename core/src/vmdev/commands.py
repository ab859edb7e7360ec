"""Commands the plugins declare, and ``vmdev --help`` without click.

A plugin adds a subcommand with ``register_lazy_commands(register)``: it names the command, the
``module:attribute`` of its click command and a one-sentence summary, and imports nothing. The
``vmdev`` group turns each into a :class:`vmdev.cliutil.LazyCommand`, so the module loads only
when the command runs; and ``vmdev --help``, which a runtime's health checks and users' shells
run too, is printed here from the summaries without importing click (~23 ms of CPU, more than a
plan's own work; issue 13).

:func:`group_help` lays the text out the way click 8.5's ``HelpFormatter`` does (same width rule,
same wrapping, same short help; the core requires click 8.5 or later); anything it cannot be sure
to lay out the same way (a word too long for its column, escape sequences, a stdout that cannot
write the text) is left to click, and ``core/tests/test_startup.py`` holds the two outputs equal
across widths, plugin sets and program names.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from vmdev.errors import PluginError

_NAME: Final = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*\Z")
_TARGET: Final = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")


def _command_name(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PluginError(f"command name {value!r} is not lower-case words joined by hyphens (doctor, "
                          "list-specs)", field=attribute.name)


def _target(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _TARGET.match(value):
        raise PluginError(f"command target {value!r} is not 'module:attribute'", device=inst.name,
                          field=attribute.name)


def _summary(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.strip() or "\n\n" in value or "\b" in value:
        raise PluginError("a command summary is one paragraph of text (the first of the command's help)",
                          device=inst.name, field=attribute.name)


@attrs.frozen(kw_only=True)
class CommandSpec:
    """A subcommand of ``vmdev`` a plugin declares (``register_lazy_commands``).

    ``target`` is the ``module:attribute`` of its click command (or group), imported only to run
    it or to print its own help; ``summary`` is what ``vmdev --help`` lists: the first paragraph
    of the command's help (test it against the loaded command's, as the built-in plugins do).
    """

    name: str = attrs.field(validator=_command_name)
    target: str = attrs.field(validator=_target)
    summary: str = attrs.field(validator=_summary)


@attrs.frozen
class DeclaredCommand:
    """A declared command and the plugin that declared it."""

    spec: CommandSpec
    plugin: str


# --- vmdev --help without click ------------------------------------------------------------------
#: the group's option rows, as click's ``version_option`` and help option write them
_OPTION_ROWS: Final = (
    ("--version", "Show the version and exit."), ("-h, --help", "Show this message and exit."),
)


class Unsure(Exception):
    """click may lay this text out differently: let click print the help."""


def terminal_width() -> int:
    """click's ``HelpFormatter`` width: the terminal's columns (``shutil.get_terminal_size``'s
    reading, without importing shutil), at most 80, less 2, at least 50."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return max(min(columns, 80) - 2, 50)


def group_help(prog: str, doc: str, commands: Mapping[str, str], width: int) -> str:
    """The help of the ``vmdev`` group called ``prog``: its ``doc``, its options, and
    ``commands`` (name: help) as short help, as click prints it (without the final newline)."""
    out = [_usage(prog, "[OPTIONS] COMMAND [ARGS]...", width), "\n"]
    out += ["\n", _wrap(doc, width, "  "), "\n"]
    out += ["\n", "Options:\n", _definitions(_OPTION_ROWS, width)]
    if commands:
        limit = width - 6 - max(len(name) for name in commands)
        rows = [(name, short_help(commands[name], limit)) for name in sorted(commands)]
        out += ["\n", "Commands:\n", _definitions(rows, width)]
    return "".join(out).rstrip("\n")


def short_help(text: str, limit: int) -> str:
    """click's short help of a command whose help is ``text`` (click 8.5's rule): its first
    paragraph, cut after the first sentence (a period not followed by a lower-case word), then
    shortened to ``limit`` characters with ``...``."""
    words = text.partition("\n\n")[0].split()
    if words and words[0] == "\b":
        words = words[1:]
    if not words:
        return ""
    last = len(words) - 1
    for i, word in enumerate(words):
        if word.endswith(".") and (i == last or not words[i + 1][0].islower()):
            words = words[: i + 1]
            break
    text = " ".join(words)
    if len(text) <= limit:
        return text
    if limit < len("..."):
        return "..."
    import textwrap

    return textwrap.shorten(text, limit, placeholder="...", break_on_hyphens=False)


def _usage(prog: str, args: str, width: int) -> str:
    prefix = f"Usage: {prog} "
    if width < len(prefix) + 20:
        raise Unsure
    return _wrap(args, width, prefix, " " * len(prefix))


def _definitions(rows: Sequence[tuple[str, str]], width: int) -> str:
    """click's ``write_dl`` at indent 2 (the rows of a section)."""
    first_col = min(max(len(first) for first, _ in rows), 30) + 2
    text_width = max(width - first_col - 2, 10)
    out = []
    for first, second in rows:
        out.append(f"  {first}")
        if not second:
            out.append("\n")
            continue
        out.append(" " * (first_col - len(first)) if len(first) <= first_col - 2
                   else "\n" + " " * (first_col + 2))
        lines = _wrap(second, text_width).splitlines() or [""]
        out.append("".join(f"{line}\n" if n == 0 else f"{'':>{first_col + 2}}{line}\n"
                           for n, line in enumerate(lines)))
    return "".join(out)


def _wrap(text: str, width: int, indent: str = "", subsequent: str | None = None) -> str:
    """click's ``wrap_text`` of one line of text: the standard library's wrapping, which click's
    ``TextWrapper`` equals for text without escape sequences and without a word too long for a line."""
    import textwrap

    subsequent = indent if subsequent is None else subsequent
    room = width - max(len(indent), len(subsequent))
    if any(c in text for c in "\x1b\n\t\b\f\r") or any(len(word) > room for word in text.split()):
        raise Unsure
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=subsequent,
                         replace_whitespace=False)
