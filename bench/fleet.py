"""Fleet throughput: one worker serving two models versus two workers, each pinned to one model.

Starts a private Redis and real ``expertmix worker`` processes (vLLM engines on the local models),
sends the same mixed workload (half SmolLM2 chats, half Gemma completions) through the Celery
dispatcher to each layout, and prints requests/s, completion tokens/s and the ratio. Engine start
is excluded: timing begins once the workers are live and warmed by one small batch per model.

    .venv/bin/python bench/fleet.py [--requests 16] [--max-tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.core import GenerationRequest, Sampling  # noqa: E402
from workers.harness import LocalFleet  # noqa: E402

MODELS = ("smollm2-135m", "gemma3-270m")
ENV = {"EXPERTMIX_MAX_WAIT_MS": "50", "EXPERTMIX_NO_WORKER_GRACE_S": "600", "EXPERTMIX_VLLM_KV_CACHE_MIB": "256"}
TOPICS = ["photosynthesis", "the French revolution", "binary search", "volcanoes", "the moon", "vaccines",
          "inflation", "the Roman empire", "electric cars", "honey bees", "glaciers", "the internet"]


def workload(run: str, n: int, max_tokens: int) -> dict[str, list[GenerationRequest]]:
    """``n`` chat requests for SmolLM2 and ``n`` completion requests for Gemma."""
    sampling = Sampling(max_tokens=max_tokens)
    smol = [GenerationRequest(key=f"{run}/q{i}/generalist", model=MODELS[0], sampling=sampling,
                              messages=[{"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]} briefly."}])
            for i in range(n)]
    gemma = [GenerationRequest(key=f"{run}/q{i}/encyclopedia", model=MODELS[1], sampling=sampling,
                               prompt=f"Question: What is {TOPICS[i % len(TOPICS)]}?\nAnswer:") for i in range(n)]
    return {MODELS[0]: smol, MODELS[1]: gemma}


def measure(layout: list[list[str]], workdir: Path, n: int, max_tokens: int) -> dict:
    """Start ``layout`` (one model list per worker), warm it, time one workload."""
    with LocalFleet.start(workdir, env=ENV) as fleet:
        t0 = time.perf_counter()
        for models in layout:
            fleet.start_worker(models)
        fleet.wait_live(list(MODELS), timeout_s=900)
        start_s = time.perf_counter() - t0
        dispatcher = fleet.dispatcher()
        dispatcher.run_batches(workload("warm", 2, 8))
        t0 = time.perf_counter()
        out = dispatcher.run_batches(workload("bench", n, max_tokens))
        seconds = time.perf_counter() - t0
        dispatcher.close()
    tokens = sum(c.completion_tokens for c in out.values())
    return {"workers": [",".join(m) for m in layout], "requests": len(out), "seconds": round(seconds, 2),
            "requests_per_s": round(len(out) / seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "completion_tokens": tokens, "startup_s": round(start_s, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per model (default 16)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="expertmix-fleet-bench-") as tmp:
        one = measure([list(MODELS)], Path(tmp) / "one", args.requests, args.max_tokens)
        two = measure([[m] for m in MODELS], Path(tmp) / "two", args.requests, args.max_tokens)
    ratio = two["requests_per_s"] / one["requests_per_s"]
    for name, r in (("1 worker (both models)", one), ("2 workers (one model each)", two)):
        print(f"{name:<28} {r['requests']} requests in {r['seconds']:>7.2f}s  {r['requests_per_s']:.3f} req/s  "
              f"{r['tokens_per_s']:.1f} tok/s  (workers live after {r['startup_s']}s)")
    print(f"throughput ratio, 2 workers / 1 worker: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"one_worker": one, "two_workers": two, "ratio": round(ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
