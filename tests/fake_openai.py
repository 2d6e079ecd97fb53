"""A fake OpenAI-compatible HTTP server for tests (never used outside tests/).

A real HTTP server (uvicorn in a thread) that answers ``POST /v1/chat/completions`` like an
OpenAI endpoint, plain or streamed (SSE, with ``stream_options.include_usage``), so experts served
through the REAL litellm and openai backends can be tested without a provider. ``POST
/v1/completions`` answers a base-model prompt with ``" Paris"``; a model named ``status-NNN``
gets that HTTP status with an OpenAI error body (``"message": "scripted"``). The answer is deterministic:
``"<model> says: <first words of the last user message>"``, one word per chunk, ``token_delay_s``
apart, cut after ``max_tokens`` words (then ``finish_reason: "length"``, as a model stopped there). ``stats`` counts requests, streamed requests and streams the client closed early.

Example::

    with FakeOpenAI(token_delay_s=0.01) as server:
        print(server.base_url)        # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

ANSWER_WORDS = 12


def fake_answer(model: str, messages: list[dict[str, Any]]) -> str:
    """What the fake server answers (tests compute expected texts with it)."""
    last = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    words = str(last).split()[:ANSWER_WORDS]
    return f"{model.split('/')[-1]} says: {' '.join(words)}"


class FakeOpenAI:
    """The server; a context manager that starts and stops it on a free local port."""

    def __init__(self, token_delay_s: float = 0.0) -> None:
        self.token_delay_s = token_delay_s
        self.stats = {"requests": 0, "streamed": 0, "closed_early": 0}
        self.received: list[dict[str, Any]] = []  # every request body, in arrival order
        self.headers: list[dict[str, str]] = []  # and its headers
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/completions", self._completion, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="fake-openai")

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _completion(self, request: Request) -> Any:
        body = await request.json()
        self.received.append(body)
        return JSONResponse({"id": "fake-2", "object": "text_completion", "model": body.get("model"),
                             "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": len(str(body.get("prompt")).split()), "completion_tokens": 1}})

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.stats["requests"] += 1
        self.received.append(body)
        self.headers.append(dict(request.headers))
        model = body.get("model", "fake")
        scripted = re.fullmatch(r"status-(\d{3})", str(model))
        if scripted:
            return JSONResponse({"error": {"message": "scripted", "type": "scripted"}}, status_code=int(scripted.group(1)))
        text, finish = fake_answer(model, body.get("messages", [])), "stop"
        limit = body.get("max_tokens")
        if isinstance(limit, int) and len(text.split()) > limit:
            text, finish = " ".join(text.split()[:limit]), "length"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        if not body.get("stream"):
            return JSONResponse({"id": "fake-1", "object": "chat.completion", "created": int(time.time()),
                                 "model": model, "usage": usage, "choices": [
                                     {"index": i, "finish_reason": finish, "message": {"role": "assistant", "content": text}}
                                     for i in range(int(body.get("n") or 1))]})
        self.stats["streamed"] += 1
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(self._chunks(model, text, usage, include_usage, finish), media_type="text/event-stream")

    async def _chunks(self, model: str, text: str, usage: dict, include_usage: bool, finish_reason: str):
        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
            body = {"id": "fake-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(body)}\n\n"

        finished = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            for piece in re.findall(r"\s*\S+", text):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield chunk({"content": piece})
            yield chunk({}, finish_reason)
            if include_usage:
                yield f"data: {json.dumps({'id': 'fake-1', 'object': 'chat.completion.chunk', 'model': model, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                self.stats["closed_early"] += 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
