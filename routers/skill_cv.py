"""Choose the skill router's scoring settings by cross-validation on a recorded correctness table.

Each setting (``scoring`` x ``prior_strength`` x ``tau``) is scored by :func:`~skills.profile_eval.evaluate_router`
on ``--splits`` random hash splits of the table's questions (profile on 70%, route the rest), and
the settings are ranked by the mean recorded correctness of the experts they recruit. Only the
table (validation items) is used, never a test split, so the choice can be reported against a
held-out test mix afterwards.

Example::

    .venv/bin/python -m routers.skill_cv --profiles skills/data/default_profiles \\
        --scoring smoothed learned --prior-strength 1 2 4 8 --tau 0.02 0.05 --splits 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.context import RunContext
from orchestrator.config import ExpertRegistry
from skills.profile_eval import evaluate_router
from skills.learned import load_questions
from skills.profiles import ITEMS_FILE, ROWS_FILE, read_rows


def questions_of(profiles: Path) -> dict[str, str]:
    """``{item id: question text}`` (what ``learned`` encodes); empty when the dir has no items.jsonl."""
    return load_questions(profiles) if (profiles / ITEMS_FILE).exists() else {}


def cross_validate(
    rows: list[dict[str, Any]], questions: dict[str, str], settings: list[dict[str, Any]], *,
    registry: ExpertRegistry | None = None, splits: int = 5, holdout: float = 0.3, k: int = 3,
) -> list[dict[str, Any]]:
    """One result per setting: mean/sd over splits of routed, best single, random and oracle."""
    from routers.base import make_router

    ctx = RunContext(registry=registry or ExpertRegistry.default(), dispatcher=None)  # routing only: no model calls
    results = []
    for setting in settings:
        runs = []
        for seed in range(splits):
            router = make_router("skill", k=k, **{"topic": 0.0, **setting})  # the table alone, unless set
            runs.append(evaluate_router(router, rows, ctx, holdout=holdout, seed=seed, questions=questions))
        stats = {key: round(float(np.mean([r[key] for r in runs])), 4)
                 for key in ("routed", "best_single", "random", "oracle")}
        stats["routed_sd"] = round(float(np.std([r["routed"] for r in runs])), 4)
        results.append({**setting, **stats, "heldout_questions": runs[0]["heldout_questions"]})
    return sorted(results, key=lambda r: -r["routed"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m routers.skill_cv", description=__doc__.split("\n\n")[0])
    from routers.skill import DEFAULT_PROFILES

    p.add_argument("--profiles", type=Path, default=DEFAULT_PROFILES, help="profiles dir (default: the shipped ones)")
    p.add_argument("--scoring", nargs="+", default=["smoothed", "learned"], choices=["smoothed", "learned"])
    p.add_argument("--prior-strength", nargs="+", type=float, default=[1.0, 2.0, 4.0, 8.0])
    p.add_argument("--tau", nargs="+", type=float, default=[0.02, 0.05, 0.1])
    p.add_argument("--knn-tau", nargs="+", type=float, default=[0.2], help="learned scoring's kNN temperature")
    p.add_argument("--prior-lift", nargs="+", type=float, default=[0.6], help="declared-skill lift of the prior")
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    rows = read_rows(args.profiles / ROWS_FILE)
    if not rows:
        print(f"error: no correctness rows in {args.profiles / ROWS_FILE}", file=sys.stderr)
        return 2
    grid = [{"scoring": s, "prior_strength": ps, "prior_lift": lift, "tau": t,
             **({"knn_tau": kt} if s == "learned" else {})}
            for s, ps, lift, t, kt in itertools.product(args.scoring, args.prior_strength, args.prior_lift, args.tau,
                                                        args.knn_tau)
            if s == "learned" or kt == args.knn_tau[0]]
    results = cross_validate(rows, questions_of(args.profiles), grid, splits=args.splits, k=args.k)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{len(grid)} settings x {args.splits} splits, {results[0]['heldout_questions']} held-out questions each")
    print("scoring   prior  lift  tau    knn_tau  routed (sd)      best single  random  oracle")
    for r in results:
        print(f"{r['scoring']:9s} {r['prior_strength']:5g} {r['prior_lift']:4g} {r['tau']:5g}  {r.get('knn_tau', '-')!s:7s}  "
              f"{r['routed']:.4f} ({r['routed_sd']:.3f})"
              f"  {r['best_single']:.4f}       {r['random']:.4f}  {r['oracle']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
