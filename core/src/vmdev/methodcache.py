"""attrs's generated methods, compiled once and kept between runs, as Python keeps bytecode.

attrs writes each class's ``__init__``, ``__repr__``, ``__eq__`` and ``__hash__`` as Python source
and compiles it when the class is created. For a command line that starts afresh on every container
start, that compile is the largest single cost of starting: about 0.25 ms a class, some 13 ms of
the ~70 ms of CPU a ``vmdev plan`` takes with the bundled plugins, more than the rest of attrs's
work put together (issue 13, cold start). The source is the same from one run to the next but for
one number: the salt attrs puts first in the tuple ``__hash__`` hashes, the ``hash()`` of a string,
which differs in every process (hash randomisation).

:func:`compiled_methods` keeps the compiled code in a file next to vmdev's own bytecode
(``vmdev/__pycache__/``, under ``sys.pycache_prefix`` when that is set) and, while it is active,
has attrs take its code from there:

* The key is the code's file name (attrs's ``<attrs generated methods module.Class>``) and its
  source with the salt written as a fixed placeholder; that source is what is compiled and kept. A
  hit puts this run's salt into the code's constants. The result is the code ``compile`` makes of
  the real source, constant for constant and line for line; only the column where the salt's
  constant ends, on a line of its own, can differ (the placeholder is as wide as the widest salt),
  and that column only ever shows in a traceback's marker under an expression that raised, which a
  constant never does. ``core/tests/test_methodcache.py`` checks this under different hash seeds.
* Anything unexpected compiles as before: a source whose salt is not found exactly once (or that
  hashes with a salt that cannot be found), a code object in which the placeholder is not found
  exactly once, an entry that is not code, an unreadable or foreign cache file (another Python
  build, ``-O`` level, ``-X no_debug_ranges``, or ``__future__`` flags of attrs's module), an attrs
  without the internal function this hooks.
* The file is written (atomically: a temporary file renamed over it, with the mode of vmdev's
  source as Python gives bytecode its source's) only when something was compiled, and never when
  Python writes no bytecode (``PYTHONDONTWRITEBYTECODE``, ``-B``) or cannot write in that
  directory. It holds at most :data:`LIMIT` entries; beyond that a write keeps only the run's own.
  An entry's code is read (unmarshalled) only when a class asks for it.

The hook is attrs's private ``attr._make._compile_and_eval(script, globs, locs, filename)``, which
attrs 23.1 (the oldest vmdev allows) and 26.1 both have (read in their sources; a test fails if the
installed attrs lacks it; tox's ``core-oldest-attrs`` runs the core on 23.1). It is in place only
while a ``with`` block is open (the command line's run; blocks may nest or overlap), so other users
of attrs in the same process are unaffected outside it. The cache file has the trust of the
bytecode beside it: whoever can write ``__pycache__`` can already change what Python runs. pip
leaves the file behind when it uninstalls vmdev, as it does bytecode of other
Python versions.
"""

from __future__ import annotations
import __future__

import marshal
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

#: ``-X no_debug_ranges``: code compiled without column positions
_NO_DEBUG_RANGES: Final = ("no_debug_ranges" in getattr(sys, "_xoptions", {})
                           or bool(os.environ.get("PYTHONNODEBUGRANGES")))
#: what the file starts with (then the ``__future__`` flags it was compiled with, :func:`_header`); a
#: different element means another format, interpreter, ``-O`` level or ``-X no_debug_ranges``
_HEADER: Final = ("vmdev-attrs-methods", 4, sys.version, sys.flags.optimize, _NO_DEBUG_RANGES)
#: the most entries the file keeps (the bundled plugins' commands make about 150 classes)
LIMIT: Final = 1000
#: every ``from __future__`` feature's compiler flag
_FUTURE_FLAGS: Final[int] = sum(getattr(__future__, feature).compiler_flag
                                for feature in __future__.all_feature_names)
#: stands for the salt in the source compiled for the cache: as wide as the widest salt (a machine
#: word's text), a value no salt can take
_PLACEHOLDER: Final = "9" * len(str(-(2**63)))


def default_path() -> Path | None:
    """The cache file: where Python keeps this module's bytecode (``__pycache__``, or under
    ``sys.pycache_prefix``), named for this interpreter and ``-O`` level as bytecode is
    (``importlib.util.cache_from_source``); None when this interpreter keeps no bytecode."""
    from importlib.util import cache_from_source

    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attrs-methods.py")
    try:
        bytecode = cache_from_source(source)
    except NotImplementedError:  # no cache tag
        return None
    return Path(bytecode).with_suffix(".marshal")


#: a compiled source, marshalled (read only when used: a run needs a few of the entries), and where
#: its placeholder sits: indexes into ``co_consts`` and constant tuples, from the module's code down
#: (empty for code without a salt)
Entry = tuple[bytes, tuple[int, ...]]


class MethodCache:
    """Compiled methods by key, and what this run did with them. A plain class: an attrs class
    would be compiled before the cache is in place, on every run."""

    __slots__ = ("entries", "flags", "hits", "misses", "path", "used")

    def __init__(self, path: Path, entries: dict[str, Entry] | None = None, *, flags: int = 0) -> None:
        self.path = path
        #: the ``__future__`` flags attrs's own ``compile`` passes on (those of its module)
        self.flags = flags
        self.entries: dict[str, Entry] = entries or {}
        self.used: set[str] = set()
        self.hits = 0
        self.misses = 0

    def compile(self, script: str, filename: str) -> types.CodeType:
        """The code ``compile(script, filename, "exec")`` makes, from the cache if it is there."""
        keyed = _keyed(script, filename)
        if keyed is None:  # a salt that cannot be told apart for sure: compiled every time
            return self._compile(script, filename)
        salt, key, source = keyed
        cached = self.entries.get(key)
        code = _with_salt(cached, salt) if cached is not None else None
        if code is not None:
            self.hits += 1
        else:
            compiled = self._compile(source, filename)
            places = list(_places(compiled, int(_PLACEHOLDER))) if salt is not None else [()]
            if len(places) != 1:  # the placeholder is not exactly one constant: not cached
                return self._compile(script, filename)
            self.misses += 1
            self.entries[key] = (marshal.dumps(compiled), places[0])
            code = compiled if salt is None else _put(compiled, places[0], salt)
        self.used.add(key)
        return code

    def _compile(self, source: str, filename: str) -> types.CodeType:
        """``compile`` as attrs calls it: with its module's ``__future__`` flags, not this one's."""
        code: types.CodeType = compile(source, filename, "exec", flags=self.flags, dont_inherit=True)
        return code

    def save(self) -> None:
        """Write the entries if this run compiled any (see the module's rules)."""
        if not self.misses or sys.dont_write_bytecode:
            return
        with suppress(OSError):  # a read-only install: the next run compiles again, as it did before
            self.write()

    def write(self) -> None:
        """Write the entries (at most :data:`LIMIT`: beyond, this run's own) atomically; an
        ``OSError`` if the file cannot be written."""
        keep = self.entries if len(self.entries) <= LIMIT else {k: self.entries[k] for k in self.used}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the mode of this module's source, as Python gives bytecode its source's (not 0666 less a
            # loose umask: whoever can write the file chooses the code the next run executes)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, os.stat(__file__).st_mode & 0o666)
            with os.fdopen(fd, "wb") as out:
                out.write(marshal.dumps((*_header(self.flags), keep)))
            os.replace(temporary, self.path)
        except OSError:
            with suppress(OSError):
                temporary.unlink()
            raise


def load(path: Path, *, flags: int | None = None) -> MethodCache:
    """The cache in ``path`` for code compiled with the ``__future__`` ``flags`` (by default those
    attrs's own compile passes on); empty when the file is missing, unreadable or not this
    interpreter's (or was made with other flags)."""
    flags = _attrs_flags() if flags is None else flags
    cache = MethodCache(path, flags=flags)
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return cache
    if not (isinstance(data, tuple) and len(data) == len(_header(flags)) + 1 and data[:-1] == _header(flags)
            and isinstance(data[-1], dict)):
        return cache
    cache.entries = {k: v for k, v in data[-1].items() if isinstance(k, str) and _is_entry(v)}
    return cache


def _header(flags: int) -> tuple[Any, ...]:
    return (*_HEADER, flags)


def _is_entry(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bytes)
            and isinstance(value[1], tuple) and all(type(i) is int for i in value[1]))


@contextmanager
def compiled_methods(path: Path | None = None, *, save: bool = True) -> Iterator[MethodCache | None]:
    """Within this block attrs compiles each class's methods through the cache in ``path``
    (:func:`default_path` when None); the cache is saved when the block ends, however it ends
    (unless ``save`` is false). Yields the cache, or None where attrs has no hook for it (nothing
    is cached then). Blocks may nest or overlap (threads): attrs is hooked while any is open and
    compiles through the innermost open one's cache."""
    import attr._make as make

    path = path or default_path()
    if path is None or not hasattr(make, "_compile_and_eval"):  # no bytecode, or no hook: as before
        yield None
        return
    cache = load(path)
    with _lock:
        if not _open:
            _attrs_own[:] = [make._compile_and_eval]
            make._compile_and_eval = _through_cache
        _open.append(cache)
    try:
        yield cache
    finally:
        with _lock:
            _open.remove(cache)
            if not _open and make._compile_and_eval is _through_cache:
                make._compile_and_eval = _attrs_own[0]
        if save:
            cache.save()


#: the caches of the open :func:`compiled_methods` blocks, innermost last; attrs's own
#: ``_compile_and_eval`` while they are open
_open: list[MethodCache] = []
_attrs_own: list[Callable[..., None]] = []
_lock: Final = threading.Lock()


def _attrs_flags() -> int:
    """The ``__future__`` flags of attrs's own ``_compile_and_eval`` (its module's, which its
    ``compile`` passes on), hooked or not; 0 for an attrs without it."""
    import attr._make as make

    with _lock:
        own = _attrs_own[0] if _open else getattr(make, "_compile_and_eval", None)
    flags: int = getattr(getattr(own, "__code__", None), "co_flags", 0)
    return flags & _FUTURE_FLAGS


def _through_cache(script: str, globs: dict[str, Any] | None, locs: Any = None, filename: str = "") -> None:
    """attrs's ``_compile_and_eval(script, globs, locs, filename)``, compiling through the cache."""
    caches = _open[-1:]
    if not caches:  # the last block closed as this class was being made
        _attrs_own[0](script, globs, locs, filename)
        return
    eval(caches[0].compile(script, filename), globs, locs)  # attrs's own generated code, as attrs runs it


def _keyed(script: str, filename: str) -> tuple[int | None, str, str] | None:
    """The salt in ``script`` (None when it has none: not attrs's code, or a class without a
    generated ``__hash__``), the cache key, and the source to compile for the cache: the salt
    replaced by :data:`_PLACEHOLDER`. None when the salt is found more than once, the placeholder
    is in the source already, or the source hashes with a salt that cannot be found (it would
    differ in every run)."""
    for salt in _salts(filename):
        found = script.count(str(salt))
        if found:
            if found != 1 or _PLACEHOLDER in script:
                return None
            source = script.replace(str(salt), _PLACEHOLDER)
            return salt, f"{filename}\0{source}", source
    if "def __hash__(" in script:
        return None
    return None, f"{filename}\0{script}", script  # nothing in it varies from run to run


def _salts(filename: str) -> list[int]:
    """What attrs's ``__hash__`` salt is for the class the code's file name names: the ``hash()`` of
    ``<attrs generated hash module.Class>``, where a ``-N`` suffix may be attrs's (added for a name
    already in the line cache) or the class's own name."""
    prefix = "<attrs generated "
    if not (filename.startswith(prefix) and filename.endswith(">")):
        return []
    _, _, qualified = filename[len(prefix):-1].partition(" ")
    names = [qualified]
    stem, dash, count = qualified.rpartition("-")
    if dash and count.isdigit():
        names.append(stem)
    return [hash(f"<attrs generated hash {name}>") for name in names if name]


def _with_salt(entry: Entry, salt: int | None) -> types.CodeType | None:
    """The entry's code with this run's salt where the placeholder is; None if it is not code or
    the place it names holds no placeholder (a damaged file)."""
    data, place = entry
    try:
        code = marshal.loads(data)
        if not isinstance(code, types.CodeType):
            return None
        if salt is None:
            return code if not place else None
        return _put(code, place, salt)  # type: ignore[no-any-return]
    except (EOFError, IndexError, TypeError, ValueError):
        return None


def _places(value: Any, placeholder: int, here: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    """Where ``placeholder`` is among the constants of ``value`` (code, or a constant), nested
    code and tuples included; a frozenset holding it counts twice, since a set has no places."""
    if type(value) is int:
        if value == placeholder:
            yield here
    elif isinstance(value, (types.CodeType, tuple)):
        items = value.co_consts if isinstance(value, types.CodeType) else value
        for index, item in enumerate(items):
            yield from _places(item, placeholder, (*here, index))
    elif isinstance(value, frozenset) and any(type(v) is int and v == placeholder for v in value):
        yield here
        yield here


def _put(value: Any, place: tuple[int, ...], salt: int) -> Any:
    """``value`` with the placeholder at ``place`` (see :func:`_places`) replaced by ``salt``."""
    if not place:
        if type(value) is not int or value != int(_PLACEHOLDER):
            raise ValueError("no placeholder there")
        return salt
    index, rest = place[0], place[1:]
    items = list(value.co_consts if isinstance(value, types.CodeType) else value)
    items[index] = _put(items[index], rest, salt)
    if isinstance(value, types.CodeType):
        return value.replace(co_consts=tuple(items))
    if type(value) is not tuple:
        raise TypeError("a place is a code object's or a tuple's")
    return tuple(items)


#: modules :func:`warm` leaves alone: test helpers (they import pytest) and ``python -m`` entries
_NOT_WARMED: Final = ("__main__", "testing", "conftest", "tests")


def warm(path: Path | None = None) -> tuple[MethodCache, list[str]]:
    """Import every module of vmdev and of every installed plugin's package through the cache, and
    write it: the cache a command would otherwise fill on its first runs, for an install whose
    folder the commands cannot write (a read-only ``/opt``), made at install time as
    ``compileall`` makes bytecode. Written whatever ``sys.dont_write_bytecode`` says; an
    ``OSError`` if it cannot be (a ``RuntimeError`` where attrs has no hook for the cache). Returns
    the cache and a line for each module that failed to import (skipped)."""
    import importlib

    skipped: list[str] = []
    with compiled_methods(path, save=False) as cache:
        if cache is None:
            raise RuntimeError("nothing to cache: this interpreter keeps no bytecode, or this attrs has no "
                               "attr._make._compile_and_eval")
        from vmdev.plugins import PluginManager

        for package in PluginManager().plugin_packages():
            for name in _submodules(package, skipped):
                try:
                    importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - a module that does not import is not cached
                    skipped.append(f"{name}: {type(exc).__name__}: {exc}")
    cache.write()
    return cache, skipped


def _submodules(package: str, skipped: list[str]) -> Iterator[str]:
    """``package``'s modules, all levels, but those of :data:`_NOT_WARMED`."""
    import importlib
    import pkgutil

    path = getattr(importlib.import_module(package), "__path__", [])
    for module in pkgutil.walk_packages(path, f"{package}.", onerror=lambda name: skipped.append(name)):
        if not set(module.name.split(".")) & set(_NOT_WARMED):
            yield module.name


def main(argv: list[str] | None = None) -> int:
    """``python -m vmdev.methodcache [--path FILE]``: :func:`warm`, with one line saying what was
    written (and one per module skipped), or the error; exit 1 if nothing could be written."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m vmdev.methodcache", description=(
        "Fill vmdev's cache of compiled attrs methods for vmdev and every installed plugin (run it "
        "where vmdev's folder is read-only to the commands, after installing or upgrading)."))
    parser.add_argument("--path", type=Path, help="the cache file (default: vmdev's, next to its bytecode)")
    args = parser.parse_args(argv)
    target = args.path or default_path()
    try:
        cache, skipped = warm(target)
    except OSError as exc:
        print(f"vmdev.methodcache: error: cannot write {json.dumps(str(target))}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"vmdev.methodcache: error: {exc}", file=sys.stderr)
        return 1
    for line in skipped:
        print(f"vmdev.methodcache: skipped {line}", file=sys.stderr)
    print(f"{len(cache.entries)} compiled attrs sources in {cache.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["LIMIT", "MethodCache", "compiled_methods", "default_path", "load", "main", "warm"]
