"""Does a router put an in-domain expert first? Per source, with 95% Wilson intervals.

An expert is in-domain for a prompt when the prompt's category (the routers' taxonomy) is one of
the expert's registry ``categories``. Run on a labelled file (JSONL: ``id``, ``question``,
``category``, ``source``), e.g. the cross-source test set of prompts never trained or profiled on::

    python -m skills.domain_eval --router skill --data routers/data/eval/cross_source.jsonl

Example::

    >>> in_domain("math", ["math-tutor"], {"math-tutor": ["math"]})
    True
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from skills.eval_summary import wilson


def in_domain(category: str, names: list[str], categories: dict[str, list[str]]) -> bool:
    """True when the first of ``names`` declares ``category``."""
    return bool(names) and category in categories.get(names[0], [])


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Rows with ``question``, ``category`` and ``source`` (``id`` defaults to the line number)."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            r = json.loads(line)
            rows.append({"id": str(r.get("id", n)), "question": r["question"], "category": r["category"],
                         "source": str(r.get("source", "?")).split("/")[0]})
    return rows


def domain_report(rows: list[dict[str, Any]], first: dict[str, list[str]], categories: dict[str, list[str]]) -> dict:
    """``{"overall": cell, "by_source": {source: cell}, "by_category": {...}}``; cell = hits, n, rate, CI."""
    groups: dict[str, dict[str, list[int]]] = {"by_source": defaultdict(lambda: [0, 0]),
                                               "by_category": defaultdict(lambda: [0, 0])}
    total = [0, 0]
    for r in rows:
        ok = int(in_domain(r["category"], first[r["id"]], categories))
        for key, field in (("by_source", "source"), ("by_category", "category")):
            groups[key][r[field]][0] += ok
            groups[key][r[field]][1] += 1
        total[0] += ok
        total[1] += 1

    def cell(k: int, n: int) -> dict[str, Any]:
        lo, hi = wilson(k, n)
        return {"hits": k, "n": n, "rate": round(k / n, 4) if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)]}

    return {"overall": cell(*total), **{g: {k: cell(*v) for k, v in sorted(d.items())} for g, d in groups.items()}}


def format_report(report: dict) -> str:
    lines = ["| source | n | in-domain first | 95% CI |", "|---|---|---|---|"]
    for src, c in report["by_source"].items():
        lines.append(f"| {src} | {c['n']} | {c['rate']:.3f} | {c['ci95'][0]:.3f}-{c['ci95'][1]:.3f} |")
    c = report["overall"]
    lines.append(f"| **all** | {c['n']} | **{c['rate']:.3f}** | {c['ci95'][0]:.3f}-{c['ci95'][1]:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from orchestrator.config import ExpertRegistry
    from orchestrator.context import RunContext
    from orchestrator.core import Question
    from routers.base import make_router
    from workers.dispatch import LocalDispatcher
    from workers.pool import ModelPool

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--router", default="skill")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=JSON", help="router setting")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    registry = ExpertRegistry.default()
    ctx = RunContext(registry=registry, dispatcher=LocalDispatcher(ModelPool(registry.models)), seed=0)
    rows = load_labelled(args.data)
    router = make_router(args.router, **params)
    router.warm_up(ctx)
    decisions = router.route([Question(id=r["id"], text=r["question"]) for r in rows], ctx)
    report = domain_report(rows, {d.question_id: d.names for d in decisions},
                           {e: spec.categories for e, spec in registry.experts.items()})
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
