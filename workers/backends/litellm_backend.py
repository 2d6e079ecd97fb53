"""Any hosted provider or OpenAI-compatible server through litellm; registered as backend ``litellm``.

A batch is sent as concurrent calls (a thread pool), answers kept in request order. Chat models use
``litellm.completion``; base models (``chat: false``) use ``litellm.text_completion`` with a
completion-style prompt. The API key is read from the environment variable the model spec names
(``api_key_env``) at call time and never stored on the backend or in results.

Errors are sorted so callers can decide what to retry: rate limits, timeouts, lost connections and
5xx answers raise ``BackendError(transient=True)``; bad keys, unknown models and bad requests raise
``BackendError(transient=False)`` with a hint.

Settings: ``EXPERTMIX_LITELLM_CONCURRENCY`` (default 8 calls in flight),
``EXPERTMIX_LITELLM_TIMEOUT_S`` (default 120).

Example (a vLLM OpenAI-compatible server on port 8000)::

    >>> from orchestrator.config import ModelSpec
    >>> spec = ModelSpec(name="srv", backend="litellm", litellm_model="hosted_vllm/smollm2",
    ...                  api_base="http://127.0.0.1:8000/v1")
    >>> LitellmBackend(spec).spec.litellm_model
    'hosted_vllm/smollm2'
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.config import ModelSpec, env_number
from orchestrator.errors import BackendError, ConfigError, ExpertmixError
from orchestrator.core import CANCELLED, Completion, GenerationRequest
from orchestrator.streaming import DeltaCallback
from workers.backends.base import BACKENDS, api_key_from_env, refuse_scoring
from workers.backends.prompting import completion_text, conversation

_TRANSIENT = (
    "RateLimitError",
    "Timeout",
    "APIConnectionError",
    "ServiceUnavailableError",
    "InternalServerError",
    "BadGatewayError",
)
_HINTS = {
    "AuthenticationError": "check the API key in the environment variable named by `api_key_env`",
    "PermissionDeniedError": "check that the API key may use this model",
    "NotFoundError": "check `litellm_model` (provider/model) and `api_base`",
    "BadRequestError": "check the prompt length and sampling settings for this provider",
}


@BACKENDS.register("litellm")
class LitellmBackend:
    """A remote model reached through litellm. ``load`` checks settings; it starts no engine."""

    can_score = False  # hosted APIs return no prompt log-probabilities (refuse_scoring)

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.concurrency = int(env_number("EXPERTMIX_LITELLM_CONCURRENCY", 8))
        self.timeout_s = env_number("EXPERTMIX_LITELLM_TIMEOUT_S", 120)
        self._litellm: Any = None

    @property
    def loaded(self) -> bool:
        return self._litellm is not None

    def load(self) -> None:
        """Import litellm and check the API key variable is set (no network call)."""
        if not self.spec.litellm_model:
            raise ConfigError(f"model {self.spec.name!r}: a litellm model needs `litellm_model`")
        self._api_key()
        # litellm otherwise fetches its model price list from the internet at import.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        # litellm counts tokens for its cost bookkeeping on a call's way out; its tokenizer
        # imports lazily (~1.5 s, local files). Paid here, not inside the first streamed call,
        # where it held the first chunks back until the provider had sent them all.
        litellm.token_counter(model=self.spec.litellm_model, text="warm up")
        self._litellm = litellm

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Concurrent calls, one per request; completions in request order."""
        if not requests:
            return []
        refuse_scoring(requests, self.spec.name)
        if self._litellm is None:
            self.load()
        inputs = [conversation(r) if self.spec.chat else completion_text(r) for r in requests]
        workers = max(1, min(self.concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"litellm-{self.spec.name}") as pool:
            return list(pool.map(self._one, requests, inputs))

    def generate_stream(self, requests: list[GenerationRequest], on_delta: DeltaCallback) -> list[Completion]:
        """Like :meth:`generate`, with ``stream=True`` calls: each text delta goes to ``on_delta`` as
        the provider sends it (requests with ``n > 1`` are answered whole)."""
        if not requests:
            return []
        refuse_scoring(requests, self.spec.name)
        if self._litellm is None:
            self.load()
        inputs = [conversation(r) if self.spec.chat else completion_text(r) for r in requests]
        workers = max(1, min(self.concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"litellm-{self.spec.name}") as pool:
            return list(pool.map(lambda r, c: self._one(r, c, on_delta), requests, inputs))

    def unload(self) -> None:
        """Nothing is resident; forget the client module reference."""
        self._litellm = None

    # ---- one call ------------------------------------------------------------------------
    def _one(self, request: GenerationRequest, content: Any, on_delta: DeltaCallback | None = None) -> Completion:
        s = request.sampling
        kwargs: dict[str, Any] = dict(
            model=self.spec.litellm_model,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            n=s.n,
            timeout=self.timeout_s,
            api_key=self._api_key(),
        )
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if self.spec.api_base:
            kwargs["api_base"] = self.spec.api_base
        t0 = time.perf_counter()
        if on_delta is not None and s.n == 1:
            return self._streamed(request, content, kwargs, on_delta, t0)
        try:
            if self.spec.chat:
                resp = self._litellm.completion(messages=content, **kwargs)
                texts = [c.message.content or "" for c in resp.choices]
            else:
                resp = self._litellm.text_completion(prompt=content, **kwargs)
                texts = [c.text or "" for c in resp.choices]
        except ExpertmixError:
            raise
        except Exception as exc:
            raise self._error(request, exc) from exc
        usage = getattr(resp, "usage", None)
        return Completion(
            key=request.key,
            model=self.spec.name,
            text=texts[0] if texts else "",
            texts=texts,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=time.perf_counter() - t0,
            finish_reason=resp.choices[0].finish_reason if resp.choices else None,
        )

    def _streamed(self, request: GenerationRequest, content: Any, kwargs: dict[str, Any],
                  on_delta: DeltaCallback, t0: float) -> Completion:
        """One ``stream=True`` call; stops reading (closing the connection) when ``on_delta`` says so."""
        parts: list[str] = []
        finish, usage = None, None
        kwargs = {**kwargs, "stream": True, "stream_options": {"include_usage": True}}
        try:
            if self.spec.chat:
                chunks = self._litellm.completion(messages=content, **kwargs)
            else:
                chunks = self._litellm.text_completion(prompt=content, **kwargs)
            for chunk in chunks:
                usage = getattr(chunk, "usage", None) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = (choice.delta.content if self.spec.chat else getattr(choice, "text", None)) or ""
                finish = choice.finish_reason or finish
                if delta:
                    parts.append(delta)
                    if on_delta(request.key, delta) is False:
                        finish = CANCELLED
                        _close(chunks)
                        break
        except ExpertmixError:
            raise
        except Exception as exc:
            raise self._error(request, exc) from exc
        text = "".join(parts)
        return Completion(
            key=request.key, model=self.spec.name, text=text, texts=[text],
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=time.perf_counter() - t0, finish_reason=finish,
        )

    def _api_key(self) -> str | None:
        return api_key_from_env(self.spec)

    def _error(self, request: GenerationRequest, exc: Exception) -> BackendError:
        kind = type(exc).__name__
        lineage = [c.__name__ for c in type(exc).__mro__]
        transient = any(n in _TRANSIENT for n in lineage) or isinstance(exc, (TimeoutError, ConnectionError))
        known = next((_HINTS[n] for n in lineage if n in _HINTS), None)
        hint = "retry later; the provider or server is busy or unreachable" if transient else (
            known or "check the model spec (litellm_model, api_base, api_key_env)"
        )
        detail = str(exc).splitlines()[0][:300] if str(exc) else kind
        return BackendError(
            f"model {self.spec.name!r} ({self.spec.litellm_model}): request {request.key!r} failed: {kind}: {detail}",
            hint=hint,
            transient=transient,
        )


def _close(chunks: Any) -> None:
    """Drop a stream early: its HTTP response is closed so the provider stops generating."""
    for target in (chunks, getattr(chunks, "completion_stream", None), getattr(chunks, "response", None)):
        close = getattr(target, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 (closing a half-read stream may raise; it is gone anyway)
                pass
