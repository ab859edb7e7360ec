"""attrs's generated methods from the compiled cache (vmdev.methodcache, issue 13's cold start).

The cache is only worth having if a class made from it is the class attrs would have made. Each
child process here makes the same classes twice, once through the cache and once as attrs does,
under the same module and name (so with the same ``__hash__`` salt), and compares the code of
every generated method; the children run under different hash seeds, as separate runs of
``vmdev`` do, so the salt differs from the run that filled the cache.
"""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest

from vmdev import methodcache
from vmdev.methodcache import compiled_methods, load

#: classes of every shape the cache must get right: a hash over fields, over no field (a constant
#: tuple the compiler folds), a cached hash, no generated hash, no eq, validators, converters,
#: defaults and factories, a dict class, keyword-only fields
MODELS = textwrap.dedent("""
    import attrs

    @attrs.frozen
    class Point:
        x: int
        y: int = 0

    @attrs.frozen
    class Nothing:
        pass

    @attrs.frozen(cache_hash=True)
    class Cached:
        name: str = attrs.field(validator=attrs.validators.instance_of(str))

    @attrs.define
    class Mutable:
        items: list[int] = attrs.Factory(list)
        label: str = attrs.field(default="a", converter=str)

    @attrs.frozen(eq=False)
    class Identity:
        value: int

    @attrs.frozen(slots=False, kw_only=True)
    class Loose:
        a: int
        b: tuple[int, ...] = ()
""")

#: makes MODELS through the cache and as attrs does, then reports the differences
CHILD = textwrap.dedent("""
    import json, sys, types
    from vmdev.methodcache import _PLACEHOLDER, _salts, compiled_methods

    def made(source):
        module = types.ModuleType("acme_models")
        sys.modules["acme_models"] = module
        exec(compile(source, "acme_models.py", "exec"), module.__dict__)
        return module

    source = sys.argv[2]
    with compiled_methods(__import__("pathlib").Path(sys.argv[1])) as cache:
        cached = made(source)
    plain = made(source)
    report = {"hits": cache.hits, "misses": cache.misses, "methods": 0, "differences": [], "salts": []}
    for name in ("Point", "Nothing", "Cached", "Mutable", "Identity", "Loose"):
        report["salts"].append(_salts(f"<attrs generated methods acme_models.{name}>")[0])
        for method in ("__init__", "__repr__", "__eq__", "__hash__"):
            ours, theirs = getattr(getattr(cached, name), method), getattr(getattr(plain, name), method)
            if not hasattr(theirs, "__code__"):
                report["differences"] += [] if ours is theirs else [f"{name}.{method}: {ours!r}"]
                continue
            a, b = ours.__code__, theirs.__code__
            report["methods"] += 1
            if a.replace(co_linetable=b.co_linetable) != b or list(a.co_lines()) != list(b.co_lines()):
                report["differences"].append(f"{name}.{method}")
            positions = (a.co_positions(), b.co_positions()) if hasattr(a, "co_positions") else ((), ())  # 3.11
            columns = [(p, q) for p, q in zip(*positions) if p != q]
            if columns and not (len(columns) == 1 and method == "__hash__" and columns[0][0][:3] == columns[0][1][:3]):
                report["differences"].append(f"{name}.{method} positions {columns}")
    point = (cached.Point(1, 2), plain.Point(1, 2))
    report["hashes_agree"] = hash(point[0]) == hash(point[1]) and hash(cached.Nothing()) == hash(plain.Nothing())
    report["repr"] = repr(point[0])
    print(json.dumps(report))
""")


def child(cache: Path, seed: int, models: str = MODELS, *options: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, *options, "-c", CHILD, str(cache), models], capture_output=True,
                          text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_classes_made_from_the_cache_under_other_hash_seeds_have_the_code_attrs_compiles(tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    first = child(cache, seed=1)
    compiles = first["misses"]  # one per class since attrs 24, one per method before
    assert first["hits"] == 0 and compiles >= 6
    assert first["differences"] == [] and first["hashes_agree"]
    salts = set(first["salts"])
    for seed in (2, 3, 4, 5):
        later = child(cache, seed)
        assert (later["hits"], later["misses"]) == (compiles, 0), seed
        assert later["differences"] == [], seed
        assert later["methods"] == first["methods"] == 21
        assert later["hashes_agree"] and later["repr"] == "Point(x=1, y=2)"
        salts.update(later["salts"])
    # the seeds gave salts of both signs and of fewer digits than the placeholder's: each case ran
    assert min(salts) < 0 < max(salts)
    assert any(len(str(salt)) < len(methodcache._PLACEHOLDER) for salt in salts)


def test_a_changed_class_is_compiled_again_and_kept_beside_the_old(tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    compiles = child(cache, seed=1)["misses"]
    changed = child(cache, seed=2, models=MODELS.replace("y: int = 0", "y: int = 0\n    z: int = 0"))
    assert changed["hits"] > 0 and changed["misses"] > 0  # Point's code only
    assert changed["hits"] + changed["misses"] == compiles
    assert changed["differences"] == []
    assert len(load(cache).entries) == compiles + changed["misses"]


def make_point(module: str = "acme_points") -> type:
    namespace: dict[str, Any] = {"__name__": module, "attrs": attrs}
    exec("@attrs.frozen\nclass Point:\n    x: int\n", namespace)
    cls: type = namespace["Point"]
    return cls


@pytest.fixture
def compiles(tmp_path_factory: pytest.TempPathFactory) -> int:
    """How many compiles attrs makes for :func:`make_point`'s class (one since attrs 24, one per
    method before)."""
    with compiled_methods(tmp_path_factory.mktemp("count") / "c.marshal") as cache:
        make_point("acme_count")
    assert cache is not None
    return cache.misses


def test_the_hook_is_attrs_s_own_again_after_the_block_even_after_an_error(tmp_path: Path) -> None:
    import attr._make as make

    original, inside = make._compile_and_eval, []

    def fail_inside() -> None:
        with compiled_methods(tmp_path / "c.marshal") as cache:
            inside.append((cache, make._compile_and_eval))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_inside()
    assert inside[0][0] is not None, "this attrs has no _compile_and_eval: vmdev.methodcache caches nothing"
    assert inside[0][1] is not original
    assert make._compile_and_eval is original
    assert load(tmp_path / "c.marshal").entries == {}  # nothing was compiled, nothing written


def test_a_run_that_compiled_writes_the_file_and_one_that_did_not_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiles: int
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "c.marshal"
    with compiled_methods(path) as cache:
        make_point()
    assert cache is not None and cache.misses == compiles
    written = path.stat().st_mtime_ns, path.read_bytes()
    with compiled_methods(path) as cache:
        make_point()
    assert cache is not None and (cache.hits, cache.misses) == (compiles, 0)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written
    assert not list(tmp_path.glob("*.tmp"))


def test_nothing_is_written_when_python_writes_no_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          compiles: int) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    with compiled_methods(tmp_path / "c.marshal") as cache:
        make_point()
    assert cache is not None and cache.misses == compiles
    assert not (tmp_path / "c.marshal").exists()


@pytest.mark.parametrize("content", [
    b"", b"not marshal at all", marshal.dumps(("another", 1, sys.version, 0, {})),
    marshal.dumps(("vmdev-attrs-methods", 1, "2.7.18", sys.flags.optimize, {})), marshal.dumps([1, 2]),
    marshal.dumps((*methodcache._header(methodcache._attrs_flags()), {"key": "not code", 3: compile("", "", "exec")})),
], ids=["empty", "garbage", "another format", "another python", "not a tuple", "odd entries"])
def test_a_cache_file_that_is_not_this_interpreter_s_is_ignored_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, compiles: int
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "c.marshal"
    path.write_bytes(content)
    with compiled_methods(path) as cache:
        point = make_point()
    assert point(3) == point(3) and repr(point(3)) == "Point(x=3)"
    assert cache is not None and cache.misses == compiles
    assert len(load(path).entries) == compiles


def test_a_folder_that_cannot_be_written_costs_the_cache_not_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiles: int
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    (tmp_path / "file").write_text("a file where the folder should be")
    with compiled_methods(tmp_path / "file" / "c.marshal") as cache:
        point = make_point()
    assert cache is not None and cache.misses == compiles and point(1).x == 1
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_beyond_the_limit_a_write_keeps_only_the_run_s_own_entries(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "c.marshal"
    for module in ("acme_a", "acme_b"):
        with compiled_methods(path):
            make_point(module)
    two = set(load(path).entries)
    monkeypatch.setattr(methodcache, "LIMIT", len(two))
    with compiled_methods(path) as cache:
        make_point("acme_a")
        make_point("acme_c")
    assert cache is not None
    kept = set(load(path).entries)
    assert kept == cache.used and len(kept) < len(two) + cache.misses
    assert not any("acme_b." in key.split("\0")[0] for key in kept)
    assert any("acme_a." in key.split("\0")[0] for key in kept) and any("acme_c." in key for key in kept)


def test_a_source_whose_salt_cannot_be_told_apart_is_compiled_and_not_kept(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """If attrs ever writes the salt twice (or something else equal to it), the cache stays out."""
    cache = methodcache.MethodCache(tmp_path / "c.marshal")
    (salt,) = methodcache._salts("<attrs generated methods acme.Twice>")
    script = f"def __hash__(self):\n    return hash(({salt}, {salt}))\n"
    namespace: dict[str, Any] = {}
    exec(cache.compile(script, "<attrs generated methods acme.Twice>"), namespace)
    assert namespace["__hash__"](None) == hash((salt, salt))
    assert (cache.hits, cache.misses, cache.entries) == (0, 0, {})


def test_the_salt_is_attrs_s_for_the_class_whatever_the_line_cache_suffix() -> None:
    point = make_point("acme_salts")
    consts = [c for c in point.__hash__.__code__.co_consts if type(c) is int]
    (salt,) = methodcache._salts("<attrs generated methods acme_salts.Point>")
    assert salt in consts
    assert methodcache._salts("<attrs generated methods acme_salts.Point-2>")[1] == salt
    assert methodcache._salts("<string>") == []


def test_a_class_whose_own_name_ends_in_a_dash_and_digits_is_cached(tmp_path: Path, compiles: int) -> None:
    """``-1`` is then the class's, not attrs's line-cache suffix: its salt is the full name's."""
    class Dash:
        x: int

    Dash.__qualname__ = "Dash-1"  # as attrs.make_class("Dash-1", ...) names it
    with compiled_methods(tmp_path / "c.marshal") as cache:
        dashed: Any = attrs.frozen(Dash)  # mypy's attrs plugin cannot see a class made here
    assert cache is not None and (cache.misses, len(cache.entries)) == (compiles, compiles)
    assert hash(dashed(1)) == hash(dashed(1)) and dashed(1) != dashed(2)
    salts = methodcache._salts(f"<attrs generated methods {dashed.__module__}.Dash-1>")
    assert not any(str(salt) in key for salt in salts for key in cache.entries)


def test_vmdev_plan_run_again_compiles_no_attrs_method(tmp_path: Path, null_plan: list[str]) -> None:
    """The command line uses the cache: the first plan fills it, the second finds every class
    there and so leaves the file as it was (it is written only after a compile)."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [sys.executable, "-c", "import sys; sys.argv[0] = 'vmdev'; from vmdev.cli import main; main()",
            *null_plan]
    plans = []
    for _ in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        plans.append(json.loads(done.stdout))
        found = list((tmp_path / "pycache").rglob("attrs-methods.*.marshal"))
        assert len(found) == 1
        if len(plans) == 1:
            first = found[0].stat().st_mtime_ns, found[0].read_bytes()
    assert plans[0] == plans[1]
    assert (found[0].stat().st_mtime_ns, found[0].read_bytes()) == first
    names = {key.split("\0")[0] for key in load(found[0]).entries}
    assert any(name.endswith(" vmdev.planner.Plan>") for name in names)
    assert any(name.endswith(" vmdev.models.PciPath>") for name in names)


def test_an_entry_that_is_not_code_or_whose_place_holds_no_placeholder_is_compiled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiles: int
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "c.marshal"
    with compiled_methods(path):
        make_point("acme_damaged")
    entries = load(path).entries
    (key, (code, place)), = [(k, v) for k, v in entries.items() if v[1]]  # the code with the salt
    header = marshal.loads(path.read_bytes())[:-1]
    damaged = [(code, ()), (code, (0,)), (code, (*place[:-1], place[-1] + 1)), (code, (99, 0)),
               (b"not marshal", place), (code[:-3], place), (marshal.dumps("not code"), place)]
    for wrong in damaged:
        path.write_bytes(marshal.dumps((*header, {**entries, key: wrong})))
        with compiled_methods(path) as cache:
            point = make_point("acme_damaged")
        assert cache is not None and (cache.hits, cache.misses) == (compiles - 1, 1), wrong
        assert hash(point(1)) == hash(point(1)) and point(1) != point(2)


#: runs the command line as the console script does and reports what the method cache did
COUNTING = textwrap.dedent("""
    import json, sys
    from vmdev import methodcache
    save = methodcache.MethodCache.save

    def report(self):
        print(json.dumps({"hits": self.hits, "misses": self.misses}), file=sys.stderr)
        save(self)

    methodcache.MethodCache.save = report
    sys.argv[0] = "vmdev"
    from vmdev.cli import main
    main()
""")


#: a plugin package with a submodule of attrs classes, a test helper that needs pytest's absence to
#: matter, and a module that fails to import
WARM_PACKAGE = {
    "acme_warm/__init__": "", "acme_warm/plugin": "",
    "acme_warm/models": "import attrs\n\n@attrs.frozen\nclass Widget:\n    size: int\n",
    "acme_warm/testing": "import a_module_that_is_not_installed\n",
    "acme_warm/broken": "raise RuntimeError('broken on purpose')\n",
}


def test_warming_fills_the_cache_so_that_a_plan_that_may_not_write_compiles_nothing(
    tmp_path: Path, null_plan: list[str], make_dist: Any
) -> None:
    """For a read-only install: ``python -m vmdev.methodcache`` at install time, then every
    command finds its classes (here with bytecode writing off, as a read-only folder would be)."""
    site = make_dist("acme-warm", {"acme_warm": "acme_warm.plugin"}, WARM_PACKAGE)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "VMDEV_PLUGINS": "acme-warm",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    plan = [sys.executable, "-c", COUNTING, *null_plan]

    def planned(prefix: str) -> dict[str, int]:
        done = subprocess.run(plan, capture_output=True, text=True, env={**env, "PYTHONPYCACHEPREFIX": prefix},
                              check=False)
        assert done.returncode == 0, done.stderr
        counts: dict[str, int] = json.loads(done.stderr.strip().splitlines()[-1])
        return counts

    cold = planned(str(tmp_path / "cold"))
    assert cold["hits"] == 0 and cold["misses"] > 20  # nothing written: every run compiles

    prefix = str(tmp_path / "warm")
    done = subprocess.run([sys.executable, "-m", "vmdev.methodcache"], capture_output=True, text=True,
                          env={**env, "PYTHONPYCACHEPREFIX": prefix}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["vmdev.methodcache: skipped acme_warm.broken: RuntimeError: broken on purpose"]
    (written,) = Path(prefix).rglob("attrs-methods.*.marshal")
    assert done.stdout.endswith(f" compiled attrs sources in {written}\n")
    names = {key.split("\0")[0] for key in load(written).entries}
    assert any(name.endswith(" acme_warm.models.Widget>") for name in names)
    assert any(name.endswith(" vmdev.state.SandboxState>") for name in names)  # not only the plan's

    warm = planned(prefix)
    assert warm == {"hits": cold["misses"], "misses": 0}


def test_warming_into_a_place_that_cannot_be_written_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the folder should be")
    target = tmp_path / "file" / "c.marshal"
    done = subprocess.run([sys.executable, "-m", "vmdev.methodcache", "--path", str(target)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == f"vmdev.methodcache: error: cannot write {json.dumps(str(target))}: File exists"


def test_the_plugin_packages_of_the_core_alone_are_vmdev_s() -> None:
    from vmdev.plugins import LoadPolicy, PluginManager

    assert PluginManager(LoadPolicy(only=())).plugin_packages() == ["vmdev"]


def test_code_compiled_without_column_positions_is_not_given_to_a_run_that_keeps_them(tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    bare = child(cache, 1, MODELS, "-X", "no_debug_ranges")
    assert bare["hits"] == 0 and bare["differences"] == []
    full = child(cache, 2)
    assert (full["hits"], full["misses"]) == (0, bare["misses"]) and full["differences"] == []


def test_blocks_nest_and_overlap_and_attrs_gets_its_own_compile_back_after_the_last(tmp_path: Path,
                                                                                      compiles: int) -> None:
    import attr._make as make

    own = make._compile_and_eval
    outer_block, inner_block = compiled_methods(tmp_path / "a.marshal"), compiled_methods(tmp_path / "b.marshal")
    outer, inner = outer_block.__enter__(), inner_block.__enter__()
    assert outer is not None and inner is not None
    assert inner.flags == outer.flags == own.__code__.co_flags & methodcache._FUTURE_FLAGS
    make_point("acme_inner")
    assert (outer.misses, inner.misses) == (0, compiles)  # the innermost open block's cache
    outer_block.__exit__(None, None, None)  # overlapping (threads): the outer one ends first
    assert make._compile_and_eval is not own
    make_point("acme_after")
    assert outer.misses == 0 and inner.hits + inner.misses == 2 * compiles
    inner_block.__exit__(None, None, None)
    assert make._compile_and_eval is own


def test_the_file_gets_the_mode_of_vmdev_s_source_not_what_a_loose_umask_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the file chooses code the next run executes, as with bytecode, which
    Python writes with its source's mode."""
    import stat

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "c.marshal"
    loose = os.umask(0)
    try:
        with compiled_methods(path):
            make_point("acme_mode")
    finally:
        os.umask(loose)
    source = stat.S_IMODE(os.stat(methodcache.__file__).st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == source & 0o666
