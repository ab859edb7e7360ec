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

from vmdev_fuzz.oracles import Violation


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
)


def known(violation: Violation, bugs: Sequence[KnownBug] = KNOWN_BUGS) -> KnownBug | None:
    return next((bug for bug in bugs if bug.matches(violation)), None)


def by_key(key: str) -> KnownBug:
    return next(bug for bug in KNOWN_BUGS if bug.key == key)
