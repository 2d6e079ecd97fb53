"""The direct OpenAI-compatible backend (``backend: openai``): what it sends, what it reads back
(texts, usage, finish_reason), streaming and cancelling, base models, error sorting; against the
fake OpenAI server (tests/fake_openai.py), a real HTTP server. The shared
contract against a real vLLM server is in test_backends_contract.py."""

from __future__ import annotations

import socket
import time

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


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(token_delay_s=0.01) as fake:  # a stream takes long enough to be cut mid-way
        yield fake


def _backend(server, **spec) -> OpenAIBackend:
    backend = OpenAIBackend(ModelSpec(**{"name": "alpha", "backend": "openai", "api_base": server.base_url, **spec}))
    backend.load()
    return backend


@pytest.fixture
def live(server):
    backend = _backend(server)
    yield backend
    backend.unload()


def test_a_batch_is_answered_in_order_with_usage_and_what_it_sent(server, monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", "sk-secret")
    backend = _backend(server, api_key_env="REMOTE_KEY", served_model="served-name")
    start = len(server.received)
    reqs = [_req(i, sampling=Sampling(stop=["\n"], seed=None, max_tokens=8)) for i in range(20)]
    out = backend.generate(reqs)
    backend.unload()
    assert [c.key for c in out] == [r.key for r in reqs] and {c.model for c in out} == {"alpha"}
    assert [c.text for c in out] == [fake_answer("served-name", r.messages) for r in reqs]
    assert all(c.prompt_tokens == 1 and c.completion_tokens == 3 and c.finish_reason == "stop" for c in out)
    sent = server.received[start]
    assert sent["model"] == "served-name" and sent["stop"] == ["\n"] and "seed" not in sent and "stream" not in sent
    assert server.headers[start]["authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(vars(backend))


def test_the_plug_in_contract_holds(live):
    check_backend(live)


def test_base_models_post_a_completion_prompt(server):
    backend = _backend(server, chat=False)
    (out,) = backend.generate([_req(0)])
    backend.unload()
    assert out.text == " Paris" and server.received[-1]["prompt"] == "Question: q0\nAnswer:"


@pytest.mark.parametrize(("status", "transient", "hint"), [
    (429, True, "retry later"), (500, True, "retry later"), (503, True, "retry later"),
    (401, False, "API key"), (404, False, "served_model"), (400, False, "prompt length"),
])
def test_http_errors_are_sorted_into_transient_or_not(server, status, transient, hint):
    backend = _backend(server, served_model=f"status-{status}")
    try:
        with pytest.raises(BackendError, match=f"request 'k0' failed: HTTP {status}: scripted.*{hint}") as err:
            backend.generate([_req(0), _req(1)])
        assert err.value.transient is transient
    finally:
        backend.unload()


def test_a_server_that_is_down_is_a_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(ModelSpec(name="down", backend="openai", api_base=f"http://127.0.0.1:{port}/v1"))
    try:
        with pytest.raises(BackendError, match="model 'down'.*retry later") as err:
            backend.generate([_req(0)])
        assert err.value.transient is True
    finally:
        backend.unload()


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
    deadline = time.monotonic() + 5
    while server.stats["closed_early"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats["closed_early"] == before + 1
