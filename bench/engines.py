"""Engine start times and batch throughput of the in-process vLLM backend on the local models.

For each model: cold engine start, one batch of N chat prompts (greedy, --max-tokens), one
single-prompt call, memory before/after unload, and a warm restart. One engine at a time.

    .venv/bin/python bench/engines.py --models smollm2-135m --n 32 --max-tokens 64

Prints one JSON line per model (times in seconds, memory in GiB of this process's RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.prompts import build_request  # noqa: E402
from orchestrator.core import Sampling  # noqa: E402
from workers.backends.vllm_backend import VllmBackend  # noqa: E402

QUESTIONS = [
    "What is {i} times {j}? Explain briefly.",
    "Name {i} animals that live in the ocean.",
    "Write a haiku about the number {i}.",
    "Why is {i} an interesting number?",
]


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


def bench_model(name: str, n: int, max_tokens: int) -> dict:
    spec = ExpertRegistry.default().model(name)
    backend = VllmBackend(spec)
    sampling = Sampling(max_tokens=max_tokens)
    reqs = [
        build_request(f"b{i}", spec, "You are a helpful assistant.", QUESTIONS[i % 4].format(i=i, j=i + 3), sampling)
        for i in range(n)
    ]
    row: dict = {"model": name, "n": n, "max_tokens": max_tokens, "rss_before": round(rss_gib(), 2)}
    t0 = time.perf_counter()
    backend.load()
    row["start_s"] = round(time.perf_counter() - t0, 1)
    backend.generate(reqs[:1])  # first call pays one-off warm-up
    t0 = time.perf_counter()
    out = backend.generate(reqs)
    row["batch_s"] = round(time.perf_counter() - t0, 2)
    tokens = sum(c.completion_tokens for c in out)
    row["batch_tokens"] = tokens
    row["batch_tok_per_s"] = round(tokens / row["batch_s"], 1)
    t0 = time.perf_counter()
    one = backend.generate(reqs[:1])[0]
    row["single_s"] = round(time.perf_counter() - t0, 2)
    row["single_tokens"] = one.completion_tokens
    row["rss_loaded"] = round(rss_gib(), 2)
    backend.unload()
    row["rss_unloaded"] = round(rss_gib(), 2)
    t0 = time.perf_counter()
    backend.load()
    row["warm_start_s"] = round(time.perf_counter() - t0, 1)
    backend.unload()
    row["load_avg_1m"] = os.getloadavg()[0]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m"])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    for name in args.models:
        print(json.dumps(bench_model(name, args.n, args.max_tokens)), flush=True)


if __name__ == "__main__":
    main()
