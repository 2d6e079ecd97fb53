"""The litellm backend: error sorting (transient or not), API keys from the environment, base-model
text completion. Tests against a real server live in test_backends_contract.py (one server start).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import litellm
import pytest

from orchestrator.config import ModelSpec
from orchestrator.errors import BackendError
from orchestrator.core import GenerationRequest, Sampling
from tests.workers.conftest import free_port
from workers.backends.litellm_backend import LitellmBackend


def _spec(**kw) -> ModelSpec:
    return ModelSpec(name="remote", backend="litellm", litellm_model="openai/some-model", **kw)


def _req(i: int, **kw) -> GenerationRequest:
    return GenerationRequest(key=f"k{i}", model="remote", messages=[{"role": "user", "content": f"q{i}"}], **kw)


class FakeLitellm:
    """Stands in for the litellm module: answers, or raises the exception it is given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def completion(self, **kw):
        with self._lock:
            self.calls.append(kw)
        if self.error:
            raise self.error
        text = kw["messages"][-1]["content"].upper()
        choices = [SimpleNamespace(message=SimpleNamespace(content=text), finish_reason="stop")] * kw["n"]
        return SimpleNamespace(choices=choices, usage=SimpleNamespace(prompt_tokens=3, completion_tokens=2))

    def text_completion(self, **kw):
        with self._lock:
            self.calls.append(kw)
        return SimpleNamespace(choices=[SimpleNamespace(text=" Paris", finish_reason="stop")], usage=None)


def _with_fake(backend: LitellmBackend, fake: FakeLitellm) -> LitellmBackend:
    backend.load()
    backend._litellm = fake
    return backend


@pytest.mark.unit
def test_batch_answers_in_order_with_concurrent_calls():
    fake = FakeLitellm()
    backend = _with_fake(LitellmBackend(_spec(api_base="http://h/v1")), fake)
    out = backend.generate([_req(i, sampling=Sampling(stop=["\n"], seed=None)) for i in range(20)])
    assert [c.key for c in out] == [f"k{i}" for i in range(20)]
    assert [c.text for c in out] == [f"Q{i}" for i in range(20)]
    assert fake.calls[0]["api_base"] == "http://h/v1" and fake.calls[0]["stop"] == ["\n"]
    assert "seed" not in fake.calls[0]


@pytest.mark.unit
def test_api_key_comes_from_the_named_variable_and_is_not_stored(monkeypatch):
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "sk-secret")
    fake = FakeLitellm()
    backend = _with_fake(LitellmBackend(_spec(api_key_env="FAKE_PROVIDER_KEY")), fake)
    backend.generate([_req(0)])
    assert fake.calls[0]["api_key"] == "sk-secret"
    assert "sk-secret" not in repr(vars(backend))


@pytest.mark.unit
def test_missing_api_key_variable_fails_at_load_with_a_hint(monkeypatch):
    monkeypatch.delenv("FAKE_PROVIDER_KEY", raising=False)
    with pytest.raises(BackendError, match="FAKE_PROVIDER_KEY.*not set.*export FAKE_PROVIDER_KEY") as err:
        LitellmBackend(_spec(api_key_env="FAKE_PROVIDER_KEY")).load()
    assert err.value.transient is False


@pytest.mark.unit
def test_base_models_use_text_completion_with_a_completion_prompt():
    fake = FakeLitellm()
    backend = _with_fake(LitellmBackend(_spec(chat=False)), fake)
    (out,) = backend.generate([_req(0)])
    assert out.text == " Paris" and out.prompt_tokens == 0
    assert fake.calls[0]["prompt"] == "Question: q0\nAnswer:"


ERRORS = [
    (litellm.RateLimitError("slow down", llm_provider="openai", model="m"), True, "retry later"),
    (litellm.Timeout("timed out", model="m", llm_provider="openai"), True, "retry later"),
    (litellm.APIConnectionError("refused", llm_provider="openai", model="m"), True, "retry later"),
    (litellm.ServiceUnavailableError("503", llm_provider="openai", model="m"), True, "retry later"),
    (litellm.AuthenticationError("bad key", llm_provider="openai", model="m"), False, "API key"),
    (litellm.NotFoundError("no model", llm_provider="openai", model="m"), False, "litellm_model"),
    (litellm.BadRequestError("too long", model="m", llm_provider="openai"), False, "prompt length"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("error", "transient", "hint"), ERRORS, ids=lambda x: type(x).__name__)
def test_provider_errors_are_sorted_into_transient_or_not(error, transient, hint):
    backend = _with_fake(LitellmBackend(_spec()), FakeLitellm(error))
    with pytest.raises(BackendError, match=f"request 'k0' failed: {type(error).__name__}.*{hint}") as err:
        backend.generate([_req(0)])
    assert err.value.transient is transient


@pytest.mark.integration
def test_a_server_that_is_down_is_a_transient_error():
    spec = ModelSpec(name="down", backend="litellm", litellm_model="hosted_vllm/x",
                     api_base=f"http://127.0.0.1:{free_port()}/v1")  # fmt: skip
    backend = LitellmBackend(spec)
    backend.timeout_s = 10
    with pytest.raises(BackendError, match="model 'down'") as err:
        backend.generate([_req(0, sampling=Sampling(max_tokens=4))])
    assert err.value.transient is True
