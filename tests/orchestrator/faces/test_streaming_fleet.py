"""Streaming with ``--executor celery``: the REAL gateway, a real Redis and a real Celery worker
process, all subprocesses; the worker's experts are litellm experts on the fake OpenAI server
(served.py), so no engine starts. The worker publishes each streamed request's text deltas on
the run's Redis channel while it generates; the gateway's dispatcher forwards them as chunks. A
client that hangs up is recorded cancelled in Redis and the worker closes that expert's stream."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from tests.orchestrator.faces.served import ROOT, Served, fake, fake_registry, fixed_pipeline  # noqa: F401 (fixture)
from workers.harness import LocalFleet

pytestmark = pytest.mark.integration

# slower than served.py's provider: a hung-up request must still be generating when the worker hears of it
FAKE_TOKEN_DELAY_S = 0.1
ASK = dict(model="expertmix", extra_body={"expertmix_budget": {"max_experts": 1}})


@pytest.fixture(scope="module")
def fleet_gateway(fake, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fleet-gateway")
    registry = fake_registry(tmp_path, fake.base_url)
    pipeline = fixed_pipeline(tmp_path, "duo", ["one", "two"])
    env = {"FAKE_OPENAI_KEY": "sk-fake", "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with LocalFleet.start(tmp_path / "fleet", env=env) as fleet:
        with (tmp_path / "worker.log").open("ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "orchestrator.faces.cli", "worker", "--models", "alpha,beta",
                                       "--experts", str(registry), "--loglevel", "WARNING"],
                                      cwd=ROOT, env=fleet.env(), stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        fleet.workers.append(worker)  # stopped with the fleet, by its own pid
        fleet.wait_live(["alpha", "beta"], timeout_s=120, procs=[worker])
        served = Served(["--executor", "celery", "--experts", str(registry), "--pipeline", str(pipeline)],
                        tmp_path / "serve.log", env={**env, "EXPERTMIX_REDIS_URL": fleet.url}).start()
        try:
            yield served
        finally:
            served.stop()


def test_fleet_streams_the_workers_tokens(fleet_gateway):
    client = openai.OpenAI(base_url=f"{fleet_gateway.base}/v1", api_key="unused", max_retries=0, timeout=120)
    ask = dict(messages=[{"role": "user", "content": "What is six times seven, and why?"}], **ASK)
    plain = client.chat.completions.create(**ask).choices[0].message.content
    t0, times, texts = time.monotonic(), [], []
    for chunk in client.chat.completions.create(stream=True, **ask):
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
            times.append(time.monotonic() - t0)
    assert "".join(texts) == plain
    assert len(texts) >= 4, f"token chunks from the worker, not one answer: {texts}"
    assert times[-1] - times[0] > 3 * FAKE_TOKEN_DELAY_S, "they arrived while the worker generated"
    assert httpx.get(f"{fleet_gateway.base}/metrics").status_code == 200


def test_a_client_that_hangs_up_stops_the_workers_generation_while_another_stream_completes(fleet_gateway, fake):
    client = openai.OpenAI(base_url=f"{fleet_gateway.base}/v1", api_key="unused", max_retries=0, timeout=120)
    kept_ask = dict(messages=[{"role": "user", "content": "Why is the sky blue on a clear day at noon in June?"}], **ASK)
    plain = client.chat.completions.create(**kept_ask).choices[0].message.content
    closed = fake.stats["closed_early"]
    kept: list[str] = []

    def stream_kept() -> None:
        for chunk in client.chat.completions.create(stream=True, **kept_ask):
            if chunk.choices and chunk.choices[0].delta.content:
                kept.append(chunk.choices[0].delta.content)

    concurrent = threading.Thread(target=stream_kept)
    concurrent.start()
    left = {"stream": True, "messages": [{"role": "user", "content": "What is six times seven, and why is that so?"}],
            "model": ASK["model"], **ASK["extra_body"]}
    with httpx.stream("POST", f"{fleet_gateway.base}/v1/chat/completions", json=left, timeout=60) as resp:
        for line in resp.iter_lines():
            chunk = json.loads(line[len("data: "):]) if line.startswith("data: {") else {}
            if any(c["delta"].get("content") for c in chunk.get("choices", [])):
                break  # its first token: hang up
    deadline = time.monotonic() + 10
    while fake.stats["closed_early"] == closed and time.monotonic() < deadline:
        time.sleep(0.05)
    concurrent.join(timeout=60)
    assert fake.stats["closed_early"] == closed + 1, "the worker closed the expert's stream when its client left"
    assert "".join(kept) == plain, "the concurrent stream got its whole answer"
    assert len(kept) >= 4
