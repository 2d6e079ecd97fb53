"""Gateway under overload and faults: concurrency 200 against a fast fake backend.

Starts ``expertmix``'s gateway in a child process (uvicorn with the guarded protocol, exactly as
``expertmix serve`` runs it) over a fake dispatcher that answers every batch after a fixed delay,
so the gateway itself is what is measured. The parent keeps ``--concurrency`` clients busy for
``--seconds`` and, meanwhile, injects faults: poisoned requests (unreadable text, and prompts the
fake backend fails on), clients that hang up before their answer, and connections that send half
their headers. It prints requests/s, latency percentiles of the answered requests, the 429 share,
the child's RSS before, at peak and after, and whether the gateway still answers afterwards.

    .venv/bin/python bench/gateway_load.py [--concurrency 200] [--seconds 20] [--max-queue 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psutil  # noqa: E402


class FastFakeDispatcher:
    """A fake backend: every batch takes ``delay_s``; a prompt containing "poison" fails its batch."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.loads: dict[str, int] = {}

    def run_batches(self, groups, *, label: str = "experts", progress: bool = False):
        from orchestrator.core import Completion
        from orchestrator.errors import BackendError

        time.sleep(self.delay_s)
        out = {}
        for model, reqs in groups.items():
            self.loads.setdefault(model, 1)
            for r in reqs:
                if "poison" in str(r.messages or r.prompt):
                    raise BackendError(f"fake engine for {model} failed on a poisoned prompt")
                out[r.key] = Completion(key=r.key, model=model, text="Answer: 42", completion_tokens=3)
        return out

    def model_loads(self) -> dict[str, int]:
        return dict(self.loads)

    def close(self) -> None:
        pass


def serve(port: int, args: argparse.Namespace) -> None:
    """The child: the gateway on ``port`` over the fake backend."""
    import logging

    import uvicorn

    from orchestrator.config import ExpertRegistry
    from orchestrator.faces.gateway import create_app, guarded_protocol
    from orchestrator.faces.sdk import Orchestrator
    from orchestrator.pipeline import Pipeline

    logging.disable(logging.WARNING)
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"),
                        dispatcher=FastFakeDispatcher(args.batch_ms / 1000))
    app = create_app(orch, max_queue=args.max_queue, max_batch=args.max_batch, api_keys=[])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                            http=guarded_protocol(header_timeout_s=10.0, max_connections=4096))
    uvicorn.Server(config).run()


def body(text: str) -> dict:
    return {"model": "expertmix", "messages": [{"role": "user", "content": text}]}


async def load(url: str, args: argparse.Namespace) -> dict:
    """``concurrency`` clients for ``seconds``; every 20th request poisoned, every 50th abandoned."""
    latencies: list[float] = []
    codes: dict[int | str, int] = {}
    faults = {"poisoned_unreadable": 0, "poisoned_backend": 0, "abandoned": 0, "half_headers": 0}
    stop = time.monotonic() + args.seconds
    counter = 0
    limits = httpx.Limits(max_connections=args.concurrency + 10, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal counter
            while time.monotonic() < stop:
                counter += 1
                n = counter
                text, timeout = f"What is {n % 97} + 1?", None
                if not args.faults:
                    pass
                elif n % 40 == 0:
                    text, kind = "What is \ud800 1 + 1?", "poisoned_unreadable"
                    faults[kind] += 1
                elif n % 40 == 20:
                    text = f"poison {n}: what is 1 + 1?"
                    faults["poisoned_backend"] += 1
                elif n % 50 == 0:
                    timeout = 0.001
                    faults["abandoned"] += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", content=json.dumps(body(text)),
                                          headers={"content-type": "application/json"},
                                          **({"timeout": timeout} if timeout else {}))
                except httpx.TimeoutException:
                    continue
                except httpx.TransportError as exc:  # counted: a healthy gateway should cause none
                    codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
                    continue
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                elif r.status_code == 429:
                    await asyncio.sleep(min(float(r.headers.get("retry-after", 1)), 0.05))

        async def half_headers() -> None:
            host, port = url.removeprefix("http://").split(":")
            while time.monotonic() < stop:
                _, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                faults["half_headers"] += 1
                await asyncio.sleep(0.5)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)), *([half_headers()] if args.faults else []))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    total = sum(codes.values())
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [float("nan")] * 99
    return {"concurrency": args.concurrency, "seconds": round(elapsed, 1), "responses": total, "codes": codes,
            "answered_per_s": round(len(latencies) / elapsed, 1), "responses_per_s": round(total / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
            "share_429": round(codes.get(429, 0) / max(total, 1), 3), "faults_injected": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-queue", type=int, default=128)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--batch-ms", type=float, default=20.0, help="fake backend time per batch (default 20 ms)")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="plain load, no injected faults")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    child = mp.get_context("spawn").Process(target=serve, args=(port, args), daemon=True)
    child.start()
    proc = psutil.Process(child.pid)
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    httpx.post(f"{url}/v1/chat/completions", json=body("warm up: what is 1 + 1?"), timeout=30)
    rss_before = proc.memory_info().rss
    peak = {"rss": rss_before}

    async def sample_rss() -> None:
        while True:
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            await asyncio.sleep(0.25)

    async def run() -> dict:
        sampler = asyncio.create_task(sample_rss())
        try:
            return await load(url, args)
        finally:
            sampler.cancel()

    report = asyncio.run(run())
    time.sleep(11)  # half-open connections time out (10 s), abandoned requests drain
    after = httpx.post(f"{url}/v1/chat/completions", json=body("after the storm: what is 2 + 2?"), timeout=30)
    report.update(rss_before_mib=round(rss_before / 2**20, 1), rss_peak_mib=round(peak["rss"] / 2**20, 1),
                  rss_after_mib=round(proc.memory_info().rss / 2**20, 1),
                  healthy_after=after.status_code == 200 and httpx.get(f"{url}/healthz").status_code == 200,
                  max_queue=args.max_queue, max_batch=args.max_batch, batch_ms=args.batch_ms)
    child.terminate()
    child.join(10)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
