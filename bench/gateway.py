"""What the gateway adds per request: direct backend vs expertmix's gateway vs a LiteLLM proxy.

One run prints, against the same instant fake OpenAI-compatible backend (a raw asyncio HTTP
server in a child process that answers ``POST /v1/chat/completions`` at once, plain or streamed):

- (a) **direct**: clients call the fake backend;
- (b) **expertmix**: ``expertmix serve`` (a child process) with a one-expert pass-through
  pipeline whose expert is the fake backend, twice: as a ``litellm`` model (``openai/fake`` +
  ``api_base``, litellm's client path) and as an ``openai`` model (the direct OpenAI-compatible
  client, ``workers/backends/openai_backend.py``);
- (c) **litellm-proxy**: ``litellm --config`` (LiteLLM's proxy, one worker) routing to the same
  backend, run from its own virtualenv (``.venv-litellm-proxy``, see docs/benchmarks.md: its pins
  conflict with expertmix's) and skipped, saying so, when that is not installed;

at concurrency 1 (p50/p99 and what each adds to the direct p50) and 32 (requests/s, and requests
per CPU-second of the serving process, i.e. per core), streamed time to the first content token
at concurrency 1, the ratios, and (``--profile``) a py-spy profile of the gateway process at
concurrency 32 (``py-spy --gil``: samples of whichever thread holds the GIL, i.e. the process's
Python CPU time): the top 15 functions by self samples, and expertmix's own by inclusive samples.

    .venv/bin/python bench/gateway.py [--seconds 8] [--requests 200] [--profile] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROXY_VENV = ROOT / ".venv-litellm-proxy"
QUESTION = [{"role": "user", "content": "What is 6 * 7?"}]
MASTER_KEY = "sk-bench-" + os.urandom(16).hex()  # the proxy refuses to start without one; both gateways check it


# ---- (the child) the instant fake backend --------------------------------------------------------
def _answer(body: bytes) -> bytes:
    req = json.loads(body or b"{}")
    model, created = req.get("model", "fake"), int(time.time())
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    if not req.get("stream"):
        out = json.dumps({"id": "fake-1", "object": "chat.completion", "created": created, "model": model,
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "Answer: 42"}}],
                          "usage": usage}).encode()
        return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(out)) + out
    base = {"id": "fake-1", "object": "chat.completion.chunk", "created": created, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": f}]} for d, f in
              [({"role": "assistant", "content": ""}, None), ({"content": "Answer:"}, None), ({"content": " 42"}, None),
               ({}, "stop")]]
    if (req.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(data)) + data


class _FakeProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: all an OpenAI client sends."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            if head.startswith(b"post"):
                self.transport.write(_answer(body))
            else:
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")


def serve_fake(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_FakeProtocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---- the parent: servers -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path, env: dict[str, str] | None = None, timeout_s: float = 120) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd[:3])} did not answer {url} in {timeout_s}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def gateway_files(tmp: Path, fake_port: int, backend: str) -> tuple[Path, Path]:
    registry, pipeline = tmp / f"experts-{backend}.yaml", tmp / "passthrough.yaml"
    client = "litellm_model: openai/fake" if backend == "litellm" else "served_model: fake"
    registry.write_text(f"""
models:
  fake: {{backend: {backend}, {client}, api_base: "http://127.0.0.1:{fake_port}/v1", api_key_env: BENCH_FAKE_KEY}}
aggregator_model: fake
experts:
  one: {{model: fake, description: the fake backend, cost: 1.0, sampling: {{temperature: 0.0, max_tokens: 16}}}}
""")
    pipeline.write_text("""
name: passthrough
nodes:
  - {name: input, type: input}
  - {name: router, type: router, params: {router: fixed, experts: [one]}}
  - {name: experts, type: experts}
  - {name: answer, type: aggregator, params: {aggregator: synthesis, answer_type: text}}
  - {name: output, type: output}
edges:
  - {from: input.questions, to: router.questions}
  - {from: input.questions, to: experts.questions}
  - {from: router.decisions, to: experts.decisions}
  - {from: input.questions, to: answer.questions}
  - {from: experts.answers, to: answer.answers}
  - {from: answer.final, to: output.final}
""")
    return registry, pipeline


def proxy_config(tmp: Path, fake_port: int) -> Path:
    path = tmp / "litellm.yaml"
    path.write_text(f"""
model_list:
  - model_name: passthrough
    litellm_params: {{model: openai/fake, api_base: "http://127.0.0.1:{fake_port}/v1", api_key: sk-fake}}
""")
    return path


# ---- the parent: load ----------------------------------------------------------------------------
async def _one(session, url: str, model: str, stream: bool) -> float:
    """One request; seconds to the whole answer (plain) or to the first content token (streamed)."""
    body = {"model": model, "messages": QUESTION, "stream": stream}
    t0 = time.perf_counter()
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {(await resp.text())[:300]}")
        if not stream:
            await resp.read()
            return time.perf_counter() - t0
        first = None
        async for line in resp.content:
            if first is None and line.startswith(b"data: {") and _has_content(line[6:]):
                first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError(f"{url}: the stream had no content")
        return first


def _has_content(event: bytes) -> bool:
    choices = json.loads(event).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def sequential(url: str, model: str, n: int, stream: bool = False) -> list[float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=HEADERS) as s:
        for _ in range(5):
            await _one(s, url, model, stream)
        return [await _one(s, url, model, stream) for _ in range(n)]


async def concurrent(url: str, model: str, concurrency: int, seconds: float) -> tuple[int, float, list[float]]:
    """``concurrency`` clients for ``seconds``: (answered, wall seconds, latencies)."""
    import aiohttp

    lat: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=HEADERS) as s:
        await asyncio.gather(*(_one(s, url, model, False) for _ in range(concurrency)))  # warm connections
        t0 = time.perf_counter()
        end = t0 + seconds

        async def client() -> None:
            while time.perf_counter() < end:
                lat.append(await _one(s, url, model, False))

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return len(lat), time.perf_counter() - t0, lat


HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}


def cpu_s(pid: int) -> float:
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(name: str, url: str, model: str, pid: int, args: argparse.Namespace) -> dict:
    seq = asyncio.run(sequential(url, model, args.requests))
    ttft = asyncio.run(sequential(url, model, max(20, args.requests // 4), stream=True))
    c0 = cpu_s(pid)
    n, wall, lat = asyncio.run(concurrent(url, model, 32, args.seconds))
    used = cpu_s(pid) - c0
    row = {"target": name, "c1_p50_ms": 1000 * statistics.median(seq), "c1_p99_ms": 1000 * pct(seq, 0.99),
           "c1_rps": len(seq) / sum(seq), "c32_rps": n / wall, "c32_p50_ms": 1000 * statistics.median(lat),
           "c32_p99_ms": 1000 * pct(lat, 0.99), "c32_cpu_s": used, "c32_per_core": n / used if used else float("nan"),
           "stream_ttft_p50_ms": 1000 * statistics.median(ttft), "stream_ttft_p99_ms": 1000 * pct(ttft, 0.99)}
    print(f"  {name}: c=1 p50 {row['c1_p50_ms']:.2f} ms, c=32 {row['c32_rps']:.0f} req/s "
          f"({row['c32_per_core']:.0f} per CPU-second)", flush=True)
    return row


def profile(pid: int, url: str, model: str, seconds: float, out: Path, label: str) -> dict | None:
    """py-spy on the gateway while 32 clients load it: top functions by self and inclusive samples."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return None
    raw = out / f"gateway-{label}.pyspy.txt"
    rec = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                            "--format", "raw", "--output", str(raw), "--nonblocking", "--gil"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asyncio.run(concurrent(url, model, 32, seconds + 1))
    rec.wait(timeout=60)
    return summarise(raw) if raw.exists() else None


def summarise(raw: Path) -> dict:
    """Top 15 functions by self samples, and expertmix's own functions by inclusive samples."""
    own, incl, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += int(count)
        own[_short(frames[-1])] += int(count)
        for f in {_short(f) for f in frames if _PROJECT.search(f)}:
            incl[f] += int(count)
    return {"samples": total, "self": own.most_common(15), "inclusive": incl.most_common(15), "raw": str(raw)}


# py-spy names a file by its shortest path under sys.path: orchestrator/executor.py, gateway/app.py
_PROJECT = re.compile(r"\((?:[^()]*/)?(?:orchestrator|workers|aggregators|routers|skills|gateway|faces|backends)/")


def _short(frame: str) -> str:
    """``fn (path/to/module.py:12)`` -> ``fn (module.py)``."""
    fn, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{fn} ({'/'.join(parts[-2:])})"


# ---- report --------------------------------------------------------------------------------------
def report(rows: list[dict], profs: dict[str, dict | None], note: str | None) -> None:
    print("\n| target | c=1 p50 ms | c=1 p99 ms | added to direct p50 ms | c=32 req/s | c=32 p50 / p99 ms | "
          "c=32 req per CPU-s | stream first token p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    direct = rows[0]
    for r in rows:
        added = "" if r is direct else f"{r['c1_p50_ms'] - direct['c1_p50_ms']:.2f}"
        print(f"| {r['target']} | {r['c1_p50_ms']:.2f} | {r['c1_p99_ms']:.2f} | {added} | {r['c32_rps']:.0f} | "
              f"{r['c32_p50_ms']:.1f} / {r['c32_p99_ms']:.1f} | {r['c32_per_core']:.0f} | "
              f"{r['stream_ttft_p50_ms']:.2f} / {r['stream_ttft_p99_ms']:.2f} |")
    by = {r["target"]: r for r in rows}
    print()
    for x in (r for r in rows if r["target"].startswith("expertmix")):
        line = f"{x['target']}: adds {x['c1_p50_ms'] - direct['c1_p50_ms']:.2f} ms p50 at c=1 (target < 2 ms)"
        if "litellm-proxy" in by:
            p = by["litellm-proxy"]
            line += (f"; vs litellm-proxy at c=32: {x['c32_rps'] / p['c32_rps']:.2f}x req/s, "
                     f"{x['c32_per_core'] / p['c32_per_core']:.2f}x req per CPU-second (target >= 10x)")
        print(line)
    if "litellm-proxy" in by:
        print(f"litellm-proxy: adds {by['litellm-proxy']['c1_p50_ms'] - direct['c1_p50_ms']:.2f} ms p50 at c=1")
    if note:
        print(f"litellm-proxy: {note}")
    for label, prof in profs.items():
        if not prof:
            print(f"\n{label} expert: no profile (py-spy missing or it failed)")
            continue
        print(f"\ngateway process ({label} expert) at c=32, py-spy --gil: {prof['samples']} samples "
              f"(raw stacks: {prof['raw']})")
        for title in ("self", "inclusive"):
            print(f"top 15 by {title} samples{' (expertmix code only)' if title == 'inclusive' else ''}:")
            for fn, n in prof[title]:
                print(f"  {100 * n / prof['samples']:5.1f}%  {fn}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each concurrency-32 pass")
    ap.add_argument("--requests", type=int, default=200, help="sequential requests of each concurrency-1 pass")
    ap.add_argument("--profile", action="store_true", help="py-spy the gateway at concurrency 32 (an extra pass)")
    ap.add_argument("--no-proxy", action="store_true", help="skip the LiteLLM proxy")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fake:
        return serve_fake(args.serve_fake)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    fake_port = free_port()
    fake = start([sys.executable, __file__, "--serve-fake", str(fake_port)], f"http://127.0.0.1:{fake_port}/v1/models",
                 tmp / "fake.log")
    rows, profs, note = [], {}, None
    try:
        print(f"logs in {tmp}", flush=True)
        rows.append(measure("direct", f"http://127.0.0.1:{fake_port}/v1/chat/completions", "fake", fake.pid, args))
        for backend in ("litellm", "openai"):
            registry, pipeline = gateway_files(tmp, fake_port, backend)
            port = free_port()
            gw = start([sys.executable, "-m", "orchestrator.faces.cli", "serve", "--port", str(port), "--experts",
                        str(registry), "--pipeline", str(pipeline), "--log-level", "warning"],
                       f"http://127.0.0.1:{port}/healthz", tmp / f"gateway-{backend}.log",
                       env={"BENCH_FAKE_KEY": "sk-fake", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT),
                            "EXPERTMIX_GATEWAY_API_KEYS": MASTER_KEY})  # keys checked, as the proxy checks its own
            try:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                rows.append(measure(f"expertmix ({backend} expert)", url, "passthrough", gw.pid, args))
                if args.profile:
                    profs[backend] = profile(gw.pid, url, "passthrough", args.seconds, tmp, backend)
            finally:
                stop(gw)
        litellm_cli = PROXY_VENV / "bin" / "litellm"
        if args.no_proxy:
            note = "skipped (--no-proxy)"
        elif not litellm_cli.exists():
            note = (f"skipped: {litellm_cli} is missing (litellm[proxy]==1.106.2 needs websockets<16 and rich<14, "
                    "which conflict with constraints.txt; install it in its own venv, see docs/benchmarks.md)")
        else:
            port = free_port()
            try:
                proxy = start([str(litellm_cli), "--config", str(proxy_config(tmp, fake_port)), "--host", "127.0.0.1",
                               "--port", str(port), "--num_workers", "1"],
                              f"http://127.0.0.1:{port}/health/liveliness", tmp / "proxy.log",
                              env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                                   "LITELLM_MASTER_KEY": MASTER_KEY})
            except RuntimeError as exc:
                note = f"did not start ({str(exc).splitlines()[0]}; log: {tmp / 'proxy.log'})"
            else:
                try:
                    rows.append(measure("litellm-proxy", f"http://127.0.0.1:{port}/v1/chat/completions", "passthrough",
                                        proxy.pid, args))
                finally:
                    stop(proxy)
    finally:
        stop(fake)
    report(rows, profs, note)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "profiles": profs, "proxy_note": note}, indent=2))


if __name__ == "__main__":
    main()
