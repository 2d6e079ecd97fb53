"""A minimal OpenAI-compatible REST gateway over the SDK (``expertmix serve``).

The HTTP routes are thin adapters: each one parses the request, calls
:meth:`Orchestrator.aask <orchestrator.faces.sdk.Orchestrator.aask>` and shapes the answer; no domain
code imports FastAPI. The request's ``model`` names a pipeline (``symbolic-moe``, ``coe``,
``ensemble-vote``, or ``expertmix`` for the gateway's default one). One orchestrator per pipeline
is created on first use and reused; all of them share the first one's dispatcher, so each model's
engine (or the Celery fleet connection) is loaded once for the whole gateway.

Example::

    import uvicorn
    from orchestrator import Orchestrator
    from orchestrator.faces.gateway import create_app

    app = create_app(Orchestrator.from_defaults("ensemble-vote"))
    uvicorn.run(app, host="127.0.0.1", port=8000)
    # curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    #   -d '{"model": "expertmix", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}'
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import (
    BackendError,
    BudgetError,
    ConfigError,
    DispatchError,
    ExpertmixError,
    InputError,
    UnknownNameError,
)
from orchestrator.pipeline import Pipeline, builtin_pipelines
from orchestrator.faces.sdk import DEFAULT_PIPELINE, Orchestrator
from orchestrator.core import Budget, Question, Result

log = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "expertmix"  # the `model` value that means "this gateway's default pipeline"
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_BATCH = 32  # questions merged into one local run
API_KEY_ENV = "EXPERTMIX_GATEWAY_API_KEY"  # when set, /v1/* requires `Authorization: Bearer <key>`

OrchestratorFactory = Callable[[str], Orchestrator]


# ---- request schema (OpenAI chat.completions, plus the expertmix_budget extension) ------------
class ChatMessage(BaseModel):
    """One chat message; ``content`` is a string or OpenAI content parts (text parts are used)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields the gateway reads; other OpenAI fields (temperature, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = DEFAULT_MODEL_ALIAS
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None  # accepted for compatibility; the pipeline sets expert lengths
    stream: bool = False
    expertmix_budget: Budget | None = None


# ---- pipelines -> orchestrators ----------------------------------------------------------------
class PipelineOrchestrators:
    """One :class:`Orchestrator` per allowed pipeline name, created on first use and reused.

    Only built-in pipeline names and the default pipeline are allowed: a request can never make
    the gateway read a file path.
    """

    def __init__(self, source: Orchestrator | OrchestratorFactory, *, default_pipeline: str | None = None) -> None:
        self._cache: dict[str, Orchestrator] = {}
        self._guard = threading.Lock()
        if isinstance(source, Orchestrator):
            self.default = source.pipeline.name
            self._cache[self.default] = source
            self._factory: OrchestratorFactory = lambda name: _sibling(source, name)
        elif callable(source):
            self.default = default_pipeline or DEFAULT_PIPELINE
            self._factory = source
        else:
            raise ConfigError(f"create_app needs an Orchestrator or a factory(name) -> Orchestrator, "
                              f"got {type(source).__name__}")
        self.names = sorted(set(builtin_pipelines()) | {self.default})

    def resolve(self, model: str) -> str:
        """The pipeline name a request's ``model`` means; unknown names list the choices."""
        name = self.default if model == DEFAULT_MODEL_ALIAS else model
        if name not in self.names:
            raise UnknownNameError("pipeline", model, [DEFAULT_MODEL_ALIAS, *self.names],
                                   where="the request's `model` (GET /v1/models lists them)")
        return name

    def get(self, name: str) -> Orchestrator:
        """The orchestrator for an allowed pipeline name (built on first use)."""
        with self._guard:
            if name not in self._cache:
                try:
                    self._cache[name] = self._factory(name)
                except ConfigError as exc:  # the gateway's own setup is wrong, not the request: a 500
                    raise ExpertmixError(f"pipeline {name!r} is misconfigured on this gateway: {exc}",
                                         hint="check the gateway's pipelines and expert registry; "
                                              "`expertmix pipelines validate NAME` checks one") from exc
            return self._cache[name]

    def first(self) -> Orchestrator:
        return self.get(self.default)

    def close(self) -> None:
        """Release every distinct dispatcher once (siblings share their dispatcher)."""
        with self._guard:
            dispatchers = {id(o.dispatcher): o.dispatcher for o in self._cache.values()}
            self._cache.clear()
        for dispatcher in dispatchers.values():
            dispatcher.close()


def _sibling(base: Orchestrator, name: str) -> Orchestrator:
    """An orchestrator for another built-in pipeline sharing ``base``'s registry and dispatcher."""
    return Orchestrator(base.registry, Pipeline.load(name), executor=base.executor,
                        dispatcher=base.dispatcher, seed=base.seed)


# ---- the app -----------------------------------------------------------------------------------
def create_app(source: Orchestrator | OrchestratorFactory, *, default_pipeline: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """The gateway app over an orchestrator (its siblings share its engines) or a factory.

    ``source`` is either a ready :class:`Orchestrator` (its pipeline is the default; other
    built-in pipelines reuse its registry and dispatcher) or ``factory(pipeline_name)`` returning
    one (``default_pipeline`` names the default then). Engines are released at shutdown.
    With local engines, concurrent requests are merged into runs of up to ``max_batch`` questions.
    """
    orchestrators = PipelineOrchestrators(source, default_pipeline=default_pipeline)
    service = _ChatService(orchestrators, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(orchestrators.close)

    app = FastAPI(title="expertmix gateway", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions over expertmix pipelines.")
    app.state.orchestrators = orchestrators
    app.state.chat = service
    _add_error_handlers(app)
    app.add_middleware(_BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(_ApiKeyMiddleware, key=os.environ.get(API_KEY_ENV) or None)  # outermost: before reading bodies

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest) -> dict[str, Any]:
        return await service.complete(req)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        names = [DEFAULT_MODEL_ALIAS, *orchestrators.names]
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "expertmix",
             "pipeline": orchestrators.default if n == DEFAULT_MODEL_ALIAS else n} for n in names]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = await asyncio.to_thread(readiness, orchestrators.first())
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    return app


class _ChatService:
    """The body of ``POST /v1/chat/completions``: question out of the messages, answer into OpenAI shape."""

    def __init__(self, orchestrators: PipelineOrchestrators, *, max_batch: int) -> None:
        self.orchestrators = orchestrators
        self.local = _LocalRuns(max_batch)

    async def complete(self, req: ChatCompletionRequest) -> dict[str, Any]:
        if req.stream:
            raise InputError("streaming is not supported by the expertmix gateway",
                             hint="send the request with stream=false (the default)")
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        question = Question.make(last_user_message(req.messages), id=request_id)  # 400 before any queueing
        name = self.orchestrators.resolve(req.model)
        orch = await asyncio.to_thread(self.orchestrators.get, name)
        if orch.executor == "local":
            result = await self.local.ask(orch, question, req.expertmix_budget)
        else:  # the fleet takes concurrent runs; its workers coalesce them into batches
            result = await orch.aask(question.text, id=request_id, budget=req.expertmix_budget)
        if result.status == "error":
            raise BackendError(f"pipeline {name!r} failed on request {request_id}: {result.error}")
        return chat_completion(result, request_id=request_id, model=name)


class _LocalRuns:
    """Local engines are one shared pool: runs take turns on it, and the requests that arrive while
    one runs join the next run together (up to ``max_batch``), so concurrent requests cost one batch
    per model instead of one run each. Only requests for the same pipeline and budget are merged.
    """

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}", hint="use 1 to run requests one by one")
        self.max_batch = max_batch
        self._loop: asyncio.AbstractEventLoop | None = None

    async def ask(self, orch: Orchestrator, question: Question, budget: Budget | None) -> Result:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio primitives belong to one event loop
            self._loop, self._turn, self._waiting = loop, asyncio.Lock(), {}
        fut: asyncio.Future[Result] = loop.create_future()
        group = self._waiting.setdefault((id(orch), budget.model_dump_json() if budget else ""), [])
        group.append((question, fut))
        while not fut.done():
            async with self._turn:
                if not fut.done():  # an earlier run may have answered it while this one waited
                    batch = group[: self.max_batch]
                    del group[: len(batch)]
                    await self._run(orch, batch, budget)
        return fut.result()

    async def _run(self, orch: Orchestrator, batch: list[tuple[Question, asyncio.Future]], budget: Any) -> None:
        try:
            results = await orch.arun([q for q, _ in batch], budget=budget)
        except asyncio.CancelledError:
            _settle(batch, ExpertmixError("the run serving this request was cancelled", hint="send it again"))
            raise
        except _CLIENT_ERRORS as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            for item in batch:  # one question's problem must not fail the others: run each alone
                await self._run(orch, [item], budget)
        except Exception as exc:  # delivered to every waiting request; each handler maps it to a status
            _settle(batch, exc)
        else:
            by_id = {r.id: r for r in results}
            for q, fut in batch:
                if not fut.done():
                    fut.set_result(by_id[q.id])


def _settle(batch: list[tuple[Question, asyncio.Future]], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


def last_user_message(messages: list[ChatMessage]) -> str:
    """The text of the last ``user`` message (the question); earlier turns are not used."""
    for msg in reversed(messages):
        if msg.role == "user":
            content = msg.content
            if isinstance(content, list):  # OpenAI content parts: keep the text ones
                content = "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
            return content or ""
    raise InputError("the request has no message with role 'user'",
                     hint='put the question in {"role": "user", "content": "..."}')


def chat_completion(result: Result, *, request_id: str, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object for ``result``, with the trace under ``expertmix``.

    ``usage.completion_tokens`` counts the experts' generated tokens; prompt tokens are not tracked.
    """
    completion_tokens = sum(a.completion_tokens for a in result.trace.answers)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 0, "completion_tokens": completion_tokens, "total_tokens": completion_tokens},
        "expertmix": result.model_dump(mode="json", exclude={"answer"}),
    }


def readiness(orch: Orchestrator) -> dict[str, Any]:
    """Whether the gateway can take requests: always for local engines (they load on first use);
    with the fleet, Redis must answer. Models without a live worker are listed, not fatal."""
    body: dict[str, Any] = {"ready": True, "executor": orch.executor, "default_pipeline": orch.pipeline.name}
    if orch.executor != "celery":
        body["resident_models"] = _resident(orch)
        return body
    from workers.fleet import live_workers

    store, settings = getattr(orch.dispatcher, "store", None), getattr(orch.dispatcher, "settings", None)
    if store is None or settings is None:  # a custom fleet dispatcher: nothing more to probe
        return body
    ttl = settings.worker_ttl_s
    try:
        store.r.ping()
        body["models_without_worker"] = [m for m in sorted(orch.registry.models) if not live_workers(store, m, ttl_s=ttl)]
    except Exception as exc:  # any Redis failure means "not ready"; the probe reports why
        body.update(ready=False, reason=f"Redis is unreachable: {type(exc).__name__}: {exc}")
    return body


def _resident(orch: Orchestrator) -> list[str]:
    pool = getattr(orch.dispatcher, "pool", None)
    return sorted(pool.resident()) if pool is not None else []


# ---- errors --------------------------------------------------------------------------------------
_CLIENT_ERRORS = (InputError, ConfigError, BudgetError)  # ConfigError covers UnknownNameError


def status_of(exc: ExpertmixError) -> int:
    """HTTP status for an expertmix error: the client's fault 400, no live worker 503, else 500."""
    if isinstance(exc, _CLIENT_ERRORS):
        return 400
    if isinstance(exc, DispatchError):
        return 503
    return 500


def error_body(message: str, status: int, exc: BaseException | None = None) -> dict[str, Any]:
    """OpenAI-style ``{"error": {"message", "type", "code"}}``."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            413: "invalid_request_error", 503: "service_unavailable_error"}.get(status, "server_error")
    codes = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
             413: "request_too_large"}
    code = _snake(type(exc).__name__) if exc is not None else codes.get(status, str(status))
    return {"error": {"message": message, "type": kind, "code": code}}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ExpertmixError)
    async def on_expertmix(request: Request, exc: ExpertmixError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return JSONResponse(error_body(str(exc), status, exc), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                             for e in exc.errors())
        message = f"invalid request: {problems} (fix: send JSON like " \
                  '{"model": "expertmix", "messages": [{"role": "user", "content": "..."}]})'
        return JSONResponse(error_body(message, 400), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(message, exc.status_code), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the ASGI server logs the traceback (Starlette re-raises after this response is sent)
        log.error("unexpected %s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        message = f"internal error ({type(exc).__name__}); the gateway log has the traceback"
        return JSONResponse(error_body(message, 500, exc), status_code=500)


# ---- ASGI middleware -----------------------------------------------------------------------------
class _BodyLimitMiddleware:
    """Rejects bodies over ``max_bytes`` with 413, by Content-Length or while reading a chunked body."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._reject(scope, receive, send)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict, receive: Callable, send: Callable) -> None:
        message = (f"request body is larger than {self.max_bytes} bytes "
                   f"(fix: send one question of at most a few thousand characters per request)")
        await JSONResponse(error_body(message, 413), status_code=413)(scope, receive, send)


class _ApiKeyMiddleware:
    """When a key is configured, ``/v1/*`` requires ``Authorization: Bearer <key>`` (probes stay open)."""

    def __init__(self, app: Any, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.key is None or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode()):
            return await self.app(scope, receive, send)
        message = f"missing or wrong API key (fix: send `Authorization: Bearer <key>`, the key in ${API_KEY_ENV})"
        await JSONResponse(error_body(message, 401), status_code=401)(scope, receive, send)
