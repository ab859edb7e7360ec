"""Strict JSON for every file vmdev reads: OCI specs (:mod:`vmdev.oci`), state files
(:mod:`vmdev.state`), ``--oci-device``. One decoder with vmdev's limits, in a module of its own so
that a reader needs none of the others (``vmdev attach`` loads a state file and no OCI spec)."""

from __future__ import annotations

import json
from typing import Any, Final

#: integers in a document have at most this many digits (uint64 has 20)
MAX_INT_DIGITS: Final = 24
#: the deepest nesting of arrays and objects a document may have. Python's decoder stops near its
#: recursion limit (1000 frames), but its encoder, ``copy.deepcopy`` and :mod:`vmdev.serialize` take
#: two or three frames a level: a document nested 400 deep decodes and then fails wherever it is
#: copied or written again (a state file's ``vmdev status --json``, a CDI-edited spec). OCI specs and
#: vmdev's own files nest fewer than 15 levels.
MAX_JSON_DEPTH: Final = 100


class JsonError(ValueError):
    """What :func:`json_value` refuses, in one reason; ``path`` is the JSON path of the place when
    it is known (``$.settings.options.x[0]...`` for nesting too deep), else empty. ``malformed``:
    the text is not JSON at all (bad syntax, not UTF-8), rather than JSON past vmdev's limits."""

    def __init__(self, reason: str, path: str = "", *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.path = path
        self.malformed = malformed


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: JSON has no infinity (nor does json.dumps)
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_value(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON strictly: UTF-8, no NaN/Infinity (nor numbers that would be), integers of at most
    :data:`MAX_INT_DIGITS` digits, at most ``max_depth`` levels of nesting. Every problem is one
    :class:`JsonError` (a ``ValueError``): each reader turns it into its own error type (OCI specs:
    :func:`decode_json`; state files: :mod:`vmdev.state`)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if text.startswith("\ufeff"):  # as json.loads: JSON text has no byte order mark
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _decoder().decode(text)
    except RecursionError:
        raise JsonError("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        malformed = isinstance(exc, json.JSONDecodeError | UnicodeDecodeError)
        raise JsonError(str(exc), malformed=malformed) from None
    # no more opening brackets than levels allowed: no need to walk (a journal line of a state file)
    if text.count("[") + text.count("{") > max_depth and not _nests_at_most(value, max_depth):
        raise JsonError(f"nested more than {max_depth} levels deep", _deep_path(value, max_depth, "$"))
    return value


_decoders: list[json.JSONDecoder] = []


def _decoder() -> json.JSONDecoder:
    """The strict decoder, made on first use: ``json.loads`` with hooks makes one per call, which
    cost more than decoding a state file's journal line."""
    if not _decoders:
        _decoders.append(json.JSONDecoder(parse_int=_json_int, parse_float=_json_float,
                                          parse_constant=_json_constant))
    return _decoders[0]


def _nests_at_most(value: Any, depth: int) -> bool:
    """Whether ``value`` has at most ``depth`` levels of arrays and objects, one level at a time
    (no recursion; ~2 ms for a 1,000-device state file, 4% of loading it)."""
    level = [value]
    for _ in range(depth + 1):
        below: list[Any] = []
        add = below.append
        for item in level:
            for inner in item.values() if type(item) is dict else item if type(item) is list else ():
                if type(inner) is dict or type(inner) is list:
                    add(inner)
        if not below:
            return True
        level = below
    return False


def _deep_path(value: Any, depth: int, path: str) -> str:
    """The JSON path of the first array or object nested below ``depth`` levels (shortened after
    five steps), in one more walk that remembers where each container came from (errors only)."""
    levels: list[list[tuple[Any, int, Any]]] = [[(value, -1, None)]]
    for _ in range(depth + 1):
        below: list[tuple[Any, int, Any]] = []
        for index, (item, _parent, _key) in enumerate(levels[-1]):
            for key, inner in item.items() if type(item) is dict else enumerate(item):
                if type(inner) is dict or type(inner) is list:
                    below.append((inner, index, key))
        if not below:
            return path
        levels.append(below)
    keys: list[Any] = []
    _item, parent, key = levels[-1][0]
    for level in reversed(levels[:-1]):
        keys.append(key)
        _item, parent, key = level[parent]
    steps = [f"[{k}]" if isinstance(k, int) else f".{k}" if k.isidentifier() else f"[{json.dumps(k)}]"
             for k in reversed(keys)]
    return path + "".join(steps[:5]) + ("..." if len(steps) > 5 else "")


__all__ = ["MAX_INT_DIGITS", "MAX_JSON_DEPTH", "JsonError", "json_value"]
