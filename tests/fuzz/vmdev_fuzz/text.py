"""Hostile text: the characters and fragments that broke vmdev before (issue 11).

Commas and ``=`` (QEMU option injection), control characters and line separators (forged log
lines), lone surrogates (strings no codec writes), U+FFFD and non-ASCII (silent re-encoding),
whitespace at either end (silent ``strip()``), ``..`` and ``//`` (path games), quotes and the
characters of uevent and INI syntax, digits that ``int()`` reads (``²``), and very long strings.
"""

from __future__ import annotations

import hashlib
from typing import Final

from hypothesis import strategies as st

#: characters that never need quoting anywhere
SAFE_CHARS: Final = "abcdefghijklmnopqrstuvwxyz0123456789._-"

WORDS: Final = ("sda", "vdb", "loop0", "disk", "img", "a", "fuzz", "x.img", "dev", "nvme0n1", "data")

NASTY: Final = (
    ",", ",,", "=", ",readonly=on", ",read-only=on", ",file.filename=/etc/shadow", ",id=x",
    ",x-injected=1", ",share=on", "=on,", " ", "  ", "\t", "\n", "\r", "\r\n", "\x00", "\x01",
    "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029", "\ud800", "\udc80", "\udfff", "\ufffd", "²", "٣",
    "é", "\u00a0", "\u202e", "😀", "'", '"', "`", "\\", "#", ";", ":", "$", "{", "}", "<", ">", "&",
    "..", "//", "/./", "~", "*", "?", "%s", "%n", "\\040",
)


def piece() -> st.SearchStrategy[str]:
    """One fragment: a plain word, a hostile fragment, or arbitrary short text."""
    return st.one_of(
        st.sampled_from(WORDS),
        st.sampled_from(NASTY),
        st.text(max_size=4),
        st.text(alphabet=SAFE_CHARS, min_size=1, max_size=8),
    )


def name(*, max_pieces: int = 4) -> st.SearchStrategy[str]:
    """A path component (may hold anything, even ``/``: the callers decide what that means)."""
    return st.lists(piece(), min_size=1, max_size=max_pieces).map("".join)


def long_text() -> st.SearchStrategy[str]:
    """Strings longer than any buffer vmdev or QEMU should trust (sun_path, NAME_MAX, PATH_MAX)."""
    return st.builds(lambda ch, n: ch * n, st.sampled_from(["a", ",", "é", "9", "/"]),
                     st.sampled_from([100, 108, 256, 4097]))


def mild_name() -> st.SearchStrategy[str]:
    """A name with at most one hostile fragment in plain words (most inputs get somewhere)."""
    plain = st.sampled_from(WORDS)
    return st.one_of(plain, st.builds(lambda a, b, c: a + b + c, plain, st.sampled_from(NASTY), plain))


def path(prefix: str = "/dev/") -> st.SearchStrategy[str]:
    """A path starting with ``prefix`` (usually): plain, mildly or thoroughly hostile."""
    head = st.sampled_from([prefix, prefix, prefix, "/", "", "//", prefix + "../", "/nonexistent-fuzz/"])
    body = st.lists(name(), min_size=1, max_size=3).map("/".join)
    return st.one_of(
        mild_name().map(lambda n: prefix + n),
        mild_name().map(lambda n: prefix + n),
        st.builds(str.__add__, head, body),
        long_text().map(lambda t: prefix + t),
    )


def any_text() -> st.SearchStrategy[str]:
    return st.one_of(mild_name(), name(), st.text(max_size=20), long_text())


def is_clean(text: str) -> bool:
    """Nothing in ``text`` can split a QEMU option (QemuOpts and keyval split at a comma only; JSON
    forms escape everything): its keys are what the renderer meant."""
    return "," not in text


def clean(text: str) -> str:
    """``text`` with its commas replaced and a digest of the original appended (so that different
    hostile strings stay different): the clean twin of an input, same shape otherwise."""
    if is_clean(text):
        return text
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return text.replace(",", "_") + "-" + digest
