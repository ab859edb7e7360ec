"""Golden plan corpus: record every Plan the unit suites build, or check them against a recording.

Used by the open-core refactor (issue 9): every plan the suites produced before it must stay
byte-identical after it, except where a bug was fixed (named in tests/golden/README.md).

    pytest -p golden_plugin --golden=record:DIR ...   # write DIR/<suite>.json
    pytest -p golden_plugin --golden=check:DIR ...    # compare, fail on any difference

Temporary paths (pytest's tmp_path) are normalised to ``<tmp>`` so that runs compare.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

_TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/|/tmp/(?:tmp|vhu-)[a-z0-9_]{8}/")
_records: dict[str, list[Any]] = {}
_current: list[str] = [""]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--golden", default="", help="record:DIR or check:DIR")
    parser.addoption("--golden-suite", default="suite")


#: the digest part of an id (``drive-8f9589b2448c75``, ``drive_…``): after a hyphen or an underscore,
#: so JSON numbers stay numbers
_HEX_ID = re.compile(r"(?<=[-_])([0-9a-f]{12,16})(?![0-9a-f])")


def _normalise(value: Any) -> Any:
    """Temporary paths become ``<tmp>/``; hex id parts (digests of those paths) become ``#N`` in
    order of first appearance, so a plan compares by its structure and its stable values."""
    text = _TMP.sub("<tmp>/", json.dumps(value, sort_keys=False))
    seen: dict[str, str] = {}
    text = _HEX_ID.sub(lambda m: seen.setdefault(m.group(1), f"#{len(seen)}"), text)
    return json.loads(text)


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("--golden"):
        return
    from vmdev.planner import Plan

    original = Plan.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            data = self.to_json()
        except Exception as exc:  # noqa: BLE001 - a plan that cannot print is recorded as such
            data = {"to_json failed": type(exc).__name__}
        _records.setdefault(_current[0], []).append(_normalise(data))

    Plan.__init__ = init  # type: ignore[method-assign]


def _accepted(path: Path, suite: str) -> set[str]:
    """The tests of ``suite`` whose plans changed on purpose: ``accepted.txt`` lines
    ``<suite> <test key> -- <why>`` (the bug fixed or the issue's behaviour)."""
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, key = line.split(" -- ", 1)[0].split(" ", 1)
            if name == suite:
                keys.add(key.strip())
    return keys


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    _current[0] = item.nodeid.split("::", 1)[-1] + "@" + Path(str(item.path)).name
    try:
        return (yield)
    finally:
        _current[0] = ""


def pytest_sessionfinish(session: pytest.Session) -> None:
    option = session.config.getoption("--golden")
    if not option:
        return
    mode, _, directory = option.partition(":")
    path = Path(directory) / (session.config.getoption("--golden-suite") + ".json")
    if mode == "record":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_records, indent=1, sort_keys=True) + "\n")
        return
    expected = json.loads(path.read_text())
    accepted = _accepted(Path(directory) / "accepted.txt", session.config.getoption("--golden-suite"))
    missing = sorted(k for k in expected if k not in _records and k not in accepted)
    changed = sorted(k for k in expected if k in _records and expected[k] != _records[k] and k not in accepted)
    differing = sorted(k for k in accepted if k in expected and expected[k] != _records.get(k))
    new = sorted(k for k in _records if k not in expected)
    report = Path(directory) / (session.config.getoption("--golden-suite") + ".diff.txt")
    report.write_text("\n".join(["changed:", *changed, "not produced any more:", *missing,
                                 "new (not in the corpus, not compared):", *new]) + "\n")
    print(f"\ngolden: {len(expected)} recorded tests, {len(changed)} changed, {len(missing)} not produced, "
          f"{len(new)} new tests not compared, {len(differing)} accepted differences (accepted.txt)")
    if changed or missing:
        session.exitstatus = 1
