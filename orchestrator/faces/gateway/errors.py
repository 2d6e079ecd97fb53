"""Errors over HTTP: expertmix errors -> statuses and OpenAI-style bodies, and an OpenAPI
document that declares every status the gateway returns (validation errors are 400 with the
OpenAI error body, never FastAPI's 422)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import (
    BudgetError,
    ConfigError,
    DispatchError,
    ExpertmixError,
    InputError,
    OverloadedError,
)

log = logging.getLogger("orchestrator.gateway")

CLIENT_ERRORS = (InputError, ConfigError, BudgetError)  # ConfigError covers UnknownNameError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 503: "service_unavailable_error"}
_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
          408: "request_timeout", 413: "request_too_large", 429: "queue_full", 500: "server_error",
          503: "service_unavailable"}
_WHEN = {400: "The request is malformed or cannot be honoured (the message names the field and the fix).",
         401: "An API key is configured and the bearer token is missing or wrong.",
         404: "No such route or object.",
         405: "The route exists but not with this method.",
         408: "The request body did not arrive in time.",
         413: "The request body is too large.",
         429: "The gateway's queue is full; retry after `Retry-After` seconds.",
         500: "A backend failed, or the gateway's own configuration is wrong.",
         503: "No live worker for a needed model, or the connection limit is reached."}


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error body: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorDetail


def status_of(exc: ExpertmixError) -> int:
    """HTTP status for an expertmix error: the client's fault 400, overload 429, no live worker 503, else 500."""
    if isinstance(exc, OverloadedError):
        return 429
    if isinstance(exc, CLIENT_ERRORS):
        return 400
    if isinstance(exc, DispatchError):
        return 503
    return 500


def error_body(message: str, status: int, exc: BaseException | None = None, *, param: str | None = None) -> dict[str, Any]:
    """OpenAI-style ``{"error": {"message", "type", "code", "param"}}``."""
    code = _snake(type(exc).__name__) if exc is not None else _CODES.get(status, str(status))
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "code": code,
                      "param": param or getattr(exc, "param", None)}}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OpenAI error body with the right status."""

    @app.exception_handler(ExpertmixError)
    async def on_expertmix(request: Request, exc: ExpertmixError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("[%s] %s %s -> %d: %s", _rid(request), request.method, request.url.path, status, exc)
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, OverloadedError) else None
        return JSONResponse(error_body(str(exc), status, exc), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        fields = [".".join(str(p) for p in e["loc"] if p != "body") or "body" for e in errors]
        problems = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, errors))
        message = f"invalid request: {problems} (fix: send JSON like " \
                  '{"model": "expertmix", "messages": [{"role": "user", "content": "..."}]})'
        return JSONResponse(error_body(message, 400, param=fields[0] if fields else None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(message, exc.status_code), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the ASGI server logs the traceback (Starlette re-raises after this response is sent)
        log.error("[%s] unexpected %s on %s %s: %s", _rid(request), type(exc).__name__, request.method,
                  request.url.path, exc)
        message = f"internal error ({type(exc).__name__}); the gateway log has the traceback"
        return JSONResponse(error_body(message, 500, exc), status_code=500)


def _rid(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "-")


def honest_openapi(app: FastAPI, statuses: dict[tuple[str, str], list[int]]) -> None:
    """Replace FastAPI's document: no 422; every operation lists the error statuses it can return
    (``statuses[(method, path)]``), each with the OpenAI error schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas["ErrorDetail"] = ErrorDetail.model_json_schema()
        schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas["ErrorResponse"].pop("$defs", None)
        for path, ops in doc.get("paths", {}).items():
            for method, op in ops.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for status in statuses.get((method.upper(), path), []):
                    responses[str(status)] = _error_response(status)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _WHEN[status], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                               "schema": {"type": "integer"}}}
    return response
