"""Logging: vmdev logs to the standard ``vmdev`` logger (children ``vmdev.plugins``,
``vmdev.trace``, ...). Configure it like any stdlib logger, or hand vmdev your own
logger with :func:`set_logger` (Kata's ``SetLogger``).

:mod:`logging` itself is imported when something is logged or a logger is handed over, not by
``import vmdev``: a plan that logs nothing does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

LOGGER_NAME = "vmdev"
#: marks the handler that :func:`set_logger` installs
_FORWARD = "_vmdev_forward_to"


def _forward(target: logging.Logger) -> logging.Handler:
    """A handler passing every record it gets to ``target`` (at ``target``'s level)."""
    import logging

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if target.isEnabledFor(record.levelno):
                target.handle(record)

    handler = Forward()
    setattr(handler, _FORWARD, target)
    return handler


def set_logger(logger: logging.Logger | None) -> None:
    """Send every vmdev log record to ``logger`` instead of propagating to the root logger.

    ``None`` restores the default (records propagate normally).
    """
    import logging

    base = logging.getLogger(LOGGER_NAME)
    for handler in list(base.handlers):
        if hasattr(handler, _FORWARD):
            base.removeHandler(handler)
    if logger is None:
        base.propagate = True
        return
    base.addHandler(_forward(logger))
    base.setLevel(logging.DEBUG)
    base.propagate = False
