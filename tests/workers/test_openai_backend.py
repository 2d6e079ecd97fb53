"""The direct OpenAI-compatible backend (``backend: openai``): what it sends, what it reads back
(texts, usage, finish_reason), streaming and cancelling, base models, error sorting; against an
``httpx.MockTransport`` and the real fake OpenAI server (tests/fake_openai.py). The shared
contract against a real vLLM server is in test_backends_contract.py."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.config import ModelSpec
from orchestrator.core import GenerationRequest, Sampling
from orchestrator.errors import BackendError, ConfigError
from orchestrator.testing import check_backend
from tests.fake_openai import FakeOpenAI, fake_answer
from workers.backends.base import make_backend
from workers.backends.openai_backend import OpenAIBackend

pytestmark = pytest.mark.unit


def _spec(**kw) -> ModelSpec:
    return ModelSpec(**{"name": "remote", "backend": "openai", "api_base": "http://h/v1", **kw})


def _req(i: int, **kw) -> GenerationRequest:
    return GenerationRequest(key=f"k{i}", model="remote", messages=[{"role": "user", "content": f"q{i}"}], **kw)


def _mocked(handler, **spec) -> tuple[OpenAIBackend, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    backend = OpenAIBackend(_spec(**spec))
    backend.load()
    backend._client.close()
    backend._client = httpx.Client(transport=httpx.MockTransport(record))
    return backend, seen


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    text = body["messages"][-1]["content"].upper() if "messages" in body else " Paris"
    key = "message" if "messages" in body else "text"
    choice = {"index": 0, "finish_reason": "length" if body["max_tokens"] < 3 else "stop",
              key: {"role": "assistant", "content": text} if key == "message" else text}
    return httpx.Response(200, json={"choices": [choice] * body["n"],
                                     "usage": {"prompt_tokens": 4, "completion_tokens": 2}})


def test_a_batch_is_answered_in_order_with_usage_and_finish_reason(monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", "sk-secret")
    backend, seen = _mocked(_answer, api_key_env="REMOTE_KEY", served_model="served-name")
    out = backend.generate([_req(i, sampling=Sampling(stop=["\n"], seed=None, max_tokens=8)) for i in range(20)])
    assert [c.key for c in out] == [f"k{i}" for i in range(20)] and [c.text for c in out] == [f"Q{i}" for i in range(20)]
    assert {(c.prompt_tokens, c.completion_tokens, c.finish_reason, c.model) for c in out} == {(4, 2, "stop", "remote")}
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://h/v1/chat/completions" and seen[0].headers["authorization"] == "Bearer sk-secret"
    assert sent["model"] == "served-name" and sent["stop"] == ["\n"] and "seed" not in sent and "stream" not in sent
    assert "sk-secret" not in repr(vars(backend))
    (cut,) = backend.generate([_req(0, sampling=Sampling(max_tokens=2, n=3))])
    assert cut.finish_reason == "length" and cut.texts == ["Q0"] * 3


def test_base_models_post_a_completion_prompt():
    backend, seen = _mocked(_answer, chat=False)
    (out,) = backend.generate([_req(0)])
    assert out.text == " Paris" and str(seen[0].url) == "http://h/v1/completions"
    assert json.loads(seen[0].content)["prompt"] == "Question: q0\nAnswer:"


@pytest.mark.parametrize(("status", "transient", "hint"), [
    (429, True, "retry later"), (500, True, "retry later"), (503, True, "retry later"),
    (401, False, "API key"), (404, False, "served_model"), (400, False, "prompt length"),
])
def test_http_errors_are_sorted_into_transient_or_not(status, transient, hint):
    backend, _ = _mocked(lambda r: httpx.Response(status, json={"error": {"message": "nope"}}))
    with pytest.raises(BackendError, match=f"request 'k0' failed: HTTP {status}: nope.*{hint}") as err:
        backend.generate([_req(0)])
    assert err.value.transient is transient


def test_a_server_that_is_down_is_a_transient_error():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    backend, _ = _mocked(refuse)
    with pytest.raises(BackendError, match="ConnectError.*retry later") as err:
        backend.generate([_req(0), _req(1)])
    assert err.value.transient is True


def test_settings_are_checked_at_load(monkeypatch):
    with pytest.raises(ValueError, match="needs `api_base`"):
        ModelSpec(name="m", backend="openai")
    backend = OpenAIBackend(_spec())
    backend.spec = backend.spec.model_copy(update={"api_base": None})
    with pytest.raises(ConfigError, match="needs `api_base`"):
        backend.load()
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendError, match="NO_SUCH_KEY.*not set") as err:
        OpenAIBackend(_spec(api_key_env="NO_SUCH_KEY")).load()
    assert err.value.transient is False
    assert isinstance(make_backend(_spec()), OpenAIBackend)  # registered as backend `openai`


# ---- against a real HTTP server (the fake OpenAI server in a thread) -----------------------------
@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(token_delay_s=0.01) as fake:  # a stream takes long enough to be cut mid-way
        yield fake


@pytest.fixture
def live(server):
    backend = OpenAIBackend(ModelSpec(name="alpha", backend="openai", api_base=server.base_url))
    backend.load()
    yield backend
    backend.unload()


def test_the_plug_in_contract_holds_on_a_real_http_server(live):
    check_backend(live)


def test_real_http_plain_and_streamed_answers_agree(live, server):
    reqs = [_req(i, sampling=Sampling(max_tokens=64)) for i in range(3)]
    plain = live.generate(reqs)
    assert [c.text for c in plain] == [fake_answer("alpha", r.messages) for r in reqs]
    deltas: dict[str, list[str]] = {}
    streamed = live.generate_stream(reqs, lambda key, d: deltas.setdefault(key, []).append(d))
    assert [c.text for c in streamed] == [c.text for c in plain] == ["".join(deltas[r.key]) for r in reqs]
    assert all(len(deltas[r.key]) > 1 for r in reqs)  # really word by word
    assert [(c.finish_reason, c.completion_tokens) for c in streamed] == [(c.finish_reason, c.completion_tokens) for c in plain]


def test_real_http_max_tokens_cut_is_length_plain_and_streamed(live):
    req = _req(0, sampling=Sampling(max_tokens=2))
    (plain,) = live.generate([req])
    (streamed,) = live.generate_stream([req], lambda key, d: None)
    assert (plain.text, plain.finish_reason) == (streamed.text, streamed.finish_reason) == ("alpha says:", "length")


def test_real_http_a_stream_the_caller_cancels_stops_early(live, server):
    before = server.stats["closed_early"]
    (out,) = live.generate_stream([_req(0, sampling=Sampling(max_tokens=64))], lambda key, d: False)
    assert out.finish_reason == "cancelled" and out.text == "alpha"
    live.unload()  # the closed connection is noticed by the server when the pool closes
    import time

    deadline = time.monotonic() + 5
    while server.stats["closed_early"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats["closed_early"] == before + 1
