"""The oracles: what must hold for every answer vmdev gives, whatever the input.

* **no crash**: the only exceptions are :class:`vmdev.errors.VmdevError`; a ``PluginError`` that
  wraps another exception (a plugin's ``ValueError``/``TypeError``...) is a crash too;
* **no hang**: every case finishes within a time limit (:mod:`vmdev_fuzz.runner`);
* **one-line errors**: ``str(error)`` has no line break, no control character, no lone surrogate,
  and encodes as UTF-8;
* **no option injection**: each QEMU-style option of a plan, parsed as QEMU parses it
  (:mod:`vmdev_fuzz.qemuopts`), has unique keys, no bare flags, only keys that clean inputs give
  the same option kind (:class:`CleanKeys`), and every hostile string it carries is escaped;
* **no wrong device**: the host node a ``b``/``c``/``u`` request ends up with (through the fake
  stat) is that type with the requested major:minor;
* **paths preserved**: the container path, host path, backing file, socket, entropy source in a
  plan equal the input byte for byte (or the input was refused).
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import traceback
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from vmdev.errors import PluginError, VmdevError
from vmdev_fuzz.qemuopts import Option, parse_argv

CRASH: Final = "crash"
HANG: Final = "hang"
MULTI_LINE: Final = "multi-line"
INJECTION: Final = "injection"
WRONG_DEVICE: Final = "wrong-device"
PATH_CHANGE: Final = "path-change"
ORACLES: Final = (CRASH, HANG, MULTI_LINE, INJECTION, WRONG_DEVICE, PATH_CHANGE)

#: Unicode categories that break or forge a log line: controls, line/paragraph separators, surrogates
_BREAKING: Final = frozenset({"Cc", "Zl", "Zp", "Cs"})


@attrs.frozen
class Violation:
    oracle: str
    detail: str
    #: where a crash happened (``vmdev_block/host.py:71 in block_size``), for matching known bugs
    where: str = ""
    #: the crash's call chain, innermost first (``vmdev/qemu.py:escape < vmdev/backends/qemu.py:_machine_args``)
    stack: str = ""


def innermost(exc: BaseException) -> str:
    """``file:line in function`` of the deepest frame of ``exc``'s traceback (its root cause's; for
    a hang, where the time limit found the case)."""
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, Hang):
        cause = cause.__cause__
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if not f.filename.endswith("vmdev_fuzz/runner.py")]
    if not frames:
        return ""
    frame = frames[-1]
    parts = frame.filename.replace(os.sep, "/").split("/")
    short = "/".join(parts[-2:])
    return f"{short}:{frame.lineno} in {frame.name}"


def stack(exc: BaseException) -> str:
    """The root cause's call chain as ``file:function`` names, innermost first (known bugs match on
    these), without the fuzz kit's own frames."""
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, Hang):
        cause = cause.__cause__
    frames = ["/".join(f.filename.replace(os.sep, "/").split("/")[-2:]) + ":" + f.name
              for f in traceback.extract_tb(cause.__traceback__) if "/vmdev_fuzz/" not in f.filename]
    return " < ".join(reversed(frames))


class Hang(BaseException):
    """A case ran past its time limit (raised by the runner's alarm)."""


def line_problem(text: str) -> str | None:
    """Why ``text`` is not one printable line, or None."""
    for ch in text:
        if unicodedata.category(ch) in _BREAKING:
            return f"holds {ch!r} ({unicodedata.category(ch)})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"cannot be written as UTF-8: {exc.reason}"
    return None


def judge_error(exc: BaseException) -> list[Violation]:
    """The violations of an exception that ended a case (none for a proper one-line refusal)."""
    if isinstance(exc, Hang):
        return [Violation(HANG, str(exc), innermost(exc), stack(exc))]
    if not isinstance(exc, VmdevError):
        return [Violation(CRASH, f"{type(exc).__name__}: {_short(exc)}", innermost(exc), stack(exc))]
    out: list[Violation] = []
    cause = exc.__cause__
    if isinstance(exc, PluginError) and cause is not None and not isinstance(cause, VmdevError):
        out.append(Violation(CRASH, f"PluginError wrapping {type(cause).__name__}: {_short(cause)}",
                             innermost(exc), stack(exc)))
    try:
        text = str(exc)
    except Exception as failure:  # noqa: BLE001 - a str() that fails is itself the finding
        return [*out, Violation(MULTI_LINE, f"str() of {type(exc).__name__} raised {failure!r}")]
    problem = line_problem(text)
    if problem is not None:
        out.append(Violation(MULTI_LINE, f"{type(exc).__name__} {problem}: {text[:200]!r}",
                             innermost(exc)))
    return out


def _short(exc: BaseException) -> str:
    try:
        return repr(str(exc))[:200]
    except Exception:  # noqa: BLE001
        return type(exc).__name__


# --- QEMU options ---------------------------------------------------------------------------------
class CleanKeys:
    """The keys that clean inputs give each kind of option (``-device virtio-blk-pci``,
    ``-blockdev raw``...), learned from plans of clean inputs (a case's clean twin, and every
    case whose text is all clean)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], set[str]] = {}

    def learn(self, argv: Sequence[str]) -> None:
        for option in parse_argv(argv):
            self._keys.setdefault((option.flag, option.head), set()).update(option.keys)

    def knows(self, option: Option) -> bool:
        return (option.flag, option.head) in self._keys

    def unknown_keys(self, option: Option) -> list[str]:
        known = self._keys.get((option.flag, option.head))
        if known is None:
            return []
        return [key for key in option.keys if key not in known]

    def kinds(self) -> int:
        return len(self._keys)


def option_violations(argv: Sequence[str], clean: CleanKeys, tainted: Iterable[str]) -> list[Violation]:
    """Injection in a QEMU-style command line (see the module's description)."""
    out: list[Violation] = []
    # strings that could split an option: a comma with something on either side (a value is always
    # preceded by '=', so '=' + the string shows where it sits)
    hostile = [t for t in set(tainted) if "," in t and len(t.replace(",", "")) >= 2]
    for option in parse_argv(argv):
        label = f"{option.flag} {option.head}"
        if option.bare:
            out.append(Violation(INJECTION, f"{label}: bare parameter(s) {option.bare!r} in {option.raw!r}"))
        if option.duplicates():
            out.append(Violation(INJECTION, f"{label}: key(s) {option.duplicates()} twice in {option.raw!r}"))
        unknown = clean.unknown_keys(option)
        if unknown:
            out.append(Violation(INJECTION, f"{label}: key(s) {unknown} that clean inputs never give, in "
                                            f"{option.raw[:300]!r}"))
        if not option.json_form:
            for text in hostile:
                if f"={text}" in option.raw and "=" + text.replace(",", ",,") not in option.raw:
                    out.append(Violation(INJECTION, f"{label}: {text!r} reaches the option unescaped"))
    return out


def unverified_options(argv: Sequence[str], clean: CleanKeys) -> list[Option]:
    """Options whose kind, or some of whose keys, no clean input has shown yet."""
    return [option for option in parse_argv(argv) if not clean.knows(option) or clean.unknown_keys(option)]


# --- the devices of a plan ----------------------------------------------------------------------
@attrs.frozen
class Request:
    """One ``linux.devices`` request: what the container asked for."""

    container_path: str
    dev_type: str
    major: int
    minor: int


_NODE_TYPES: Final = {"b": stat.S_IFBLK, "c": stat.S_IFCHR, "u": stat.S_IFCHR}


def node_violation(request: Request, host_path: str, host: Any, *, store_socket: bool) -> Violation | None:
    """The host node of ``request`` must be its type with its numbers (the fake stat decides)."""
    kind = _NODE_TYPES.get(request.dev_type)
    if kind is None or request.major == -1 or not host_path:
        return None
    target = host_path
    if store_socket:  # a vhost-user store device: the store node of the same name has the numbers
        socket = posixpath.normpath(host_path)
        target = posixpath.join(posixpath.dirname(posixpath.dirname(socket)), "devices",
                                posixpath.basename(socket))
        kind = stat.S_IFBLK
    try:
        found = host.stat(str(host.dev_path(target)))
    except (OSError, ValueError):
        found = None
    if found is None or stat.S_IFMT(found.st_mode) not in (stat.S_IFBLK, stat.S_IFCHR):
        if request.dev_type == "b" or store_socket:
            what = "nothing" if found is None else f"mode 0o{stat.S_IFMT(found.st_mode):o}"
            return Violation(WRONG_DEVICE, f"{request.container_path} ({request.dev_type} "
                                           f"{request.major}:{request.minor}) became {host_path!r}, which is {what}")
        return None  # a character device with no node stays in the container
    numbers = (stat.S_IFMT(found.st_mode), os.major(found.st_rdev), os.minor(found.st_rdev))
    if numbers != (kind, request.major, request.minor):
        return Violation(WRONG_DEVICE, f"{request.container_path} ({request.dev_type} {request.major}:"
                                       f"{request.minor}) became {host_path!r}, which is "
                                       f"{'b' if numbers[0] == stat.S_IFBLK else 'c'} {numbers[1]}:{numbers[2]}")
    return None


def same_path(left: str, right: str) -> bool:
    """Equal, or equal once ``//``, ``/./`` and a trailing ``/`` are normalised (a lexical spelling,
    not a different file)."""
    return left == right or posixpath.normpath(left) == posixpath.normpath(right)


def json_strings(value: Any) -> set[str]:
    """Every string value in a JSON-like value."""
    out: set[str] = set()
    if isinstance(value, str):
        out.add(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            out |= json_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            out |= json_strings(item)
    return out


def xml_strings(elements: Iterable[str]) -> tuple[set[str], list[Violation]]:
    """Every attribute value and text of libvirt device elements; each must parse as one element."""
    out: set[str] = set()
    problems: list[Violation] = []
    for text in elements:
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            problems.append(Violation(INJECTION, f"device XML does not parse ({exc}): {text[:200]!r}"))
            continue
        for node in root.iter():
            out.update(node.attrib.values())
            if node.text:
                out.add(node.text)
    return out, problems


def plan_strings(plan_json: Mapping[str, Any], plan_key: str) -> tuple[set[str], list[Violation], list[str]]:
    """What a plan hands to its hypervisor, as strings: (values, XML problems, QEMU-style argv)."""
    part = plan_json.get(plan_key) or {}
    argv = [a for a in part.get("argv", []) if isinstance(a, str)] if isinstance(part, Mapping) else []
    values: set[str] = set()
    problems: list[Violation] = []
    if argv:
        for option in parse_argv(argv):
            values.update(value for _, value in option.params)
    if isinstance(part, Mapping):
        for key in ("hotplug", "unplug", "vm_config", "requests"):
            values |= json_strings(part.get(key))
        xml_parts = [d for d in part.get("devices", []) if isinstance(d, str)]
        domain = part.get("domain")
        if isinstance(domain, str):
            xml_parts.append(domain)
        found, problems = xml_strings(xml_parts)
        values |= found
    return values, problems, argv


def dumps(value: Any, limit: int = 3000) -> str:
    """``value`` as one ASCII line, long strings inside shortened (a case's repr can be megabytes)."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"
