"""One contract every backend passes, run on FakeBackend (unit), the in-process vLLM backend on
SmolLM2 (integration), and litellm and the direct ``openai`` backend talking to a real vLLM
OpenAI-compatible server (integration).
"""

from __future__ import annotations

import pytest

from orchestrator.config import ModelSpec
from orchestrator.core import GenerationRequest, Sampling
from workers.backends.base import Backend
from workers.backends.fake import FakeBackend

QUESTIONS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "What is 2 + 2?",
    "What animal says moo?",
]


@pytest.fixture
def backend(request) -> Backend:
    """The backend under contract: ``fake``, ``vllm`` (pooled SmolLM2), ``litellm`` or ``openai`` (server)."""
    kind = request.param
    if kind == "fake":
        fake = FakeBackend(ModelSpec(name="fake-model", backend="fake", path="x"))
        fake.load()
        return fake
    if kind == "vllm":
        return request.getfixturevalue("smollm_backend")
    from workers.backends.litellm_backend import LitellmBackend
    from workers.backends.openai_backend import OpenAIBackend

    base = request.getfixturevalue("vllm_server")
    if kind == "openai":
        direct = OpenAIBackend(ModelSpec(name="smollm2-remote", backend="openai", served_model="smollm2", api_base=base))
        direct.load()
        return direct
    spec = ModelSpec(name="smollm2-remote", backend="litellm", litellm_model="hosted_vllm/smollm2", api_base=base)
    remote = LitellmBackend(spec)
    remote.load()
    return remote


KINDS = [
    pytest.param("fake", marks=pytest.mark.unit, id="fake"),
    pytest.param("vllm", marks=pytest.mark.integration, id="vllm"),
    pytest.param("litellm", marks=pytest.mark.integration, id="litellm"),
    pytest.param("openai", marks=pytest.mark.integration, id="openai"),
]
contract = pytest.mark.parametrize("backend", KINDS, indirect=True)


def _requests(model: str, n: int = 1, max_tokens: int = 12, temperature: float = 0.0) -> list[GenerationRequest]:
    sampling = Sampling(max_tokens=max_tokens, n=n, temperature=temperature, seed=7)
    return [
        GenerationRequest(key=f"run/q{i}/e", model=model, messages=[{"role": "user", "content": q}], sampling=sampling)
        for i, q in enumerate(QUESTIONS)
    ]


@contract
def test_order_is_preserved_and_keys_are_copied(backend):
    reqs = _requests(backend.spec.name)
    out = backend.generate(reqs)
    assert [c.key for c in out] == [r.key for r in reqs]
    assert all(c.model == backend.spec.name for c in out)
    assert all(c.text.strip() and c.texts == [c.text] for c in out)
    # Different questions get different answers: the answers really belong to their requests.
    assert len({c.text for c in out}) > 1


@contract
def test_token_counts_are_reported_and_bounded(backend):
    out = backend.generate(_requests(backend.spec.name, max_tokens=8))
    for c in out:
        assert c.prompt_tokens > 0
        assert 0 < c.completion_tokens <= 8
        assert c.latency_s >= 0


@contract
def test_n_samples_come_back(backend):
    out = backend.generate(_requests(backend.spec.name, n=3, max_tokens=8, temperature=0.9)[:2])
    assert [len(c.texts) for c in out] == [3, 3]
    assert all(c.text == c.texts[0] for c in out)


@contract
def test_greedy_generation_is_repeatable(backend):
    reqs = _requests(backend.spec.name, max_tokens=6)[:2]
    assert [c.text for c in backend.generate(reqs)] == [c.text for c in backend.generate(reqs)]


@contract
def test_empty_batch_returns_nothing(backend):
    assert backend.generate([]) == []


@contract
def test_unload_then_load_again_still_answers(backend):
    reqs = _requests(backend.spec.name, max_tokens=6)[:1]
    before = backend.generate(reqs)[0].text
    backend.unload()
    backend.load()
    assert backend.generate(reqs)[0].text == before


@contract
def test_scoring_requests_return_log_likelihoods_in_order_or_a_clear_refusal(backend):
    """A mixed batch: generation and scoring (``continuations``) requests. Local engines score each
    continuation (the real model prefers the true one); hosted APIs refuse, saying why."""
    from orchestrator.errors import BackendError

    name = backend.spec.name
    scoring = GenerationRequest(key="run/s/e", model=name, prompt="The capital of France is",
                                continuations=[" Paris", " a banana"], sampling=Sampling(max_tokens=1))
    batch = [_requests(name)[0], scoring, _requests(name)[1]]
    if backend.spec.backend in ("litellm", "openai"):
        with pytest.raises(BackendError, match="cannot score continuations"):
            backend.generate(batch)
        return
    out = backend.generate(batch)
    assert [c.key for c in out] == [r.key for r in batch]
    assert out[0].text and out[2].text and not out[0].scores
    assert out[1].finish_reason == "scored" and len(out[1].scores) == 2 and not out[1].text
    if backend.spec.backend == "vllm":
        assert out[1].scores[0] > out[1].scores[1]  # a real model: " Paris" is likelier than " a banana"
