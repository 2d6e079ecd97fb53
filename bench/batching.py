"""Per-expert batching at scale: three modes on the same questions, time split by where it goes.

Questions come from a labelled dataset mix (``skills.evaluation.load_items``), up to 64.

- ``batched``:   one pipeline run over all N questions: every model loads once, one batch per model;
- ``resident``:  models stay loaded but questions go one at a time (a server without batching);
- ``reload``:    one question at a time and every engine released after it (a naive script).

Each mode's wall time is split into engine loads, generation per model, and everything else
(routing, prompt building, aggregation logic, bookkeeping), so orchestration overhead is visible.
Target: batched end-to-end <= 1.05x its loads + generations. ``--sequential-n`` runs the
resident and reload modes on the first few questions only (one question at a time costs 30-60 s
each on 2 CPU cores) and reports them per question, next to the batched run's per-question time. ``--legacy-budgets`` uses the old 96 / 128-token expert caps, to measure
what chain-of-thought budgets cost.

    .venv/bin/python bench/batching.py --n 32 --k 3 --modes batched resident --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.core import Question  # noqa: E402
from orchestrator.faces.sdk import Orchestrator  # noqa: E402
from orchestrator.pipeline import Pipeline  # noqa: E402
from skills.evaluation import load_items  # noqa: E402
from workers.dispatch import LocalDispatcher  # noqa: E402
from workers.pool import ModelPool  # noqa: E402

TASKS = ["gsm8k", "arc_easy", "sciq", "boolq", "medmcqa", "basic_skills/arithmetic"]
LEGACY = {"smollm2-135m": 96, "qwen-coder-0.5b": 128}


class TimedPool(ModelPool):
    """A pool that records generation seconds per model, apart from engine loads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gen_seconds: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()

    def generate(self, model, requests):
        if not requests:
            return []
        backend = self.acquire(model)  # a load, if any, is counted in load_seconds
        t0 = time.perf_counter()
        with self._lock:
            out = backend.generate(requests)
        self.gen_seconds[model] += time.perf_counter() - t0
        self.tokens[model] += sum(c.completion_tokens for c in out)
        return out


def registry(legacy: bool) -> ExpertRegistry:
    reg = ExpertRegistry.default()
    if legacy:
        for e in reg.experts.values():
            if e.model in LEGACY:
                e.sampling = e.sampling.model_copy(update={"max_tokens": LEGACY[e.model]})
    return reg


def pipeline(name: str, k: int) -> Pipeline:
    data = Pipeline.load(name).to_dict()
    for node in data["nodes"]:
        if node["type"] == "router" and "k" in (node.get("params") or {}):
            node["params"]["k"] = k
    return Pipeline.from_dict(data, source=name)


def run_mode(mode: str, qs: list[Question], reg: ExpertRegistry, pipe: Pipeline) -> dict:
    pool = TimedPool(reg.models)
    orch = Orchestrator(reg, pipe, dispatcher=LocalDispatcher(pool))
    t0 = time.perf_counter()
    try:
        if mode == "batched":
            results = orch.run(qs)
        else:
            results = []
            for q in qs:
                results.extend(orch.run([q]))
                if mode == "reload":
                    pool.release_all()
        wall = time.perf_counter() - t0
    finally:
        orch.close()
    loads, gens = sum(pool.load_seconds.values()), sum(pool.gen_seconds.values())
    return {"mode": mode, "questions": len(qs), "wall_s": round(wall, 2), "loads_s": round(loads, 2),
            "load_count": sum(pool.loads.values()), "generate_s": round(gens, 2),
            "generate_per_model_s": {m: round(s, 2) for m, s in pool.gen_seconds.items()},
            "tokens_per_model": dict(pool.tokens), "other_s": round(wall - loads - gens, 2),
            "overhead_ratio": round(wall / max(loads + gens, 1e-9), 4),
            "expert_calls": sum(len({a.expert for a in r.trace.answers}) for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="questions (1-64)")
    ap.add_argument("--k", type=int, default=3, help="experts per question (the router's k)")
    ap.add_argument("--pipeline", default="symbolic-moe")
    ap.add_argument("--modes", nargs="+", choices=["batched", "resident", "reload"], default=["batched", "resident", "reload"])
    ap.add_argument("--sequential-n", type=int, default=4,
                    help="questions the resident and reload modes run (reported per question)")
    ap.add_argument("--legacy-budgets", action="store_true", help="old caps: SmolLM2 96, Qwen 128 tokens")
    ap.add_argument("--json", type=Path, help="append the numbers to this JSON file")
    args = ap.parse_args()
    if not 1 <= args.n <= 64:
        ap.error("--n must be 1..64")
    reg, pipe = registry(args.legacy_budgets), pipeline(args.pipeline, args.k)
    per_task = -(-args.n // len(TASKS))
    items = load_items(TASKS, split="validation", limit=per_task, seed=0)[: args.n]
    qs = [Question(id=it.item.id, text=it.prompt()) for it in items]
    print(f"{len(qs)} questions x k={args.k}, pipeline {args.pipeline}, "
          f"budgets {'legacy' if args.legacy_budgets else 'current'}", flush=True)
    rows = []
    for mode in args.modes:
        sub = qs if mode == "batched" else qs[: args.sequential_n]
        row = run_mode(mode, sub, reg, pipe)
        row["per_question_s"] = round(row["wall_s"] / len(sub), 2)
        row["legacy_budgets"] = args.legacy_budgets
        rows.append(row)
        gens = ", ".join(f"{m} {s:.1f}s" for m, s in row["generate_per_model_s"].items())
        print(f"{mode:9s} {row['wall_s']:8.1f} s over {len(sub)} q ({row['per_question_s']:.2f} s/q) = loads "
              f"{row['loads_s']:.1f} s ({row['load_count']}) + generation {row['generate_s']:.1f} s [{gens}] + other "
              f"{row['other_s']:.1f} s; end-to-end / (loads + generation) = {row['overhead_ratio']:.3f}", flush=True)
    if args.json:
        old = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps([*old, *rows], indent=1))


if __name__ == "__main__":
    main()
