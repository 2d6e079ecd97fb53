"""An OpenAI-compatible HTTP server, called directly; registered as backend ``openai``.

For servers that already speak OpenAI's API (``vllm serve``, SGLang, llama.cpp's server, TGI's
Messages API, OpenAI itself) no request translation is needed, so this backend skips litellm's
client path: one ``aiohttp`` session per model on the backend's own event loop thread (uvloop
when installed), kept from ``load`` to ``unload``; a batch is sent as concurrent calls on that
loop (answers in request order), so a batch of 32 costs no thread hops between calls. Measured in ``bench/gateway.py``
(docs/benchmarks.md): a fraction of litellm's CPU time per call. Providers
that need translation (Anthropic, Bedrock, Vertex, ...) stay on ``backend: litellm``.

Chat models POST ``{api_base}/chat/completions``; base models (``chat: false``)
``{api_base}/completions`` with a completion-style prompt. The model name sent is ``served_model``
(default: the spec's name). The API key is read from the environment variable ``api_key_env``
names at call time and sent as a bearer token; it is never stored on the backend or in results.

Errors are sorted as the litellm backend sorts them: 408, 409, 429, 5xx answers, timeouts and lost
connections raise ``BackendError(transient=True)``; other 4xx answers ``BackendError(transient=False)``
with a hint.

Settings: ``EXPERTMIX_OPENAI_CONCURRENCY`` (default 32 calls in flight per model; the server
batches them), ``EXPERTMIX_OPENAI_TIMEOUT_S`` (default 120).

Example (a vLLM OpenAI-compatible server on port 8000)::

    >>> from orchestrator.config import ModelSpec
    >>> spec = ModelSpec(name="smollm2", backend="openai", api_base="http://127.0.0.1:8000/v1")
    >>> OpenAIBackend(spec).url
    'http://127.0.0.1:8000/v1/chat/completions'
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

from orchestrator.config import ModelSpec, env_number
from orchestrator.core import CANCELLED, Completion, GenerationRequest
from orchestrator.errors import BackendError, ConfigError, ExpertmixError
from orchestrator.streaming import DeltaCallback
from workers.backends.base import BACKENDS, api_key_from_env, refuse_scoring
from workers.backends.prompting import completion_text, conversation

_TRANSIENT_STATUS = {408, 409, 429}
_HINTS = {
    401: "check the API key in the environment variable named by `api_key_env`",
    403: "check that the API key may use this model",
    404: "check `api_base` (it ends in /v1) and `served_model` (the server's model name)",
}


@BACKENDS.register("openai")
class OpenAIBackend:
    """A model behind an OpenAI-compatible server. ``load`` opens a connection pool; nothing is sent."""

    can_score = False  # no prompt log-probabilities (refuse_scoring)

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.concurrency = int(env_number("EXPERTMIX_OPENAI_CONCURRENCY", 32))
        self.timeout_s = env_number("EXPERTMIX_OPENAI_TIMEOUT_S", 120)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None

    @property
    def url(self) -> str:
        return f"{(self.spec.api_base or '').rstrip('/')}/{'chat/completions' if self.spec.chat else 'completions'}"

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Check settings and the API key variable; start the client's event loop thread and its
        connection pool (no request is sent)."""
        if not self.spec.api_base:
            raise ConfigError(f"model {self.spec.name!r}: an openai model needs `api_base`",
                              hint="e.g. api_base: http://127.0.0.1:8000/v1")
        self._api_key()
        if self._session is not None:
            return
        import aiohttp

        async def session() -> Any:
            return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                         connector=aiohttp.TCPConnector(limit=self.concurrency))

        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"openai-{self.spec.name}", daemon=True)
        self._thread.start()
        self._session = asyncio.run_coroutine_threadsafe(session(), self._loop).result()

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Concurrent calls, one per request; completions in request order."""
        refuse_scoring(requests, self.spec.name)
        return self._batch(requests, None)

    def generate_stream(self, requests: list[GenerationRequest], on_delta: DeltaCallback) -> list[Completion]:
        """Like :meth:`generate`, with ``stream: true`` calls: each text delta goes to ``on_delta`` as
        the server sends it (requests with ``n > 1`` are answered whole)."""
        refuse_scoring(requests, self.spec.name)
        return self._batch(requests, on_delta)

    def unload(self) -> None:
        """Close the connection pool and stop the client's thread."""
        if self._session is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(timeout=30)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
        self._session, self._loop, self._thread = None, None, None

    # ---- calls ---------------------------------------------------------------------------------
    def _batch(self, requests: list[GenerationRequest], on_delta: DeltaCallback | None) -> list[Completion]:
        if not requests:
            return []
        if self._session is None:
            self.load()
        headers = {"content-type": "application/json"}
        key = self._api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return asyncio.run_coroutine_threadsafe(self._all(requests, headers, on_delta), self._loop).result()

    async def _all(self, requests: list[GenerationRequest], headers: dict[str, str],
                   on_delta: DeltaCallback | None) -> list[Completion]:
        # Every call runs to its end (none is left running behind a failure); the first error is raised.
        out = await asyncio.gather(*(self._one(r, headers, on_delta) for r in requests), return_exceptions=True)
        failed = next((c for c in out if isinstance(c, BaseException)), None)
        if failed is not None:
            raise failed
        return out

    def _body(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {"model": self.spec.served_model or self.spec.name, "temperature": s.temperature,
                                "top_p": s.top_p, "max_tokens": s.max_tokens, "n": s.n}
        if self.spec.chat:
            body["messages"] = conversation(request)
        else:
            body["prompt"] = completion_text(request)
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    async def _one(self, request: GenerationRequest, headers: dict[str, str], on_delta: DeltaCallback | None) -> Completion:
        stream = on_delta is not None and request.sampling.n == 1
        content = json.dumps(self._body(request, stream), ensure_ascii=False).encode()
        t0 = time.perf_counter()
        try:
            async with self._session.post(self.url, data=content, headers=headers) as resp:
                if resp.status != 200:
                    raise self._status_error(request, resp.status, await resp.text(errors="replace"))
                if stream:
                    return await self._streamed(request, resp, on_delta, t0)
                data = json.loads(await resp.read())
        except ExpertmixError:
            raise
        except Exception as exc:
            raise self._error(request, exc) from exc
        choices = data.get("choices") or []
        texts = [_choice_text(c, self.spec.chat) for c in choices]
        usage = data.get("usage") or {}
        return Completion(
            key=request.key, model=self.spec.name, text=texts[0] if texts else "", texts=texts,
            prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=time.perf_counter() - t0, finish_reason=choices[0].get("finish_reason") if choices else None,
        )

    async def _streamed(self, request: GenerationRequest, resp: Any, on_delta: DeltaCallback, t0: float) -> Completion:
        """Read one ``stream: true`` answer; closes the connection (the server stops) when ``on_delta`` says so."""
        parts: list[str] = []
        finish, usage = None, {}
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            event = json.loads(payload)
            usage = event.get("usage") or usage
            if not event.get("choices"):
                continue
            choice = event["choices"][0]
            finish = choice.get("finish_reason") or finish
            delta = (choice.get("delta") or {}).get("content") if self.spec.chat else choice.get("text")
            if delta:
                parts.append(delta)
                if on_delta(request.key, delta) is False:
                    finish = CANCELLED
                    resp.close()
                    break
        text = "".join(parts)
        return Completion(
            key=request.key, model=self.spec.name, text=text, texts=[text],
            prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=time.perf_counter() - t0, finish_reason=finish,
        )

    # ---- errors --------------------------------------------------------------------------------
    def _api_key(self) -> str | None:
        return api_key_from_env(self.spec)

    def _status_error(self, request: GenerationRequest, status: int, body: str) -> BackendError:
        transient = status in _TRANSIENT_STATUS or status >= 500
        try:
            detail = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = body
        detail = (str(detail).splitlines() or [""])[0][:300]
        hint = "retry later; the server is busy or failing" if transient else _HINTS.get(
            status, "check the prompt length and sampling settings for this server")
        return BackendError(f"model {self.spec.name!r} ({self.url}): request {request.key!r} failed: "
                            f"HTTP {status}: {detail}", hint=hint, transient=transient)

    def _error(self, request: GenerationRequest, exc: Exception) -> BackendError:
        import aiohttp

        transient = isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError))
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return BackendError(f"model {self.spec.name!r} ({self.url}): request {request.key!r} failed: "
                            f"{type(exc).__name__}: {detail}",
                            hint="retry later; the server is unreachable or slow" if transient
                            else "check that `api_base` is an OpenAI-compatible server", transient=transient)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (uvicorn picks it too): asyncio's pure-Python loop was about a
    third of this thread's CPU samples per call at concurrency 1 (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _choice_text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""
