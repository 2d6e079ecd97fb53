"""LangChain's ``ChatOpenAI`` (langchain-openai) against the REAL gateway in a subprocess, plain and
streamed. The experts are real litellm experts on the fake OpenAI-compatible server
(tests/fake_openai.py); no engine starts."""

from __future__ import annotations

import pytest

from tests.fake_openai import fake_answer
from tests.orchestrator.faces.served import fake, gateway  # noqa: F401 (fixtures)

langchain_openai = pytest.importorskip("langchain_openai")

pytestmark = pytest.mark.integration

QUESTION = "What is 2 + 2?"


def _chat(gateway, model: str, **kw):
    return langchain_openai.ChatOpenAI(base_url=f"{gateway.base}/v1", api_key="unused", model=model, max_retries=0, **kw)


def test_invoke_gets_the_answer_usage_and_finish_reason(gateway):
    reply = _chat(gateway, "expert/two").invoke(QUESTION)
    assert reply.content == fake_answer("beta", [{"role": "user", "content": QUESTION}])
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "expert/two"
    assert reply.usage_metadata["output_tokens"] == len(reply.content.split())
    cut = _chat(gateway, "expert/two", max_tokens=2).invoke(QUESTION)
    assert (cut.content, cut.response_metadata["finish_reason"]) == ("beta says:", "length")


def test_a_conversation_with_a_system_message_reaches_the_experts(gateway, fake):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    start = len(fake.received)
    messages = [SystemMessage("Answer in French."), HumanMessage("What is the boiling point of water in Fahrenheit?"),
                AIMessage("212 degrees."), HumanMessage("and in Celsius?")]
    reply = _chat(gateway, "expert/one").invoke(messages)
    (call,) = fake.received[start:]
    assert call["messages"][0]["content"].endswith("Answer in French.") and call["messages"][-1]["content"] == "and in Celsius?"
    assert reply.content == fake_answer("alpha", call["messages"])


def test_stream_yields_the_answer_token_by_token_and_equals_invoke(gateway):
    chat = _chat(gateway, "expertmix", stream_usage=True)  # two experts, then synthesis streams its tokens
    whole = chat.invoke("Why is the sky blue?")
    chunks = list(chat.stream("Why is the sky blue?"))
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 2  # streamed, not one block at the end
    assert "".join(texts) == whole.content
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.response_metadata["finish_reason"] == "stop"
    assert merged.usage_metadata["total_tokens"] == whole.usage_metadata["total_tokens"] > 0


def test_astream_works_too(gateway):
    import asyncio

    async def collect() -> list[str]:
        return [c.content async for c in _chat(gateway, "expert/two").astream(QUESTION) if c.content]

    assert "".join(asyncio.run(collect())) == fake_answer("beta", [{"role": "user", "content": QUESTION}])
