"""Server-sent events for ``POST /v1/chat/completions`` with ``stream: true`` (OpenAI chunk format).

The run is the same one a non-streamed request gets (the chat service's ``answer``), with a
:class:`RequestStream` on it (see :mod:`orchestrator.streaming` for which node's tokens stream).
What the client receives, in order:

1. one chunk with ``delta: {"role": "assistant", "content": ""}`` and, under ``expertmix``, the
   routing decision (sent as soon as the router decided; without a router, with the first text);
2. ``delta: {"content": ...}`` chunks as the final node generates them; a non-generating
   aggregator (``vote``) sends its whole answer in one chunk when the run ends;
3. a chunk with ``finish_reason`` and the full ``expertmix`` trace (as the non-streamed answer has);
4. with ``stream_options: {"include_usage": true}``, a chunk with ``choices: []`` and ``usage``;
5. ``data: [DONE]``.

Errors found before the first chunk (bad request, unknown model, queue full, a failed run) are
ordinary JSON error responses with their status; after it, an ``{"error": {...}}`` event and
``[DONE]``. A client that hangs up cancels its question: requests not yet sent are skipped and
streaming generations of its question are aborted; questions merged into the same run go on.

The content equals the non-streamed answer: answers are stripped, so leading whitespace is never
sent and trailing whitespace is held back until more text follows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from orchestrator.core import RoutingDecision
from orchestrator.errors import ExpertmixError, InputError
from orchestrator.faces.gateway.schema import finish_reason

log = logging.getLogger("orchestrator.gateway")

_TEXT, _ROUTED, _DONE = "text", "routed", "done"


class RequestStream:
    """The :class:`~orchestrator.streaming.TokenStream` of one HTTP request.

    The run's thread calls :meth:`update` / :meth:`routed`; the request's event loop reads
    :meth:`next_event`. Only the latest text is kept (updates are cumulative), so a slow client
    never makes events pile up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._lock = threading.Lock()
        self._text = ""
        self._text_pending = False
        self._gone = threading.Event()
        self.decision: RoutingDecision | None = None
        self.question_id: str | None = None  # the completion id (the run's question id), once seen

    # ---- called from the run's thread ------------------------------------------------------------
    def update(self, question_id: str, text: str) -> None:
        self.question_id = question_id
        with self._lock:
            self._text = text
            if self._text_pending:
                return
            self._text_pending = True
        self._push(_TEXT)

    def routed(self, decision: RoutingDecision) -> None:
        self.question_id, self.decision = decision.question_id, decision
        self._push(_ROUTED)

    def cancelled(self, question_id: str) -> bool:
        return self._gone.is_set()

    # ---- called from the event loop --------------------------------------------------------------
    def cancel(self) -> None:
        self._gone.set()

    def done(self) -> None:
        self._push(_DONE)

    async def next_event(self) -> str:
        return await self._events.get()

    def text(self) -> str:
        with self._lock:
            self._text_pending = False
            return self._text

    def _push(self, event: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the request is gone
            pass


class AnswerText:
    """What of a growing answer may be sent, given that the final answer is stripped.

    >>> a = AnswerText(); [a.delta(t) for t in ["  Hel", "  Hello ", "  Hello world"]]
    ['Hel', 'lo', ' world']
    >>> a.finish("Hello world!")
    '!'
    """

    def __init__(self) -> None:
        self.sent = ""
        self.diverged = False

    def delta(self, text: str) -> str:
        visible = text.strip()
        if not visible.startswith(self.sent):  # a regenerated text that differs (sampling): stop here
            self.diverged = True
            return ""
        new, self.sent = visible[len(self.sent):], visible
        return new

    def finish(self, answer: str) -> str:
        """The rest of the final answer; '' and ``diverged`` when what was sent is not its prefix."""
        if not answer.startswith(self.sent):
            self.diverged = True
            return ""
        rest, self.sent = answer[len(self.sent):], answer
        return rest


def stream_options(req: Any) -> bool:
    """``include_usage`` from the request's ``stream_options`` (400 on a malformed value)."""
    extra = getattr(req, "model_extra", None) or {}
    opts = getattr(req, "stream_options", None) or extra.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
        raise InputError("`stream_options` must be an object like {\"include_usage\": true}",
                         hint="send stream_options: {\"include_usage\": true} or leave it out")
    if not getattr(req, "stream", False):
        raise InputError("`stream_options` is only allowed with stream: true",
                         hint="remove stream_options or set stream: true")
    return bool(opts.get("include_usage", False))


AnswerFn = Callable[..., Any]  # async (req, *, stream) -> (Result, pipeline name)
ShapeFn = Callable[..., dict[str, Any]]  # (result, *, request_id, model) -> chat.completion dict


async def respond(answer: AnswerFn, shape: ShapeFn, req: Any, request: Request, *, model: str,
                  observer: Any = None) -> Response:
    """Start the run, wait for its first event, then stream the rest as SSE.

    ``answer`` runs the request (the chat service), ``shape`` builds the non-streamed
    ``chat.completion`` (its ``usage`` and ``expertmix`` are reused), ``model`` names the pipeline
    shown in chunks. ``observer`` (metrics) gets ``first_token(seconds)`` and ``answered(body)``.
    """
    include_usage = stream_options(req)
    if getattr(req, "n", None) not in (None, 1):
        raise InputError("`n` > 1 cannot be streamed", hint="send n: 1 with stream: true, or stream: false")
    stream = RequestStream(asyncio.get_running_loop())
    run = asyncio.ensure_future(answer(req, stream=stream))
    run.add_done_callback(_finished(stream))
    try:
        first = await _first_event(stream, request)
    except BaseException:  # the server is stopping
        stream.cancel()
        run.cancel()
        raise
    if first is None:  # the client hung up before the first chunk: its run skips what only it needed
        stream.cancel()
        log.info("[%s] client disconnected before the first chunk; its question was cancelled", stream.question_id)
        return Response(status_code=499)
    if first == _DONE and run.exception() is not None:
        raise run.exception()  # before any byte was sent: an ordinary error response
    completion_id = stream.question_id or run.result()[0].id  # the run's question id is the completion id
    chunks = _Chunks(completion_id, model, include_usage)
    events = _events(first, stream, run, chunks, shape, time.monotonic(), observer)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _finished(stream: RequestStream) -> Callable[[asyncio.Future], None]:
    def done(run: asyncio.Future) -> None:
        if not run.cancelled():
            run.exception()  # retrieved here too, so an abandoned run never logs "never retrieved"
        stream.done()
    return done


async def _first_event(stream: RequestStream, request: Request) -> str | None:
    """The run's first event, or None when the client hangs up before it."""
    first = asyncio.ensure_future(stream.next_event())
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not first.done():
        first.cancel()
        return None
    return first.result()


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Chunks:
    """``chat.completion.chunk`` events of one response."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.id, self.model, self.include_usage = completion_id, model, include_usage
        self.created = int(time.time())

    def event(self, delta: dict[str, Any] | None, *, finish_reason: str | None = None,
              expertmix: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model, "system_fingerprint": None}
        body["choices"] = [] if delta is None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if self.include_usage:
            body["usage"] = usage
        if expertmix is not None:
            body["expertmix"] = expertmix
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def role(self, decision: RoutingDecision | None) -> str:
        routing = None if decision is None else {"id": self.id, "pipeline": self.model,
                                                 "routing": decision.model_dump(mode="json")}
        return self.event({"role": "assistant", "content": ""}, expertmix=routing)


async def _events(first: str, stream: RequestStream, run: asyncio.Future, chunks: _Chunks, shape: ShapeFn,
                  started: float, observer: Any) -> AsyncIterator[str]:
    answer, role_sent, event, first_token = AnswerText(), False, first, None
    try:
        while event != _DONE:
            if not role_sent and (event == _ROUTED or event == _TEXT):
                role_sent = True
                yield chunks.role(stream.decision)
            if event == _TEXT:
                delta = answer.delta(stream.text())
                if delta:
                    first_token = first_token or _observe_first(observer, started)
                    yield chunks.event({"content": delta})
            event = await stream.next_event()
        if not role_sent:
            yield chunks.role(stream.decision)
        async for tail in _ending(run, answer, chunks, shape, observer, started, first_token):
            yield tail
    finally:
        if not run.done():  # the client hung up mid-stream: stop its question's work (not the
            stream.cancel()  # run: other requests may be merged into it)
            log.info("[%s] client disconnected mid-stream; its question was cancelled", chunks.id)


async def _ending(run: asyncio.Future, answer: AnswerText, chunks: _Chunks, shape: ShapeFn, observer: Any,
                  started: float, first_token: float | None) -> AsyncIterator[str]:
    exc = run.exception()
    if exc is not None:
        yield _error_event(exc)
        yield "data: [DONE]\n\n"
        return
    result, _name = run.result()
    rest = answer.finish(result.answer)
    if rest:
        first_token = first_token or _observe_first(observer, started)
        yield chunks.event({"content": rest})
    body = shape(result, request_id=chunks.id, model=chunks.model)
    extra = dict(body.get("expertmix") or {})
    if answer.diverged:  # never expected with greedy decoding; the client gets the true answer here
        log.warning("[%s] streamed text diverged from the final answer", chunks.id)
        extra["answer"] = result.answer
        extra["stream_note"] = "the streamed text differs from the final answer (sampling on a retried node)"
    yield chunks.event({}, finish_reason=finish_reason(result), expertmix=extra)
    if chunks.include_usage:
        yield chunks.event(None, usage=body.get("usage"))
    yield "data: [DONE]\n\n"
    if observer is not None:
        observer.answered(body)


def _observe_first(observer: Any, started: float) -> float:
    seconds = time.monotonic() - started
    if observer is not None:
        observer.first_token(seconds)
    return seconds


def _error_event(exc: BaseException) -> str:
    if isinstance(exc, ExpertmixError):
        message, code = str(exc), "".join(f"_{c.lower()}" if c.isupper() and i else c.lower()
                                          for i, c in enumerate(type(exc).__name__))
    else:
        log.error("unexpected %s while streaming: %s", type(exc).__name__, exc)
        message, code = f"internal error ({type(exc).__name__}); the gateway log has the traceback", "internal_error"
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': code}})}\n\n"

