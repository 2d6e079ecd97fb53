"""HTTP plumbing of the gateway: ASGI middleware and the uvicorn protocol it runs on.

- :class:`BodyLimit`: 413 beyond ``max_bytes`` (by Content-Length or while reading), 408 when
  the client sends its body slower than ``body_timeout_s`` per read.
- :class:`ApiKeys`: ``/v1/*`` needs ``Authorization: Bearer <key>`` for one of the configured keys
  (compared in constant time over UTF-8 bytes); two ``Authorization`` headers are refused.
- :class:`RequestId`: every response carries ``x-request-id`` (the client's, when it sent a
  sane one), and the id is on ``scope["state"]`` for the routes and the logs.
- :func:`guarded_protocol`: uvicorn's h11 protocol with a header read timeout and a connection
  limit, so half-sent requests and connection floods cannot hold the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger("orchestrator.gateway")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


async def send_error(send: Callable, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """Send a complete JSON error response from ASGI middleware."""
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """Reads the whole body up front: 413 over ``max_bytes``, 408 if a read stalls ``body_timeout_s``."""

    def __init__(self, app: Any, *, max_bytes: int, body_timeout_s: float, error_body: Callable,
                 path_limits: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.timeout_s, self.error_body = app, max_bytes, body_timeout_s, error_body
        self.path_limits = path_limits or {}  # e.g. batch file uploads get more than a chat request

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._too_large(send, limit)
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                message = f"the request body did not arrive within {self.timeout_s:g} s of the last bytes " \
                          "(fix: send the whole body at once)"
                return await send_error(send, 408, self.error_body(message, 408), {"connection": "close"})
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._too_large(send, limit)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Callable, limit: int) -> None:
        fix = ("split the batch file into several" if limit != self.max_bytes
               else "send one conversation of at most a few thousand characters per request")
        message = f"request body is larger than {limit} bytes (fix: {fix})"
        await send_error(send, 413, self.error_body(message, 413), {"connection": "close"})


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class ApiKeys:
    """When keys are configured, ``/v1/*`` requires ``Authorization: Bearer <one of them>``.

    Keys are kept only as SHA-256 digests and every one is compared (constant time, no early
    exit), so neither the key nor which key matched leaks through timing or logs.
    """

    def __init__(self, app: Any, *, keys: list[str], error_body: Callable, env_hint: str) -> None:
        self.app, self.error_body, self.env_hint = app, error_body, env_hint
        self._digests = [_digest(f"Bearer {k}".encode("utf-8")) for k in keys]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not self._digests or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(given) > 1:  # a proxy may have checked the other one: never guess which counts
            message = "the request has more than one Authorization header (fix: send exactly one)"
            return await send_error(send, 400, self.error_body(message, 400))
        digest = _digest(given[0]) if given else b""
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest or b"\0" * 32, known)
        if matched:
            return await self.app(scope, receive, send)
        message = f"missing or wrong API key (fix: send `Authorization: Bearer <key>` with a key from {self.env_hint})"
        await send_error(send, 401, self.error_body(message, 401), {"www-authenticate": "Bearer"})


class RequestId:
    """Puts a request id on ``scope["state"]["request_id"]`` and the ``x-request-id`` response header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _SANE_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def tagged(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, tagged)


def guarded_protocol(*, header_timeout_s: float, max_connections: int) -> type:
    """uvicorn's h11 protocol with a header read timeout and a connection limit.

    uvicorn closes idle keep-alive connections but not ones that send a request's headers slowly
    (each byte resets its keep-alive timer), and its own ``limit_concurrency`` answers in plain
    text. Here a connection whose request headers are not complete ``header_timeout_s`` after it
    opened (or after its previous response) is closed, and connections beyond ``max_connections``
    get an OpenAI-style 503 and are closed before anything is read.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    overload = json.dumps({"error": {"message": f"the gateway holds its limit of {max_connections} connections "
                                                "(fix: retry shortly or reuse connections)",
                                     "type": "service_unavailable_error", "code": "too_many_connections"}}).encode()

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
                                + str(len(overload)).encode() + b"\r\n\r\n" + overload)
                transport.close()
                return
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            old = getattr(self, "_header_timer", None)
            if old is not None:
                old.cancel()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow, self.cycle)

        def _headers_too_slow(self, cycle_then: Any) -> None:
            # No new request started since the timer was armed: its headers are still incomplete.
            if self.cycle is cycle_then and not self.transport.is_closing():
                log.info("closing a connection whose request headers took over %.0f s", header_timeout_s)
                self.transport.close()

    return GuardedH11Protocol
