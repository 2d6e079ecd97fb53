"""The real gateway: ``expertmix serve`` as a subprocess on a real vLLM engine, asked over HTTP.

Lean on purpose: one server, one question, a budget that keeps it to the smallest model
(SmolLM2, cost 1.0), so the subprocess starts exactly one engine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXPERTMIX = ROOT / ".venv" / "bin" / "expertmix"
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
        proc = subprocess.Popen([str(EXPERTMIX), "serve", "--port", str(port), "--pipeline", "ensemble-vote"],
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
