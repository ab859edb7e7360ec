"""Logging: vmdev logs to the standard ``vmdev`` logger (children ``vmdev.plugins``,
``vmdev.trace``, ...). Configure it like any stdlib logger, or hand vmdev your own
logger with :func:`set_logger` (Kata's ``SetLogger``)."""

from __future__ import annotations

import logging

LOGGER_NAME = "vmdev"


class _Forward(logging.Handler):
    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if self.target.isEnabledFor(record.levelno):
            self.target.handle(record)


def set_logger(logger: logging.Logger | None) -> None:
    """Send every vmdev log record to ``logger`` instead of propagating to the root logger.

    ``None`` restores the default (records propagate normally).
    """
    base = logging.getLogger(LOGGER_NAME)
    for handler in list(base.handlers):
        if isinstance(handler, _Forward):
            base.removeHandler(handler)
    if logger is None:
        base.propagate = True
        return
    base.addHandler(_Forward(logger))
    base.setLevel(logging.DEBUG)
    base.propagate = False
