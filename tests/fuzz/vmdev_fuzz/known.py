"""Bugs the oracles still see whose code belongs to other people (issue 11's split of work).

Each :class:`KnownBug` says which violations it explains (oracle + a frame of the crash, or a
pattern of the detail). The broad properties tolerate exactly these violations (so the bounded CI
run stays green while the owners work), the long run counts them separately, and
``tests/fuzz/test_known_bugs.py`` holds, for each, a narrow property marked strict xfail with the
bug's key: when the owner's fix lands it passes, and the strict xfail turns the run red, asking
for the entry to be deleted here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import attrs

from vmdev_fuzz.oracles import CRASH, HANG, MULTI_LINE, PATH_CHANGE, Violation


@attrs.frozen
class KnownBug:
    key: str
    owner: str
    title: str
    oracle: str
    #: a crash or hang matches when its call chain (``file.py:function < caller.py:function``,
    #: innermost first) matches this regular expression
    stack: str = ""
    #: and its detail this one (both when both are given)
    detail: str = ""

    def matches(self, violation: Violation) -> bool:
        if violation.oracle != self.oracle or not (self.stack or self.detail):
            return False
        if self.stack and re.search(self.stack, violation.stack) is None:
            return False
        return not self.detail or re.search(self.detail, violation.detail) is not None


KNOWN_BUGS: Final[tuple[KnownBug, ...]] = (
    KnownBug(
        "block-size-int", "vmdev-block",
        "a disk's sysfs size that str.isdigit() takes but int() refuses ('²', 5,000 digits) ends in a "
        "PluginError wrapping ValueError (vmdev_block.host.block_size)",
        CRASH, stack=r"^vmdev_block/host\.py:block_size",
    ),
    KnownBug(
        "block-pmem-fifo-hang", "vmdev-block",
        "a loop-mounted source whose loop device's backing_file names a FIFO: the PFN probe's open() blocks "
        "forever (vmdev_block.pmem.read_pfn_info)",
        HANG, stack=r"^vmdev_block/pmem\.py:read_pfn_info",
    ),
    KnownBug(
        "block-backing-strip", "vmdev-block",
        "a loop device's backing_file is read with SysfsReader.read_line: stripped and cut at the first line "
        "break, so the plan's backing_file is not the host's (vmdev_block.host.loop_backing_file)",
        PATH_CHANGE, detail=r"backing file .*, but the host's is",
    ),
    KnownBug(
        "block-log-raw-text", "vmdev-block",
        "log records quote container and host paths raw ('%s: cannot read the read-only flag of %s'): a path "
        "holding U+0085, U+2028 or another C1 control (the OCI reader refuses only C0 and DEL) forges log lines",
        MULTI_LINE, detail=r"^log: vmdev\.block ",
    ),
)


def known(violation: Violation, bugs: Sequence[KnownBug] = KNOWN_BUGS) -> KnownBug | None:
    return next((bug for bug in bugs if bug.matches(violation)), None)


def by_key(key: str) -> KnownBug:
    return next(bug for bug in KNOWN_BUGS if bug.key == key)
