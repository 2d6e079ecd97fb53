"""Streaming on a REAL vLLM engine (SmolLM2, the shared session pool): kept to a few short calls.

1. The backend's step loop gives the same greedy text as the batch ``LLM.chat``, in many deltas,
   and a request aborted mid-way leaves the engine clean for the next batch.
2. The gateway (uvicorn in a thread, over the same pool) streams a single-expert answer to the
   official `openai` client: the content equals the non-streamed answer.
"""

from __future__ import annotations

import threading
import time

import openai
import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.core import GenerationRequest, Sampling
from orchestrator.faces.gateway import create_app
from orchestrator.faces.sdk import Orchestrator
from tests.conftest import SMOLLM
from tests.orchestrator.faces.served import free_port
from tests.orchestrator.test_streaming import _pipeline
from workers.dispatch import LocalDispatcher

pytestmark = pytest.mark.integration


def _requests(max_tokens: int = 40) -> list[GenerationRequest]:
    questions = ["What is the capital of France?", "Name three primary colors."]
    return [GenerationRequest(key=f"r/q{i}/e", model=SMOLLM, messages=[{"role": "user", "content": q}],
                              sampling=Sampling(max_tokens=max_tokens)) for i, q in enumerate(questions)]


def test_vllm_stream_equals_batch_text_and_abort_leaves_engine_clean(smollm_backend):
    reqs = _requests()
    batch = smollm_backend.generate(reqs)
    deltas: dict[str, list[str]] = {}
    streamed = smollm_backend.generate_stream(reqs, lambda key, d: deltas.setdefault(key, []).append(d) is None)
    for b, s in zip(batch, streamed):
        assert s.text == b.text and s.completion_tokens == b.completion_tokens
        assert "".join(deltas[b.key]) == b.text and len(deltas[b.key]) > 5, "many deltas, not one"

    seen = {"n": 0}

    def stop_first(key: str, delta: str) -> bool:
        if key == reqs[0].key:
            seen["n"] += 1
            return seen["n"] < 3
        return True

    cut = smollm_backend.generate_stream(reqs, stop_first)
    assert cut[0].finish_reason == "cancelled" and cut[0].completion_tokens < batch[0].completion_tokens
    assert cut[1].text == batch[1].text, "the other request of the batch went on"
    again = smollm_backend.generate(reqs)
    assert [a.text for a in again] == [b.text for b in batch], "no aborted request leaked into the next batch"


@pytest.fixture
def real_gateway(real_pool):
    import uvicorn

    orch = Orchestrator(ExpertRegistry.default(), _pipeline(["generalist"], name="solo"),
                        dispatcher=LocalDispatcher(real_pool))
    app = create_app(orch)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True  # lifespan off: the shared pool is not released
    thread.join(timeout=30)


def test_gateway_streams_real_tokens_equal_to_the_plain_answer(real_gateway):
    client = openai.OpenAI(base_url=f"{real_gateway}/v1", api_key="unused", max_retries=0, timeout=600)
    ask = dict(model="expertmix", messages=[{"role": "user", "content": "What is the capital of France?"}])
    plain = client.chat.completions.create(**ask).choices[0].message.content
    t0 = time.monotonic()
    chunks, first_token_s = [], None
    for chunk in client.chat.completions.create(stream=True, **ask):
        chunks.append(chunk)
        if first_token_s is None and chunk.choices and chunk.choices[0].delta.content:
            first_token_s = time.monotonic() - t0
    total_s = time.monotonic() - t0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain and plain
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5
    assert first_token_s < total_s, (first_token_s, total_s)
    print(f"real SmolLM2 stream: first token {first_token_s:.3f}s, total {total_s:.3f}s, {len(chunks)} chunks")
