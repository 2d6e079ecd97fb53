"""The REAL gateway in a subprocess asked with the official `openai` client, non-streaming: plain,
multi-turn, `n`, sampling and usage, `expert/NAME`. The experts are real litellm experts on the fake
OpenAI-compatible server (tests/fake_openai.py), which records what reached it; no engine starts."""

from __future__ import annotations

import openai
import pytest

from tests.fake_openai import fake_answer
from tests.orchestrator.faces.served import client, fake, gateway  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def _calls_since(fake, start: int) -> list[dict]:
    return fake.received[start:]


def test_plain_completion_has_real_usage_summed_over_every_call(client, fake):
    start = len(fake.received)
    reply = client.chat.completions.create(model="expertmix", messages=[{"role": "user", "content": "Why is the sky blue?"}])
    calls = _calls_since(fake, start)
    assert len(calls) == 3  # experts one (alpha) and two (beta), then synthesis on alpha
    words = sum(len(fake_answer(c["model"], c["messages"]).split()) for c in calls)
    assert reply.usage.completion_tokens == words
    assert reply.usage.prompt_tokens == sum(sum(len(str(m["content"]).split()) for m in c["messages"]) for c in calls)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    steps = {s["node"]: s for s in reply.model_extra["expertmix"]["trace"]["steps"]}
    assert steps["experts"]["completion_tokens"] + steps["aggregate"]["completion_tokens"] == words


def test_multi_turn_conversation_reaches_every_expert(client, fake):
    start = len(fake.received)
    messages = [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "What is the boiling point of water in Fahrenheit?"},
                {"role": "assistant", "content": "212 degrees."},
                {"role": "user", "content": "and in Celsius?"}]
    reply = client.chat.completions.create(model="expertmix", messages=messages)
    assert reply.model_extra["expertmix"]["question"] == "and in Celsius?"
    experts = [c for c in _calls_since(fake, start) if "Conversation" not in str(c) and len(c["messages"]) >= 4]
    assert len(experts) == 2
    for call in experts:
        system, *turns = call["messages"]
        assert system["role"] == "system" and system["content"].endswith("Answer in French.")
        assert turns == messages[1:]


def test_n_sampling_and_max_tokens_reach_the_provider(client, fake):
    start = len(fake.received)
    reply = client.chat.completions.create(model="expertmix", messages=[{"role": "user", "content": "Why is the sky blue?"}],
                                           n=2, temperature=0.5, top_p=0.9, seed=7, max_tokens=9, stop=["\n\n"])
    assert [c.index for c in reply.choices] == [0, 1]
    calls = _calls_since(fake, start)
    assert len(calls) == 6 and {c["seed"] for c in calls} == {7, 8}
    for call in calls:
        assert (call["temperature"], call["top_p"], call["max_tokens"], call["stop"]) == (0.5, 0.9, 9, ["\n\n"])


def test_expert_name_is_one_expert_without_routing(client, fake):
    start = len(fake.received)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    reply = client.chat.completions.create(model="expert/two", messages=messages)
    (call,) = _calls_since(fake, start)
    assert call["model"] == "beta" and reply.choices[0].message.content == fake_answer("beta", messages)
    assert "expert/two" in [m.id for m in client.models.list()]


def test_finish_reason_is_length_when_the_provider_stopped_at_max_tokens(client):
    """The fake provider cuts at max_tokens words with finish_reason "length"; litellm carries it."""
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    cut = client.chat.completions.create(model="expert/two", messages=messages, max_tokens=2)
    assert (cut.choices[0].finish_reason, cut.choices[0].message.content) == ("length", "beta says:")
    chunks = list(client.chat.completions.create(model="expert/two", messages=messages, max_tokens=2, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "beta says:"
    whole = client.chat.completions.create(model="expert/two", messages=messages)
    assert whole.choices[0].finish_reason == "stop"


def test_what_cannot_be_honoured_is_a_400_the_client_raises(client):
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.chat.completions.create(model="expertmix", messages=[{"role": "user", "content": "hi"}], logprobs=True)
