"""Per-expert batching versus the naive way, measured in one run on the real local models.

Batched: one pipeline run over N questions; every model loads once and gets one batch.
Naive:   question by question, loading the chosen experts' models for every question
         (engines released after each question), as a system without batching would.

    .venv/bin/python bench/batching.py --n 8 --pipeline symbolic-moe

Prints time and model loads for both and the ratios (naive / batched).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.pipeline import Pipeline  # noqa: E402
from orchestrator.faces.sdk import Orchestrator  # noqa: E402
from orchestrator.core import Question  # noqa: E402
from workers.dispatch import LocalDispatcher  # noqa: E402
from workers.pool import ModelPool  # noqa: E402

QUESTIONS = [
    "What is 15% of 240?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Which vitamin deficiency causes scurvy?",
    "What is the capital of Australia?",
    "A train travels 60 miles in 1.5 hours. What is its average speed in miles per hour?",
    "What is the difference between a list and a tuple in Python?",
    "Why is the sky blue?",
    "What does the Fourth Amendment protect against?",
    "Solve for x: 3x + 7 = 22.",
    "What are common symptoms of iron deficiency anemia?",
    "Write a short thank-you note to a colleague.",
    "What is the chemical formula of table salt?",
]


def make(pipeline: str, registry: ExpertRegistry) -> Orchestrator:
    pool = ModelPool(registry.models)
    return Orchestrator(registry, Pipeline.load(pipeline), dispatcher=LocalDispatcher(pool))


def batched(pipeline: str, registry: ExpertRegistry, qs: list[Question]) -> tuple[float, int, list]:
    with make(pipeline, registry) as orch:
        t0 = time.perf_counter()
        results = orch.run(qs)
        return time.perf_counter() - t0, sum(orch.model_loads().values()), results


def naive(pipeline: str, registry: ExpertRegistry, qs: list[Question]) -> tuple[float, int]:
    with make(pipeline, registry) as orch:
        t0 = time.perf_counter()
        for q in qs:
            orch.run([q])
            orch.dispatcher.pool.release_all()  # nothing stays loaded between questions
        return time.perf_counter() - t0, sum(orch.model_loads().values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="number of questions (max %d)" % len(QUESTIONS))
    ap.add_argument("--pipeline", default="symbolic-moe")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    registry = ExpertRegistry.default()
    qs = [Question(id=f"q{i}", text=t) for i, t in enumerate(QUESTIONS[: args.n])]
    print(f"{len(qs)} questions, pipeline {args.pipeline}", flush=True)
    t_b, loads_b, results = batched(args.pipeline, registry, qs)
    print(f"batched: {t_b:8.1f} s  {loads_b:3d} model loads", flush=True)
    t_n, loads_n = naive(args.pipeline, registry, qs)
    print(f"naive:   {t_n:8.1f} s  {loads_n:3d} model loads", flush=True)
    print(f"ratio (naive / batched): time {t_n / t_b:.2f}x, model loads {loads_n / max(loads_b, 1):.2f}x")
    calls = sum(len({e.name for e in r.experts}) for r in results)
    print(f"expert calls: {calls} ({calls / len(qs):.2f} distinct experts per question)")
    if args.json:
        args.json.write_text(json.dumps({"n": len(qs), "pipeline": args.pipeline, "batched_s": t_b, "batched_loads": loads_b,
                                         "naive_s": t_n, "naive_loads": loads_n, "time_ratio": t_n / t_b,
                                         "loads_ratio": loads_n / max(loads_b, 1)}, indent=2))


if __name__ == "__main__":
    main()
