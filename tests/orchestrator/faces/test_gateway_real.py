"""The real gateway: ``expertmix serve`` as a subprocess on a real vLLM engine, asked over HTTP.

Lean on purpose: one server, one question, a budget that keeps it to the smallest model
(SmolLM2, cost 1.0), so the subprocess starts exactly one engine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SERVE = [sys.executable, "-m", "orchestrator.faces.cli", "serve"]  # this checkout's code, run from ROOT
START_TIMEOUT_S = 120
ANSWER_TIMEOUT_S = 900  # one engine start + one batch; minutes on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(base: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"expertmix serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"expertmix serve did not answer /healthz in {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C (uvicorn's graceful shutdown releases the engine), then kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def gateway(models_ready, tmp_path):
    """A running ``expertmix serve --pipeline ensemble-vote`` on a free local port; stopped after the test."""
    port = _free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env.pop("EXPERTMIX_GATEWAY_API_KEY", None)
    with log_path.open("w") as log:
        proc = subprocess.Popen([*SERVE, "--port", str(port), "--pipeline", "ensemble-vote"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc, log_path)
        yield base
    finally:
        _stop(proc)
    assert proc.returncode is not None


def test_served_question_gets_a_real_answer_with_trace(gateway):
    budget = {"max_cost": 1.0}  # SmolLM2 experts only: one engine in the subprocess
    question = "What nerve innervates the diaphragm?"
    try:
        from openai import OpenAI
    except ImportError:  # the official client is optional; the wire format is the same
        OpenAI = None
    if OpenAI is not None:
        client = OpenAI(base_url=f"{gateway}/v1", api_key="unused", timeout=ANSWER_TIMEOUT_S, max_retries=0)
        assert "ensemble-vote" in [m.id for m in client.models.list()]
        reply = client.chat.completions.create(model="expertmix", messages=[{"role": "user", "content": question}],
                                               extra_body={"expertmix_budget": budget})
        answer, trace = reply.choices[0].message.content, reply.model_extra["expertmix"]
    else:
        r = httpx.post(f"{gateway}/v1/chat/completions", timeout=ANSWER_TIMEOUT_S,
                       json={"model": "expertmix", "messages": [{"role": "user", "content": question}],
                             "expertmix_budget": budget})
        assert r.status_code == 200, r.text
        answer, trace = r.json()["choices"][0]["message"]["content"], r.json()["expertmix"]
    assert answer and answer.strip()
    assert trace["trace"]["pipeline"] == "ensemble-vote"
    assert {a["model"] for a in trace["trace"]["answers"]} == {"smollm2-135m"}
    assert trace["model_loads"] == 1  # the engine loaded once, on this first request
    ready = httpx.get(f"{gateway}/readyz", timeout=10).json()
    assert ready["ready"] and ready["resident_models"] == ["smollm2-135m"]


# ---- a poisoned question fails alone on a real engine (shared pool: no engine of its own) ----------
def test_a_poisoned_question_fails_alone_on_a_real_engine(real_pool, tmp_path):
    """Over HTTP, unreadable text is a 400 before any batch; a poisoned question built past the
    gateway's checks (a lone surrogate, which SmolLM2's tokenizer refuses) fails only its own request
    of a merged run on the real engine, and `expertmix run` writes its error line and answers the rest."""
    import asyncio
    import json

    from orchestrator.config import ExpertRegistry
    from orchestrator.core import Budget, Question
    from orchestrator.faces.gateway import create_app
    from orchestrator.faces.runfile import run_file
    from orchestrator.faces.sdk import Orchestrator
    from orchestrator.pipeline import Pipeline
    from workers.dispatch import LocalDispatcher

    orch = Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=LocalDispatcher(real_pool))
    app = create_app(orch)
    budget = {"max_cost": 1.0}  # SmolLM2 experts only
    good = ["What is 2 + 2?", "Name the largest planet."]

    async def over_http():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=ANSWER_TIMEOUT_S) as c:
            def post(text: str):
                payload = {"model": "expertmix", "messages": [{"role": "user", "content": text}],
                           "expertmix_budget": budget}
                return c.post("/v1/chat/completions", content=json.dumps(payload),
                              headers={"content-type": "application/json"})
            return await asyncio.gather(*(post(t) for t in [*good, "What is \ud800 3 + 3?"]))

    *answered, refused = asyncio.run(over_http())
    assert refused.status_code == 400 and "surrogate" in refused.json()["error"]["message"]
    for r in answered:
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip()

    async def merged_run_with_a_poison():
        poison = Question(id="poison", text="What is \ud800 3 + 3?")  # built past the checks on purpose
        asks = [app.state.chat.local.ask(orch, q, Budget(**budget))
                for q in [Question.make(good[0], id="g0"), poison, Question.make(good[1], id="g1")]]
        return await asyncio.gather(*asks, return_exceptions=True)

    g0, bad, g1 = asyncio.run(merged_run_with_a_poison())
    assert g0.status == g1.status == "ok" and g0.answer.strip() and g1.answer.strip()
    assert isinstance(bad, Exception) or bad.status == "error"

    qfile, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    lines = [{"id": "g0", "question": good[0]}, {"id": "bad", "question": "What is \ud800 3 + 3?"},
             {"id": "g1", "question": good[1]}]
    qfile.write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = run_file(orch, qfile, out, budget=budget, progress=False)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert summary["failed"] == 1 and rows["bad"]["status"] == "error" and "surrogate" in rows["bad"]["error"]
    assert rows["g0"]["status"] == rows["g1"]["status"] == "ok" and rows["g0"]["answer"].strip()
