"""Streaming (SSE) against the REAL gateway in a subprocess, asked with the official `openai` client.

The experts are real litellm experts on a fake OpenAI-compatible HTTP server (tests/fake_openai.py)
that streams one word per chunk, 40 ms apart, so streaming through the real litellm backend, the
executor hook and the SSE face is what is measured; no model engine starts (the real-engine check
is in test_streaming_real.py). Default pipeline `duo`: a fixed router to experts `one` (model
alpha) and `two` (beta), synthesis on alpha.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.orchestrator.faces.served import TOKEN_DELAY_S, client, fake, gateway  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

QUESTION = "What is six times seven, and why does it matter at all?"


def _stream(client, **kwargs):
    """(chunks, arrival time of each) for one streamed request."""
    t0, chunks, times = time.monotonic(), [], []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        chunks.append(chunk)
        times.append(time.monotonic() - t0)
    return chunks, times


def _content(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_synthesis_answer_streams_in_openai_chunk_order(client):
    ask = dict(model="expertmix", messages=[{"role": "user", "content": QUESTION}])
    plain = client.chat.completions.create(**ask)
    chunks, times = _stream(client, stream_options={"include_usage": True}, **ask)

    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.model_extra["expertmix"]["routing"]["experts"] == [
        {"name": "one", "score": 1.0}, {"name": "two", "score": 1.0}]
    pieces = [c for c in middle if c.choices[0].delta.content]
    assert len(pieces) >= 5, "the aggregator's tokens arrive one by one, not in one piece"
    assert all(c.choices[0].finish_reason is None for c in [first, *middle])
    assert finish.choices[0].finish_reason == "stop"
    assert finish.model_extra["expertmix"]["aggregator"] == "synthesis"
    assert usage.choices == [] and usage.usage.completion_tokens == plain.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert _content(chunks) == plain.choices[0].message.content
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    spread = times[chunks.index(pieces[-1])] - times[chunks.index(pieces[0])]
    assert spread > 0.5 * TOKEN_DELAY_S * (len(pieces) - 1), "chunks were sent as generated, not buffered"


def test_single_expert_tokens_stream_before_the_answer_is_done(client, fake):
    ask = dict(model="expertmix", messages=[{"role": "user", "content": QUESTION}],
               extra_body={"expertmix_budget": {"max_experts": 1}})
    plain = client.chat.completions.create(**ask)
    streamed_before = fake.stats["streamed"]
    chunks, times = _stream(client, **ask)
    assert fake.stats["streamed"] == streamed_before + 1, "the one expert's call itself streamed"
    assert chunks[0].model_extra["expertmix"]["routing"]["experts"] == [{"name": "one", "score": 1.0}]
    assert _content(chunks) == plain.choices[0].message.content
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    assert times[-1] - times[first_text] > 5 * TOKEN_DELAY_S, "the first token came well before the last"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None


def test_vote_answer_comes_whole_when_decided(client):
    ask = dict(model="ensemble-vote", messages=[{"role": "user", "content": QUESTION}])
    plain = client.chat.completions.create(**ask)
    chunks, _ = _stream(client, **ask)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == [plain.choices[0].message.content], "one content chunk: vote generates nothing"
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model_extra["expertmix"]["routing"]


def test_errors_before_the_first_chunk_are_plain_http_errors(client):
    with pytest.raises(openai.BadRequestError, match="unknown pipeline"):
        list(client.chat.completions.create(model="gpt-4o", stream=True,
                                            messages=[{"role": "user", "content": "hi"}]))
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        list(client.chat.completions.create(model="expertmix", stream=True, stream_options="yes",
                                            messages=[{"role": "user", "content": "hi"}]))


def test_client_disconnect_stops_its_generation(gateway, fake):
    closed = fake.stats["closed_early"]
    body = {"model": "expertmix", "stream": True, "expertmix_budget": {"max_experts": 1},
            "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.stream("POST", f"{gateway.base}/v1/chat/completions", json=body, timeout=30) as resp:
        for line in resp.iter_lines():
            if '"content": "one' in line or '"content": "alpha' in line:  # the first token: hang up
                break
    deadline = time.monotonic() + 5
    while fake.stats["closed_early"] == closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.stats["closed_early"] == closed + 1, "the expert's stream was closed when the client left"
    assert httpx.get(f"{gateway.base}/healthz").status_code == 200


def test_litellm_as_a_client_streams(gateway):
    import litellm

    chunks = list(litellm.completion(model="openai/expertmix", api_base=f"{gateway.base}/v1", api_key="unused",
                                     stream=True, messages=[{"role": "user", "content": QUESTION}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("alpha says:")
