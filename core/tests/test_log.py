from __future__ import annotations

import logging

import pytest

from vmdev import set_logger
from vmdev.plugins import LoadPolicy, PluginLoadWarning, PluginManager


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_set_logger_receives_vmdev_records_and_can_be_undone() -> None:
    mine = logging.getLogger("my-runtime")
    mine.setLevel(logging.DEBUG)
    collect = Collect()
    mine.addHandler(collect)
    try:
        set_logger(mine)
        with pytest.warns(PluginLoadWarning):
            PluginManager(LoadPolicy(only=("no-such-dist",))).load()
        assert any("'no-such-dist', which is not installed" in m for m in collect.messages)
        set_logger(None)
        collect.messages.clear()
        with pytest.warns(PluginLoadWarning):
            PluginManager(LoadPolicy(only=("no-such-dist",))).load()
        assert collect.messages == []
        assert logging.getLogger("vmdev").propagate is True
    finally:
        set_logger(None)
        mine.removeHandler(collect)
