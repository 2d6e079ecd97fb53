"""HTTP plumbing of the gateway: one ASGI middleware and the uvicorn protocol it runs on.

:class:`GatewayMiddleware` does, for every HTTP request, in this order (one wrapper and one
``send`` hook per request rather than four of each; the gateway's added latency is measured in
docs/benchmarks.md):

- metrics: in-flight gauge, count by route and status, duration to the last byte sent (refused
  requests are counted too);
- request id: on ``scope["state"]["request_id"]`` for the routes and the logs, and in the
  ``x-request-id`` response header (the client's, when it sent a sane one);
- API keys: ``/v1/*`` needs ``Authorization: Bearer <key>`` for one of the configured keys
  (compared in constant time over UTF-8 bytes); two ``Authorization`` headers are refused;
- body limit: the whole body is read up front, 413 beyond ``max_bytes`` (by Content-Length or
  while reading), 408 when the client sends its body slower than ``body_timeout_s`` per read.

:func:`guarded_protocol`: uvicorn's HTTP protocol (httptools when installed, else h11) with a
header read timeout and a connection limit, so half-sent requests and connection floods cannot
hold the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
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


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class GatewayMiddleware:
    """Metrics, request id, API keys and the body limit of every HTTP request, in one pass.

    Keys are kept only as SHA-256 digests and every one is compared (constant time, no early
    exit), so neither the key nor which key matched leaks through timing or logs. ``metrics``
    needs ``in_flight`` (a gauge) and ``finished(route, status, seconds)``; ``path_limits``
    gives some paths a larger body limit (batch file uploads).

    Example::

        app.add_middleware(GatewayMiddleware, metrics=metrics, keys=["sk-1"], max_bytes=1 << 20,
                           body_timeout_s=10.0, error_body=error_body, env_hint="$EXPERTMIX_GATEWAY_API_KEYS")
    """

    def __init__(self, app: Any, *, metrics: Any, keys: list[str], max_bytes: int, body_timeout_s: float,
                 error_body: Callable, env_hint: str, path_limits: dict[str, int] | None = None) -> None:
        self.app, self.metrics, self.error_body, self.env_hint = app, metrics, error_body, env_hint
        self.max_bytes, self.timeout_s = max_bytes, body_timeout_s
        self.path_limits = path_limits or {}
        self._digests = [_digest(f"Bearer {k}".encode("utf-8")) for k in keys]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        sent_id, length, auth = "", b"", []
        for name, value in scope["headers"]:  # one pass; a repeated header: the last one counts
            if name == b"x-request-id":
                sent_id = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"authorization":
                auth.append(value)
        request_id = sent_id if _SANE_ID.match(sent_id) else os.urandom(16).hex()  # 32 hex digits, as uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        tag, status = (b"x-request-id", request_id.encode()), 500

        async def reply(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), tag]}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if self._authorised(scope, auth):
                await self._with_body(scope, receive, reply, length)
            else:
                await self._refuse(reply, auth)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.finished(route, status, time.perf_counter() - started)

    # ---- API keys ----------------------------------------------------------------------------------
    def _authorised(self, scope: dict, given: list[bytes]) -> bool:
        if not self._digests or not scope["path"].startswith("/v1/"):
            return True
        if len(given) != 1:
            return False
        digest, matched = _digest(given[0]), False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched

    async def _refuse(self, send: Callable, given: list[bytes]) -> None:
        if len(given) > 1:  # a proxy may have checked the other one: never guess which counts
            message = "the request has more than one Authorization header (fix: send exactly one)"
            return await send_error(send, 400, self.error_body(message, 400))
        message = f"missing or wrong API key (fix: send `Authorization: Bearer <key>` with a key from {self.env_hint})"
        await send_error(send, 401, self.error_body(message, 401), {"www-authenticate": "Bearer"})

    # ---- body limit --------------------------------------------------------------------------------
    async def _with_body(self, scope: dict, receive: Callable, send: Callable, declared: bytes) -> None:
        """Read the whole body (413 over the limit, 408 on a stalled read), then run the app on it."""
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        if declared.isdigit() and int(declared) > limit:
            return await self._too_large(send, limit)
        chunks, size, more = [], 0, True
        while more:
            try:
                async with asyncio.timeout(self.timeout_s):
                    message = await receive()
            except TimeoutError:
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
        body, replayed = chunks[0] if len(chunks) == 1 else b"".join(chunks), False

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


MAX_HEADER_BYTES = 16 * 1024  # h11's default limit on an incomplete request head, kept with httptools


def guarded_protocol(*, header_timeout_s: float, max_connections: int, parser: str = "auto") -> type:
    """uvicorn's HTTP protocol with a header read timeout, a header size limit and a connection limit.

    ``parser``: ``httptools`` (uvicorn's C parser, a fraction of h11's CPU time per request),
    ``h11`` (pure Python), or ``auto`` (httptools when it is installed). uvicorn closes idle
    keep-alive connections but not ones that send a request's headers slowly (each byte resets
    its keep-alive timer), and its own ``limit_concurrency`` answers in plain text. Here a
    connection whose request headers are not complete ``header_timeout_s`` after it opened (or
    after its previous response) is closed, headers over ``MAX_HEADER_BYTES`` get a 431 and the
    connection is closed (h11 enforces that limit itself), and connections beyond
    ``max_connections`` get an OpenAI-style 503 and are closed before anything is read.
    """
    base, c_parser = _protocol_base(parser)
    overload = json.dumps({"error": {"message": f"the gateway holds its limit of {max_connections} connections "
                                                "(fix: retry shortly or reuse connections)",
                                     "type": "service_unavailable_error", "code": "too_many_connections"}}).encode()
    too_large = json.dumps({"error": {"message": f"the request headers are larger than {MAX_HEADER_BYTES} bytes "
                                                 "(fix: send fewer or shorter headers)",
                                      "type": "invalid_request_error", "code": "headers_too_large"}}).encode()

    class GuardedProtocol(base):
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

        if c_parser:  # llhttp has no size limit on a request head: count its bytes here
            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._head_bytes = 0

            def on_headers_complete(self) -> None:
                self._head_bytes = None
                super().on_headers_complete()

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                if getattr(self, "_head_bytes", None) is None or self.transport.is_closing():
                    return
                self._head_bytes += len(data)  # the chunk ended inside a request head
                if self._head_bytes > MAX_HEADER_BYTES:
                    log.info("closing a connection whose request headers passed %d bytes", MAX_HEADER_BYTES)
                    self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                         b"content-type: application/json\r\nconnection: close\r\n"
                                         b"content-length: " + str(len(too_large)).encode() + b"\r\n\r\n"
                                         + too_large)
                    self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def _protocol_base(parser: str) -> tuple[type, bool]:
    """(uvicorn's protocol class for ``parser``, whether it is the C parser)."""
    if parser not in ("auto", "httptools", "h11"):
        raise ValueError(f"parser must be auto, httptools or h11, not {parser!r}")
    if parser != "h11":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            if parser == "httptools":
                raise
        else:
            return HttpToolsProtocol, True
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol, False
