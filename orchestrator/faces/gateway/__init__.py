"""An OpenAI-compatible REST gateway over the SDK (``expertmix serve``).

The HTTP routes are thin adapters: each one parses the request, calls the orchestrator and
shapes the answer; no domain code imports FastAPI. The request's ``model`` names a pipeline
(``symbolic-moe``, ``coe``, ``ensemble-vote``, or ``expertmix`` for the gateway's default one).
One orchestrator per pipeline is created on first use and reused; all of them share the first
one's dispatcher, so each model's engine (or the Celery fleet connection) is loaded once.

Where a request goes, module by module: :mod:`.http` (request id, API keys, body limits and
timeouts; the guarded uvicorn protocol), :mod:`.schema` (the request is parsed and every message
checked: a 400 before anything is queued), :mod:`.app` (routes; admission to the bounded queue,
429 beyond it), :mod:`.runs` (concurrent requests merged into runs on the local engines; a
failed merged run split so a poisoned question fails alone), :mod:`.errors` (statuses, OpenAI
error bodies, the OpenAPI document), :mod:`.streaming` (``stream: true``: server-sent chunks),
:mod:`.metrics` (``GET /metrics``, Prometheus), :mod:`.batches` (``/v1/files``, ``/v1/batches``:
batch jobs kept on disk across restarts).

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

from orchestrator.faces.gateway.app import (
    API_KEY_ENV,
    API_KEYS_ENV,
    API_KEYS_FILE_ENV,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    MAX_BODY_BYTES,
    PipelineOrchestrators,
    api_keys_from_env,
    create_app,
    readiness,
)
from orchestrator.faces.gateway.errors import error_body, status_of
from orchestrator.faces.gateway.http import guarded_protocol
from orchestrator.faces.gateway.schema import DEFAULT_MODEL_ALIAS, chat_completion, last_user_message

__all__ = [
    "API_KEY_ENV", "API_KEYS_ENV", "API_KEYS_FILE_ENV", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_QUEUE",
    "DEFAULT_MODEL_ALIAS", "MAX_BODY_BYTES", "PipelineOrchestrators", "api_keys_from_env", "chat_completion",
    "create_app", "error_body", "guarded_protocol", "last_user_message", "readiness", "status_of",
]
