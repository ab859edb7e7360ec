"""The outcome tables of a real-world run (``pytest ... --realworld-report FILE``), in markdown."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rwinputs.causes import BY_KEY, explain

if TYPE_CHECKING:
    from rwinputs.session import Session


def _short(text: str) -> str:
    text = re.sub(r"/dev/loop\d+", "/dev/loopN", text)
    text = re.sub(r"\S*/tests/realworld/kata/|\S*/variants/", "", text)
    return text.replace("|", "\\|")


def write_report(session: Session, target: Path) -> None:
    outcomes = session.outcomes
    lines = ["# Real-world run", ""]
    plans = sum(1 for o in outcomes.values() if o.rc == 0)
    lines.append(f"{len(outcomes)} combinations ({len(session.specs)} specs, {len(session.configs)} configs "
                 f"incl. variants, hot and cold): {plans} plans, {len(outcomes) - plans} refusals.")
    lines += [f"{name}: {value}." for name, value in sorted(session.counters.items())]
    lines += ["", "## Refusals by error line", "", "| count | error line |", "|---:|---|"]
    errors = collections.Counter(_short(o.error) for o in outcomes.values() if o.rc != 0)
    lines += [f"| {n} | {e} |" for e, n in errors.most_common()]

    by_cause: dict[str, list[str]] = collections.defaultdict(list)
    masked: collections.Counter[str] = collections.Counter()
    noted: collections.Counter[str] = collections.Counter()
    works = 0
    for combo_id, diagnosis in session.diagnoses.items():
        if not diagnosis.predicted and not diagnosis.unexplained:
            works += 1
        for key in diagnosis.observed:
            by_cause[key].append("|".join([combo_id[0], combo_id[1], "hot" if combo_id[2] else "cold"]))
        masked.update(diagnosis.masked)
        noted.update(diagnosis.noted)
    lines += ["", "## Works-as-it-is, by cause", "",
              f"{works} combinations work with no known cause; {len(session.diagnoses)} diagnosed.", "",
              "| cause | kind | fixed in | observed | masked by a refusal | a plan note instead | configs |",
              "|---|---|---|---:|---:|---:|---|"]
    for key, cause in BY_KEY.items():
        seen = by_cause.get(key, [])
        configs = sorted({s.split("|")[1] for s in seen})
        shown = ", ".join(configs[:6]) + (f" (+{len(configs) - 6})" if len(configs) > 6 else "")
        lines.append(f"| `{key}` | {cause.kind} | {cause.fixed_in or '-'} | {len(seen)} | {masked[key]} | "
                     f"{noted[key]} | {shown} |")
    unexplained = {cid: d.unexplained for cid, d in session.diagnoses.items() if d.unexplained}
    lines += ["", f"## Unexplained ({len(unexplained)})", ""]
    lines += [f"* {'|'.join(map(str, cid))}: {_short('; '.join(u))[:400]}" for cid, u in list(unexplained.items())[:50]]
    marked = collections.Counter(k for d in session.diagnoses.values() for k in d.predicted)
    lines += ["", f"{sum(1 for d in session.diagnoses.values() if d.predicted)} works-as-it-is tests carry a "
              f"known-cause xfail marker: " + ", ".join(f"{k} {n}" for k, n in sorted(marked.items())) + ".", ""]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target.with_suffix(".json").write_text(json.dumps(_details(session), indent=1) + "\n", encoding="utf-8")


def _details(session: Session) -> list[dict[str, object]]:
    """Every diagnosed combination: outcome, causes, and what each observed ignored key lacks."""
    out = []
    for combo_id, diagnosis in session.diagnoses.items():
        combo, outcome = session.combo(combo_id), session.outcomes[combo_id]
        plan = outcome.plan
        out.append({
            "spec": combo_id[0], "config": combo_id[1], "hot": combo_id[2], "rc": outcome.rc,
            "error": outcome.error if outcome.rc else "", "predicted": list(diagnosis.predicted),
            "observed": list(diagnosis.observed), "masked": list(diagnosis.masked),
            "honoured": list(diagnosis.honoured), "noted": list(diagnosis.noted),
            "unexplained": list(diagnosis.unexplained),
            "explained": {k: explain(combo, plan, k) for k in diagnosis.observed if plan is not None},
        })
    return out
