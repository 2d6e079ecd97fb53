"""``expertmix eval``: pipelines and single experts on labelled items, all systems in one shared run.

Every model loads once for the whole evaluation and gets one batch per step for everything every
system asked of it. Writes ``answers.jsonl`` (resumable: rerun the same command), ``summary.json``,
``summary.md`` and a self-contained ``report.html`` into ``--out``.

Example::

    expertmix eval --task gsm8k --task arc_challenge --limit 20 \\
        --pipeline symbolic-moe --expert math-tutor --oracle --out eval/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError


def register(sub: Any) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser("eval", help="evaluate pipelines and single experts on labelled benchmarks (one shared run)")
    p.add_argument("--task", action="append", default=[], metavar="NAME",
                   help="built-in task (gsm8k, arc_easy, arc_challenge, sciq, boolq, medmcqa, mmlu/<subject>, "
                        "basic_skills/<skill>, humaneval, mbpp, math); repeatable")
    p.add_argument("--data", action="append", default=[], type=Path, metavar="FILE.jsonl",
                   help="user items {question, answer, answer_type: numeric|choice|boolean|exact|code}; repeatable")
    p.add_argument("--split", choices=["test", "validation", "dev"], default="test", help="split of built-in tasks (default test)")
    p.add_argument("--limit", type=int, help="items per task / file (seeded sample)")
    p.add_argument("--pipeline", action="append", default=[], metavar="NAME|YAML", help="a pipeline to evaluate; repeatable")
    p.add_argument("--expert", action="append", default=[], metavar="NAME", help="a single expert to evaluate; repeatable")
    p.add_argument("--oracle", action="store_true", help="also every single expert, and the oracle (best expert per item)")
    p.add_argument("--experts", metavar="REGISTRY.yaml", help="expert registry (default: the built-in one)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (resumes if it has answers)")
    p.add_argument("--chunk-size", type=int, default=64, help="items per lockstep chunk, saved when done (default 64)")
    p.add_argument("--no-format-hints", action="store_true", help="do not append the answer-format line to questions")
    p.add_argument("--max-tokens", type=int, help="budget for every system: lower each expert's max_tokens to this")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the evaluation, write the outputs, print the summary table."""
    from orchestrator.config import ExpertRegistry
    from orchestrator.core import Budget
    from skills.eval_report import render_report
    from skills.eval_summary import format_table, summarize
    from skills.evaluation import evaluate, load_items, make_systems, read_rows
    from workers.dispatch import LocalDispatcher
    from workers.pool import ModelPool

    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be >= 1")
    registry = ExpertRegistry.from_yaml(args.experts) if args.experts else ExpertRegistry.default()
    items = load_items(args.task, args.data, split=args.split, limit=args.limit, seed=args.seed)
    systems = make_systems(args.pipeline, args.expert, registry, oracle=args.oracle)
    args.out.mkdir(parents=True, exist_ok=True)
    answers = args.out / "answers.jsonl"
    dispatcher = LocalDispatcher(ModelPool(registry.models))
    t0 = time.perf_counter()
    try:
        stats = evaluate(items, systems, registry, dispatcher, answers, chunk_size=args.chunk_size, seed=args.seed,
                         progress=sys.stderr.isatty(), format_hints=not args.no_format_hints,
                         budget=Budget(max_tokens=args.max_tokens) if args.max_tokens else None)
    finally:
        dispatcher.close()
    wanted = {(s.name, it.item.id) for s in systems for it in items}
    rows = [r for r in read_rows(answers) if (r["system"], r["id"]) in wanted]
    summary = summarize(rows)
    meta = {"items": len(items), "tasks": sorted({it.task for it in items}), "split": args.split,
            "systems": [s.name for s in systems], "seed": args.seed, **stats,
            "wall_s": round(time.perf_counter() - t0, 2)}
    (args.out / "summary.json").write_text(json.dumps({"meta": meta, **summary}, indent=1))
    table = format_table(summary)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "report.html").write_text(render_report(rows, meta=meta))
    print(table)
    print(json.dumps({k: meta[k] for k in ("items", "model_loads", "batches", "shared_requests", "wall_s")}),
          file=sys.stderr)
    return 0
