"""Streaming with ``--executor celery``: the REAL gateway, a real Redis and a real Celery worker
process, all subprocesses; the worker's experts are litellm experts on the fake OpenAI server
(served.py), so no engine starts. The worker publishes each streamed request's text deltas on
the run's Redis channel while it generates; the gateway's dispatcher forwards them as chunks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.orchestrator.faces.served import ROOT, TOKEN_DELAY_S, Served, fake, fake_registry, fixed_pipeline  # noqa: F401
from workers.harness import LocalFleet

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet_gateway(fake, tmp_path):
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
    ask = dict(model="expertmix", messages=[{"role": "user", "content": "What is six times seven, and why?"}],
               extra_body={"expertmix_budget": {"max_experts": 1}})
    plain = client.chat.completions.create(**ask).choices[0].message.content
    t0, times, texts = time.monotonic(), [], []
    for chunk in client.chat.completions.create(stream=True, **ask):
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
            times.append(time.monotonic() - t0)
    assert "".join(texts) == plain
    assert len(texts) >= 4, f"token chunks from the worker, not one answer: {texts}"
    assert times[-1] - times[0] > 3 * TOKEN_DELAY_S, "they arrived while the worker generated"
    assert httpx.get(f"{fleet_gateway.base}/metrics").status_code == 200
