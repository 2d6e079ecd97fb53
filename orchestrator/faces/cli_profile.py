"""``expertmix profile``: build Symbolic-MoE expert profiles and choose the aggregator.

Every expert answers every labelled validation question (batched per model, each model loaded
once), answers are graded, and per-skill profiles plus the raw correctness table are written to
``--out``. Interrupted runs resume: rerun the same command. Then the aggregator is chosen on
synthetic 1-correct + 2-wrong prompts (``--no-aggregator`` skips it).

Example::

    expertmix profile --data val.jsonl --out profiles/ --limit 50
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
    """Add the ``profile`` subcommand."""
    p = sub.add_parser("profile", help="profile experts on labelled questions (Symbolic-MoE) and pick the aggregator")
    p.add_argument("--data", type=Path, required=True, metavar="FILE.jsonl",
                   help="labelled items: id, question, answer, [answer_type], [choices], [keywords]")
    p.add_argument("--experts", metavar="REGISTRY.yaml", help="expert registry (default: the built-in one)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="profiles dir (resumes if it has work)")
    p.add_argument("--extractor", choices=["embedding", "llm"], default="embedding",
                   help="skill extraction for items without keywords (default: embedding)")
    p.add_argument("--extractor-model", metavar="MODEL", help="registry model for --extractor llm")
    p.add_argument("--limit", type=int, help="use only the first N items")
    p.add_argument("--only", nargs="+", metavar="EXPERT", help="profile only these experts")
    p.add_argument("--chunk-size", type=int, default=32, help="answers per saved batch (default 32)")
    p.add_argument("--max-tokens", type=int, help="override every expert's max_tokens while profiling")
    p.add_argument("--no-aggregator", action="store_true", help="skip the aggregator choice")
    p.add_argument("--aggregator-questions", type=int, default=30, help="synthetic prompts per candidate (default 30)")
    p.add_argument("--aggregator-candidates", nargs="+", metavar="MODEL", help="models to try (default: all used)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    """Run profiling (and the aggregator choice); print a JSON summary."""
    from orchestrator.config import ExpertRegistry
    from orchestrator.context import RunContext
    from skills.aggregator_choice import choose_aggregator
    from skills.extract import make_extractor
    from skills.profiles import ProfileStore, load_items, run_profiling
    from workers.dispatch import LocalDispatcher
    from workers.pool import ModelPool

    t0 = time.perf_counter()
    if args.chunk_size < 1 or (args.limit is not None and args.limit < 1):
        raise InputError("--chunk-size and --limit must be >= 1")
    registry = ExpertRegistry.from_yaml(args.experts) if args.experts else ExpertRegistry.default()
    items = load_items(args.data, limit=args.limit)
    if args.extractor == "llm":
        extractor = make_extractor("llm", model=args.extractor_model)
    else:
        extractor = make_extractor("embedding")
    dispatcher = LocalDispatcher(ModelPool(registry.models))
    ctx = RunContext(registry=registry, dispatcher=dispatcher, seed=args.seed, progress=sys.stderr.isatty())
    try:
        summary = run_profiling(items, ctx, args.out, extractor=extractor, experts=args.only,
                                chunk_size=args.chunk_size, max_tokens=args.max_tokens)
        if not args.no_aggregator:
            summary["aggregator"] = choose_aggregator(items, ctx, ProfileStore(args.out),
                                                      candidates=args.aggregator_candidates,
                                                      limit=args.aggregator_questions,
                                                      max_tokens=args.max_tokens or 128)
            summary["model_loads"] = dispatcher.model_loads()
            summary["total_seconds"] = round(time.perf_counter() - t0, 2)
            ProfileStore(args.out).write_json("manifest.json", summary)
    finally:
        dispatcher.close()
    print(json.dumps(summary, indent=1))
    return 0
