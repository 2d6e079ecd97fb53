"""The gateway app: routes, the chat service, and the per-pipeline orchestrators."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic_core import to_json

from orchestrator.core import Question, Result, check_question
from orchestrator.errors import BackendError, ConfigError, ExpertmixError, InputError, UnknownNameError
from orchestrator.faces.gateway import streaming
from orchestrator.faces.gateway.batches import (
    BATCH_ROUTES,
    MAX_FILE_BYTES,
    BatchRunner,
    BatchStore,
    add_batch_routes,
    default_batch_dir,
)
from orchestrator.faces.gateway.errors import add_error_handlers, error_body, honest_openapi
from orchestrator.faces.gateway.http import GatewayMiddleware
from orchestrator.faces.gateway.metrics import GatewayMetrics
from orchestrator.faces.gateway.runs import Admission, LocalRuns
from orchestrator.faces.gateway.schema import (
    DEFAULT_MODEL_ALIAS,
    EXPERT_PREFIX,
    ChatCompletionRequest,
    chat_completion,
    check_messages,
    conversation,
)
from orchestrator.faces.sdk import DEFAULT_PIPELINE, Orchestrator
from orchestrator.pipeline import Pipeline, builtin_pipelines

log = logging.getLogger("orchestrator.gateway")

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_BATCH = 32  # questions merged into one local run
DEFAULT_MAX_QUEUE = 128  # requests waiting or running; beyond it 429
BODY_TIMEOUT_S = 10.0
API_KEY_ENV = "EXPERTMIX_GATEWAY_API_KEY"  # one key
API_KEYS_ENV = "EXPERTMIX_GATEWAY_API_KEYS"  # several, comma-separated
API_KEYS_FILE_ENV = "EXPERTMIX_GATEWAY_API_KEYS_FILE"  # a file, one key per line
_SHOWN_NAME_CHARS = 64

OrchestratorFactory = Callable[[str], Orchestrator]


def api_keys_from_env(env: dict[str, str] | None = None) -> list[str]:
    """The accepted API keys: ``$EXPERTMIX_GATEWAY_API_KEY``, ``$EXPERTMIX_GATEWAY_API_KEYS``
    (comma-separated) and the lines of ``$EXPERTMIX_GATEWAY_API_KEYS_FILE`` (``#`` comments skipped)."""
    env = os.environ if env is None else env
    keys = [env.get(API_KEY_ENV, "")] + env.get(API_KEYS_ENV, "").split(",")
    if env.get(API_KEYS_FILE_ENV):
        path = Path(env[API_KEYS_FILE_ENV])
        try:
            keys += path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"${API_KEYS_FILE_ENV} = {path}: cannot read the key file ({type(exc).__name__})",
                              hint="point it at a UTF-8 text file with one key per line") from None
    return [k.strip() for k in keys if k.strip() and not k.strip().startswith("#")]


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
        """The pipeline name a request's ``model`` means; unknown names list the choices.

        ``expert/NAME`` is one expert of the registry, asked directly (no routing, no fusion).
        """
        name = self.default if model == DEFAULT_MODEL_ALIAS else model
        if name in self.names:
            return name
        if name.startswith(EXPERT_PREFIX) and name[len(EXPERT_PREFIX):] in self.experts():
            return name
        shown = model if len(model) <= _SHOWN_NAME_CHARS else f"{model[:_SHOWN_NAME_CHARS]}... ({len(model)} characters)"
        raise UnknownNameError("pipeline", shown, [DEFAULT_MODEL_ALIAS, *self.names, f"{EXPERT_PREFIX}<expert>"],
                               where="the request's `model` (GET /v1/models lists them)")

    def experts(self) -> list[str]:
        """The registry's expert names (``model: expert/NAME``)."""
        return sorted(self.first().registry.experts)

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

    def cached(self, name: str) -> Orchestrator | None:
        """The orchestrator for ``name`` if it is built already (no lock, no thread hop)."""
        return self._cache.get(name)

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
    """An orchestrator for another built-in pipeline (or ``expert/NAME``) sharing ``base``'s
    registry and dispatcher."""
    pipeline = single_expert(name[len(EXPERT_PREFIX):]) if name.startswith(EXPERT_PREFIX) else Pipeline.load(name)
    return Orchestrator(base.registry, pipeline, executor=base.executor, dispatcher=base.dispatcher, seed=base.seed)


def single_expert(expert: str) -> Pipeline:
    """``expert/NAME``: the question goes to that expert alone and its answer is the reply."""
    return Pipeline.from_dict({
        "name": f"{EXPERT_PREFIX}{expert}",
        "description": f"The expert {expert!r} alone: no routing, its answer unchanged.",
        "nodes": [{"name": "input", "type": "input"},
                  {"name": "router", "type": "router", "params": {"router": "fixed", "experts": [expert]}},
                  {"name": "experts", "type": "experts"},
                  {"name": "answer", "type": "aggregator", "params": {"aggregator": "synthesis", "answer_type": "text"}},
                  {"name": "output", "type": "output"}],
        "edges": [{"from": "input.questions", "to": "router.questions"},
                  {"from": "input.questions", "to": "experts.questions"},
                  {"from": "router.decisions", "to": "experts.decisions"},
                  {"from": "input.questions", "to": "answer.questions"},
                  {"from": "experts.answers", "to": "answer.answers"},
                  {"from": "answer.final", "to": "output.final"}],
    })


# ---- the chat service ----------------------------------------------------------------------------
class ChatService:
    """The body of ``POST /v1/chat/completions``: admission, question out of the messages, the run,
    the answer in OpenAI shape."""

    def __init__(self, orchestrators: PipelineOrchestrators, *, max_batch: int, max_queue: int) -> None:
        self.orchestrators = orchestrators
        self.admission = Admission(max_queue)
        self.local = LocalRuns(max_batch)

    async def complete(self, req: ChatCompletionRequest, *, request_id: str) -> dict[str, Any]:
        """The ``chat.completion`` answer to ``req``: ``n`` choices, each its own run (seed + i)."""
        if req.n == 1:
            result, name = await self.answer(req, request_id=request_id)
            return chat_completion(result, request_id=result.id, model=name)
        self.check(req)  # a bad request fails once, not n times
        seed = req.seed if req.seed is not None else 0
        copies = [req.model_copy(update={"seed": seed + i, "n": 1}) for i in range(req.n)]
        answered = await asyncio.gather(*(self.answer(c, request_id=request_id) for c in copies))
        return chat_completion([r for r, _ in answered], request_id=answered[0][0].id, model=answered[0][1])

    def check(self, req: ChatCompletionRequest) -> tuple[Question, str]:
        """Everything that makes ``req`` a 400, before anything is queued: its question and pipeline."""
        req.check_honourable()
        check_messages(req.messages)
        text, context = conversation(req.messages)
        qid = f"chatcmpl-{os.urandom(12).hex()}"  # uuid4's 96 random bits at a fraction of its cost
        question = Question(id=qid, text=check_question(text, where=f"messages.{len(req.messages) - 1}.content"),
                            context=context)
        return question, self.orchestrators.resolve(req.model)

    async def answer(self, req: ChatCompletionRequest, *, request_id: str, stream: Any = None) -> tuple[Result, str]:
        """Run ``req`` (admitted to the bounded queue) and return its result and the pipeline's name.

        ``stream`` (an ``orchestrator.streaming.TokenStream``) receives the answer's text as it is made.
        """
        if req.stream and stream is None:
            raise InputError("streaming is not supported by the expertmix gateway",
                             hint="send the request with stream=false (the default)")
        question, name = self.check(req)
        sampling, budget = req.sampling(), req.expertmix_budget
        started = self.admission.enter()  # 429 beyond the queue limit
        try:
            orch = self.orchestrators.cached(name) or await asyncio.to_thread(self.orchestrators.get, name)
            if orch.executor == "local":
                result = await self.local.ask(orch, question, budget, sampling=sampling, stream=stream)
            else:  # the fleet takes concurrent runs; its workers coalesce them into batches
                extra = {"stream": stream} if stream is not None else {}
                (result,) = await orch.arun([question], budget=budget, sampling=sampling, **extra)
        except BackendError as exc:  # the log line and the client both get the request id
            raise BackendError(f"request {request_id}: {exc.message}", hint=exc.hint) from exc
        finally:
            self.admission.leave(started)
        if result.status == "error":
            raise _result_error(result, name, request_id)
        return result, name


def _result_error(result: Result, name: str, request_id: str) -> ExpertmixError:
    kind = getattr(result, "error_type", None)
    cls = InputError if kind == "input_error" else BackendError
    return cls(f"pipeline {name!r} failed on request {request_id}: {result.error}")


async def _until_disconnect(request: Request) -> None:
    """Returns when the client hangs up (the body was read already, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---- the app -----------------------------------------------------------------------------------
_V1 = [400, 401, 405, 408, 413, 500, 503]
STATUSES = {("POST", "/v1/chat/completions"): [*_V1, 429], ("GET", "/v1/models"): _V1,
            ("GET", "/healthz"): [405, 408, 413, 500, 503], ("GET", "/readyz"): [405, 408, 413, 500, 503],
            ("GET", "/metrics"): [405, 408, 413, 500, 503],
            **{route: [400, 401, 404, 405, 408, 413, 500, 503] for route in BATCH_ROUTES}}


def create_app(source: Orchestrator | OrchestratorFactory, *, default_pipeline: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
               max_queue: int = DEFAULT_MAX_QUEUE, body_timeout_s: float = BODY_TIMEOUT_S,
               api_keys: list[str] | None = None, batch_dir: Path | str | None = None) -> FastAPI:
    """The gateway app over an orchestrator (its siblings share its engines) or a factory.

    ``source`` is either a ready :class:`Orchestrator` (its pipeline is the default; other
    built-in pipelines reuse its registry and dispatcher) or ``factory(pipeline_name)`` returning
    one (``default_pipeline`` names the default then). Engines are released at shutdown.
    With local engines, concurrent requests are merged into runs of up to ``max_batch`` questions;
    at most ``max_queue`` requests wait or run at once (429 beyond). ``api_keys`` defaults to
    :func:`api_keys_from_env`; no keys means an open gateway. Batch jobs live under ``batch_dir``
    (default :func:`~orchestrator.faces.gateway.batches.default_batch_dir`).
    """
    orchestrators = PipelineOrchestrators(source, default_pipeline=default_pipeline)
    service = ChatService(orchestrators, max_batch=max_batch, max_queue=max_queue)
    metrics = GatewayMetrics(dispatcher=lambda: orchestrators.first().dispatcher,
                             queue_depth=lambda: service.local.waiting)
    batches = BatchRunner(BatchStore(Path(batch_dir) if batch_dir else default_batch_dir()), service.complete,
                          observer=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batches.resume()  # batches a previous gateway left unfinished go on
        yield
        await batches.stop()
        await asyncio.to_thread(orchestrators.close)

    app = FastAPI(title="expertmix gateway", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions over expertmix pipelines.")
    app.state.orchestrators = orchestrators
    app.state.chat = service
    add_error_handlers(app)
    honest_openapi(app, STATUSES)
    keys = api_keys_from_env() if api_keys is None else api_keys
    # metrics, request id, API keys (before reading bodies), body limit: one middleware (http.py)
    app.add_middleware(GatewayMiddleware, metrics=metrics, keys=keys, max_bytes=max_body_bytes,
                       body_timeout_s=body_timeout_s, error_body=error_body,
                       env_hint=f"${API_KEY_ENV}, ${API_KEYS_ENV} or ${API_KEYS_FILE_ENV}",
                       path_limits={"/v1/files": MAX_FILE_BYTES + 64 * 1024})  # the file plus its form fields
    app.state.metrics = metrics

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        request_id = request.scope.get("state", {}).get("request_id", "-")
        if req.stream:  # server-sent chunks (streaming.py)
            return await streaming.respond(partial(service.answer, request_id=request_id), chat_completion, req,
                                           request, model=orchestrators.resolve(req.model), observer=metrics)
        work = asyncio.ensure_future(service.complete(req, request_id=request_id))
        gone = asyncio.ensure_future(_until_disconnect(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server cancelled this request (shutdown, lost connection)
            work.cancel()
            raise
        finally:
            gone.cancel()
        if not work.done():  # the client hung up: drop its request (off the queue if its run has not started)
            work.cancel()
            log.info("[%s] client disconnected; request dropped", request_id)
            return Response(status_code=499)
        body = work.result()
        metrics.answered(body)
        # bytes straight out (pydantic-core's JSON), not through FastAPI's response field and JSONResponse
        return Response(to_json(body), media_type="application/json")

    add_batch_routes(app, batches)  # /v1/files, /v1/batches (batches.py)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:  # Prometheus text format (metrics.py)
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        names = [DEFAULT_MODEL_ALIAS, *orchestrators.names]
        experts = [f"{EXPERT_PREFIX}{e}" for e in await asyncio.to_thread(orchestrators.experts)]
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "expertmix",
             "pipeline": orchestrators.default if n == DEFAULT_MODEL_ALIAS else n} for n in [*names, *experts]]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = await asyncio.to_thread(readiness, orchestrators.first())
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    return app


def readiness(orch: Orchestrator) -> dict[str, Any]:
    """Whether the gateway can take requests: always for local engines (they load on first use);
    with the fleet, Redis must answer. Models without a live worker are listed, not fatal."""
    body: dict[str, Any] = {"ready": True, "executor": orch.executor, "default_pipeline": orch.pipeline.name}
    if orch.executor != "celery":
        pool = getattr(orch.dispatcher, "pool", None)
        body["resident_models"] = sorted(pool.resident()) if pool is not None else []
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
