"""A uevent's DEVNAME reaches the plan byte for byte (found by the fuzz suite: ``vfio/2\\u2028``
became ``/dev/vfio/2``, because ``str.splitlines`` and ``str.strip`` treat U+2028 and U+0085 as
line breaks and blanks)."""

from __future__ import annotations

import pytest

from vmdev.defaults.host_path import parse_uevent
from vmdev.errors import ResolveError


@pytest.mark.parametrize("name", ["vfio/2\u2028", "sda\x85", "disk\u2029x", "\u00a0sdb", "vd\x1cb"])
def test_a_devname_keeps_every_character_but_ascii_blanks(name: str) -> None:
    values = parse_uevent(f"MAJOR=8\nMINOR=0\nDEVNAME={name}\nDEVTYPE=disk\n", source="uevent", device="/dev/x")
    assert values == {"MAJOR": "8", "MINOR": "0", "DEVNAME": name, "DEVTYPE": "disk"}


def test_lines_end_at_newline_and_ascii_blanks_are_trimmed() -> None:
    values = parse_uevent("  MAJOR = 8 \r\n\tDEVNAME=\tsda \r\n\n# comment\n", source="uevent", device="/dev/x")
    assert values == {"MAJOR": "8", "DEVNAME": "sda"}


def test_a_unicode_line_separator_does_not_start_a_line() -> None:
    assert "DEVNAME" not in parse_uevent("X=1\u2028DEVNAME=sda\n", source="uevent", device="/dev/x")
    with pytest.raises(ResolveError, match="line 1"):
        parse_uevent("garbage\u2028\n", source="uevent", device="/dev/x")
