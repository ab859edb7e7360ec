"""Strict reading of decoded JSON into attrs classes, naming the JSON path of the first problem.

The state file is read by every ``vmdev attach``, ``detach`` and ``status``, in a fresh process
each time. cattrs read it before: importing cattrs and generating its functions for the state's
classes cost ~12 ms of CPU per process, more than the rest of the state's work (issue 13). The
state's types are few and plain, so this reader walks them itself, from each class's resolved
annotations (made once per class and process):

* ``str``, ``int``, ``float``, ``bool``: exactly that JSON type (a bool is no int, ``"2"`` is no
  int; an int is taken for a float), as the state's strict cattrs hooks did;
* ``Any``: the value as it is; ``X | None``: None, or an ``X``;
* enums and ``Literal``: one of their values; ``Path``: a string; ``tuple[T, ...]``, ``list[T]``,
  ``Sequence[T]``, ``set[T]``, ``frozenset[T]``: a JSON array, and ``tuple[A, B]`` one of exactly
  that length; ``Mapping[str, T]`` and ``dict[str, T]``: a JSON object (what
  :func:`vmdev.serialize.to_json` writes for each, so every model a family saves reads back);
* attrs classes: a JSON object holding the ``init`` fields by name (a trailing underscore dropped,
  ``class_`` is ``class``), unknown keys ignored, a missing field without a default an error; what
  the class's own validators raise is reported at the object's path.

Errors are :class:`Invalid` with cattrs' words (``required field missing``, ``invalid value,
expected int``) and its paths (``$.devices[0].attach_count``, ``$.devices[0].facts['node.type']``).
A type outside that list (a union of two classes, say) is a ``TypeError`` when its reader is made:
a programming error, never one of the document.
"""

from __future__ import annotations

import enum
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Final

import attrs

from vmdev.errors import VmdevError

Reader = Callable[[Any, str], Any]
#: a member a JSON object does not have
_ABSENT: Final = object()
_SCALARS: Final = (str, int, float, bool)
#: the containers read from a JSON array, by their ``typing`` origin: what each becomes
_ARRAYS: Final[Mapping[Any, Callable[[Iterable[Any]], Any]]] = {
    tuple: tuple, list: list, Sequence: list, MutableSequence: list,
    set: set, frozenset: frozenset, AbstractSet: frozenset, MutableSet: set,
}


class Invalid(ValueError):
    """The first value of a document that does not fit its type: what is wrong, and where;
    ``error`` is what a class's own checks raised, when that was the problem."""

    def __init__(self, message: str, path: str, error: BaseException | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.message = message
        self.path = path
        self.error = error

    def under(self, path: str) -> Invalid:
        """This problem, found by a reader given the path ``$``, at ``path`` (the readers of the
        members of arrays, objects and classes are given ``$`` and their container names the
        place only when one fails: a path per value read cost ~40% of loading a 1,000-device
        state; issue 13)."""
        return Invalid(self.message, path + self.path[1:], self.error)


def describe(exc: BaseException) -> str:
    """One problem a class's own checks found, in words (``field: message`` for a VmdevError)."""
    if isinstance(exc, VmdevError):
        return f"{exc.field}: {exc.message}" if exc.field else exc.message
    return str(exc) or type(exc).__name__


class TypedReader:
    """Reads values of given types, one reader per type made on first use.

    ``skip`` names, per class, ``init`` fields that are not read (derived ones the document does
    not keep: they get their defaults); ``hooks`` reads the given classes their own way (a class
    written as text, for one): each takes the value and its path and raises :class:`Invalid`."""

    def __init__(
        self, skip: Mapping[type, Sequence[str]] | None = None, hooks: Mapping[type, Reader] | None = None
    ) -> None:
        self._skip = {cls: frozenset(names) for cls, names in (skip or {}).items()}
        self._readers: dict[Any, Reader] = dict(hooks or {})

    def read(self, value: Any, kind: Any, path: str = "$") -> Any:
        """``value`` as a ``kind``; :class:`Invalid` naming the path below ``path`` if it is not one."""
        return self.reader(kind)(value, path)

    def reader(self, kind: Any) -> Reader:
        found = self._readers.get(kind)
        if found is None:
            found = self._readers[kind] = self._make(kind)
        return found

    def _make(self, kind: Any) -> Reader:
        if kind is Any:
            return lambda value, path: value
        if kind is type(None):
            return _none
        if kind in _SCALARS:
            return _scalar(kind)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return _enum(kind)
        if isinstance(kind, type) and attrs.has(kind):
            return self._attrs(kind)
        if kind is Path:
            return _path
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
            return _optional(self.reader(next(a for a in args if a is not type(None))))
        if origin is typing.Literal:
            return _literal(args)
        if origin is tuple and args and args[1:] != (Ellipsis,):
            return _fixed(tuple(self.reader(a) for a in args))
        make = _ARRAYS.get(origin)
        if make is not None and len(args) in (1, 2):
            return _array(self.reader(args[0]), make)
        if origin in (Mapping, MutableMapping, dict) and args:
            return _object(self.reader(args[0]), self.reader(args[1]))
        raise TypeError(f"vmdev.typedjson cannot read {kind!r} (it reads the JSON types, None, Any, "
                        "X | None, Literal, enums, Path, tuples, lists, sequences, sets, mappings and attrs "
                        "classes)")

    def _attrs(self, cls: type) -> Reader:
        skip = self._skip.get(cls, frozenset())
        fields = [(f.alias, f.name.rstrip("_"), f.name, f.default is attrs.NOTHING)
                  for f in attrs.fields(cls) if f.init and f.name not in skip]
        readers: dict[str, Reader] = {}

        def read(value: Any, path: str) -> Any:
            if not isinstance(value, dict):
                raise Invalid(f"invalid value, expected {cls.__name__}", path)
            kwargs = {}
            for alias, key, name, required in fields:
                member = value.get(key, _ABSENT)
                if member is not _ABSENT:
                    field_reader = readers.get(name)
                    if field_reader is None:
                        field_reader = readers[name] = self._field_reader(cls, name)
                    try:
                        kwargs[alias] = field_reader(member, "$")
                    except Invalid as exc:
                        raise exc.under(f"{path}.{key}") from None
                elif required:
                    raise Invalid("required field missing", f"{path}.{key}")
            try:
                return cls(**kwargs)
            except (VmdevError, TypeError, ValueError, ArithmeticError) as exc:
                raise Invalid(describe(exc), path, exc) from None

        return read

    def _field_reader(self, cls: type, name: str) -> Reader:
        """The reader of field ``name`` of ``cls``, from its annotation as ``typing.get_type_hints``
        resolves it. That function evaluates every annotation of the class and its bases through
        ``typing.ForwardRef`` (a compile each): ~0.65 ms for the state's classes, the largest part
        of a state file's first load in a ``vmdev attach`` (issue 13). The annotation written in
        the class's own body (the usual case, with ``from __future__ import annotations``) is
        evaluated alone, in the class's module, as ``get_type_hints`` would; anything that does not
        make a type this module reads (an inherited field, a name that does not evaluate, a quoted
        name inside, ``Annotated``) goes through ``get_type_hints`` as before."""
        annotation = inspect.get_annotations(cls).get(name)
        if isinstance(annotation, str):
            module = sys.modules.get(cls.__module__)
            try:
                # the namespaces as get_type_hints passes them: the module's names before the class's
                kind = eval(_compiled(annotation), dict(vars(cls)), vars(module) if module else {})
                return self.reader(kind)
            except Exception:  # noqa: BLE001 - get_type_hints decides, and raises what it raises
                pass
        return self.reader(typing.get_type_hints(cls)[name])


@functools.lru_cache(maxsize=512)
def _compiled(annotation: str) -> types.CodeType:
    """An annotation's code (the same few texts, ``str`` and ``int``, recur in every class)."""
    return compile(annotation, "<annotation>", "eval")


def _none(value: Any, path: str) -> None:
    if value is not None:
        raise Invalid("invalid value, expected None", path)


def _scalar(kind: type) -> Reader:
    def read(value: Any, path: str) -> Any:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise Invalid("invalid value, a number too large for a float", path) from None
        raise Invalid(f"invalid value, expected {kind.__name__}", path)

    return read


def _enum(kind: type[enum.Enum]) -> Reader:
    def read(value: Any, path: str) -> Any:
        try:
            return kind(value)
        except (ValueError, TypeError):
            raise Invalid(f"invalid value, expected {kind.__name__}", path) from None

    return read


def _path(value: Any, path: str) -> Path:
    if not isinstance(value, str):
        raise Invalid("invalid value, expected a path (a string)", path)
    return Path(value)


def _literal(choices: tuple[Any, ...]) -> Reader:
    def read(value: Any, path: str) -> Any:
        for choice in choices:  # by type too: True is no 1
            if type(choice) is type(value) and choice == value:
                return choice
        raise Invalid(f"invalid value, expected one of {', '.join(map(repr, choices))}", path)

    return read


def _fixed(items: tuple[Reader, ...]) -> Reader:
    def read(value: Any, path: str) -> Any:
        if not isinstance(value, list) or len(value) != len(items):
            raise Invalid(f"invalid value, expected a list of {len(items)}", path)
        return tuple(_elements(zip(items, value, strict=True), path))

    return read


def _elements(pairs: Iterable[tuple[Reader, Any]], path: str) -> list[Any]:
    """Each JSON array element read by its reader, at ``$``; the one that fails is named at
    ``path[index]``."""
    out: list[Any] = []
    try:
        for item, v in pairs:
            out.append(item(v, "$"))
    except Invalid as exc:
        raise exc.under(f"{path}[{len(out)}]") from None
    return out


def _optional(inner: Reader) -> Reader:
    return lambda value, path: None if value is None else inner(value, path)


def _array(item: Reader, make: Callable[[Iterable[Any]], Any]) -> Reader:
    def read(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise Invalid("invalid value, expected a list", path)
        return make(_elements(((item, v) for v in value), path))

    return read


def _object(key: Reader, item: Reader) -> Reader:
    def read(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid("invalid value, expected Mapping", path)
        out: dict[Any, Any] = {}
        for k, v in value.items():
            read_key = key(k, path)  # a key is checked at the object's own path, as before
            try:
                out[read_key] = item(v, "$")
            except Invalid as exc:
                raise exc.under(f"{path}[{k!r}]") from None
        return out

    return read
