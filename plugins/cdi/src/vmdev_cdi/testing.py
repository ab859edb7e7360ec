"""Test helpers: a fake ``stat(2)`` for injecting device nodes without a real ``/dev``.

CDI fills device nodes from the host (type, major:minor, mode) through a stat function that
does not follow symlinks. :class:`FakeStat` answers from a table, so tests run as any user on
any machine::

    stat = FakeStat()
    stat.add("/dev/nvidia0", "c", 195, 0, mode=0o666)
    Registry(dirs, stat=stat).inject_devices(oci, ["nvidia.com/gpu=0"])
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from typing import Final

_FORMATS: Final = {
    "c": stat_module.S_IFCHR,
    "b": stat_module.S_IFBLK,
    "p": stat_module.S_IFIFO,
    "f": stat_module.S_IFREG,
    "d": stat_module.S_IFDIR,
    "l": stat_module.S_IFLNK,
}


class FakeStat:
    """A stat function answering from a table (path -> file type, mode and device number);
    any other path is ``ENOENT``. ``calls`` records the paths asked for, in order."""

    def __init__(self) -> None:
        self.entries: dict[str, os.stat_result] = {}
        self.calls: list[str] = []

    def add(self, path: str, kind: str, major: int = 0, minor: int = 0, mode: int = 0o666) -> None:
        """``kind``: ``c``, ``b``, ``p`` (devices), ``f``, ``d``, ``l`` (file, directory, symlink)."""
        fields = (_FORMATS[kind] | mode, 1, 0, 1, 0, 0, 0, 0, 0, 0)
        self.entries[path] = os.stat_result(fields, {"st_rdev": os.makedev(major, minor)})

    def __call__(self, path: str) -> os.stat_result:
        self.calls.append(path)
        try:
            return self.entries[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
