"""Gateway hardening (issue 12) on fakes: isolation, validation, bounded queue, abandoned requests,
slow clients, auth edge cases, an honest OpenAPI document. Real-server tests run uvicorn in a thread
with the same guarded protocol ``expertmix serve`` uses."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from orchestrator.config import ExpertRegistry
from orchestrator.errors import BackendError
from orchestrator.faces.gateway import create_app, guarded_protocol
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

QUESTION = {"role": "user", "content": "What is 12 * 7?"}


def make_orch(dispatcher=None) -> Orchestrator:
    return Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=dispatcher or FakeDispatcher())


def body(text: str = "What is 12 * 7?", **extra) -> dict:
    return {"model": "expertmix", "messages": [{"role": "user", "content": text}], **extra}


class FakeGatedDispatcher(FakeDispatcher):
    """Holds every call until ``gate`` opens; records each call's question count."""

    def __init__(self, reply=None) -> None:
        super().__init__(reply)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.calls: list[int] = []  # questions per call

    def run_batches(self, groups, **kw):
        self.entered.set()
        assert self.gate.wait(60), "test gate never opened"
        self.calls.append(len({r.key.split("/")[1] for g in groups.values() for r in g}))
        return super().run_batches(groups, **kw)


def _wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ---- 1. a poisoned request fails alone -------------------------------------------------------------
def test_sixty_concurrent_requests_with_six_poisoned_fail_only_the_poisoned():
    def reply(req):
        if "poison" in str(req.messages or req.prompt):
            raise BackendError("the engine choked on this prompt")
        return "Answer: 84"

    dispatcher = FakeGatedDispatcher(reply)
    app = create_app(make_orch(dispatcher), max_batch=64)
    texts = [f"poison {i}: what is 2 + 2?" if i % 10 == 3 else f"What is 12 * 7? ({i})" for i in range(60)]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
            head = asyncio.create_task(c.post("/v1/chat/completions", json=body("What is 1 + 1?")))
            while not dispatcher.entered.is_set():
                await asyncio.sleep(0.01)
            rest = [asyncio.create_task(c.post("/v1/chat/completions", json=body(t))) for t in texts]
            while app.state.chat.local.waiting < len(texts):
                await asyncio.sleep(0.01)
            dispatcher.gate.set()
            return await head, await asyncio.gather(*rest)

    head, responses = asyncio.run(scenario())
    assert head.status_code == 200
    good = [r for t, r in zip(texts, responses) if "poison" not in t]
    bad = [r for t, r in zip(texts, responses) if "poison" in t]
    assert [r.status_code for r in good] == [200] * 54
    assert all(r.json()["choices"][0]["message"]["content"] == "84" for r in good)
    assert [r.status_code for r in bad] == [500] * 6
    for r in bad:  # each poisoned request's error names its own request id and no other
        message = r.json()["error"]["message"]
        assert "choked" in message and r.headers["x-request-id"] in message
        assert sum(other.headers["x-request-id"] in message for other in responses) == 1
    assert len(dispatcher.calls) < 60  # halving, not one rerun per question


@pytest.mark.parametrize("content, where", [
    ("What is \ud800 2 + 2?", "lone UTF-16 surrogate"),
    ("What is \x00 2 + 2?", "NUL character"),
    ([{"type": "text", "text": "nul \x00 in a content part"}], "NUL character"),
])
def test_text_no_model_can_take_is_400_before_any_batch(content, where):
    dispatcher = FakeDispatcher()
    with TestClient(create_app(make_orch(dispatcher))) as c:
        def post(messages):  # json.dumps escapes a lone surrogate as \\ud800, as any client's JSON does
            return c.post("/v1/chat/completions", content=json.dumps({"model": "expertmix", "messages": messages}),
                          headers={"content-type": "application/json"})

        r = post([{"role": "system", "content": "be brief"}, {"role": "user", "content": content}])
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert where in err["message"] and "messages.1.content" in err["message"]
        assert err["param"] == "messages.1.content" and "\n" not in err["message"]
        r = post([{"role": "system", "content": "\udfff"}, QUESTION])
        assert r.status_code == 400 and "messages.0.content" in r.json()["error"]["message"]
        assert dispatcher.batches == []  # refused before any batch was formed
        assert c.post("/v1/chat/completions", json=body("tab\tnew\nline\r ok: what is 2+2?")).status_code == 200


# ---- 3. bounded queue, abandoned requests ------------------------------------------------------------
def test_beyond_the_queue_limit_requests_get_429_with_retry_after_and_memory_stays_bounded():
    dispatcher = FakeGatedDispatcher()
    app = create_app(make_orch(dispatcher), max_queue=5)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
            tasks = [asyncio.create_task(c.post("/v1/chat/completions", json=body())) for _ in range(20)]
            while sum(t.done() for t in tasks) < 15:  # 15 refused at once, while 5 wait or run
                await asyncio.sleep(0.01)
            depth = app.state.chat.admission.depth
            dispatcher.gate.set()
            return depth, await asyncio.gather(*tasks)

    depth, responses = asyncio.run(scenario())
    codes = sorted(r.status_code for r in responses)
    assert depth == 5 and codes == [200] * 5 + [429] * 15
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error" and "queue limit (5" in refused.json()["error"]["message"]
    assert app.state.chat.admission.depth == 0 and app.state.chat.local.waiting == 0


def test_waiting_lists_are_dropped_when_empty_after_2000_distinct_budgets():
    dispatcher = FakeGatedDispatcher()
    app = create_app(make_orch(dispatcher), max_queue=4000)
    local = app.state.chat.local

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=60) as c:
            tasks = [asyncio.create_task(c.post("/v1/chat/completions", json=body(
                expertmix_budget={"max_cost": 10.0 + i / 1000}))) for i in range(2000)]
            while local.waiting < 1999:  # one is running, the rest wait in their own lists
                await asyncio.sleep(0.02)
            peak = local.lists
            dispatcher.gate.set()
            return peak, await asyncio.gather(*tasks)

    peak, responses = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in responses)
    assert peak == 1999 and local.lists == 0 and local.waiting == 0


def test_requests_cancelled_before_their_run_are_dropped_from_it():
    dispatcher = FakeGatedDispatcher()
    app = create_app(make_orch(dispatcher), max_queue=1000)
    local = app.state.chat.local

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
            head = asyncio.create_task(c.post("/v1/chat/completions", json=body()))
            while not dispatcher.entered.is_set():
                await asyncio.sleep(0.01)
            gone = [asyncio.create_task(c.post("/v1/chat/completions", json=body())) for _ in range(400)]
            while local.waiting < 400:
                await asyncio.sleep(0.01)
            for t in gone:
                t.cancel()
            await asyncio.gather(*gone, return_exceptions=True)
            assert local.waiting == 0 and local.lists == 0 and local.abandoned == 400
            dispatcher.gate.set()
            await head
            fresh = await c.post("/v1/chat/completions", json=body())
            return fresh

    fresh = asyncio.run(scenario())
    assert fresh.status_code == 200
    assert dispatcher.calls == [1, 1]  # the head's run and the fresh one's: no abandoned question ran
    assert app.state.chat.admission.depth == 0


# ---- real sockets: uvicorn in a thread with the guarded protocol ------------------------------------
@contextmanager
def serving(app, *, header_timeout_s: float = 10.0, max_connections: int = 1000, parser: str = "auto"):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=30,
                            http=guarded_protocol(header_timeout_s=header_timeout_s, max_connections=max_connections,
                                                  parser=parser))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: server.started)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _closed_within(conn: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(the server closed the connection within ``seconds``, what it sent before)."""
    conn.settimeout(seconds)
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
        return True, got
    except (TimeoutError, socket.timeout):
        return False, got
    except ConnectionResetError:
        return True, got


def test_clients_that_hang_up_before_their_run_are_dropped_on_a_real_server():
    dispatcher = FakeGatedDispatcher()
    app = create_app(make_orch(dispatcher), max_queue=1000)
    local = app.state.chat.local
    with serving(app) as (host, port):
        url = f"http://{host}:{port}/v1/chat/completions"
        head = threading.Thread(target=lambda: httpx.post(url, json=body(), timeout=30))
        head.start()
        _wait_for(dispatcher.entered.is_set)

        async def abandon(n: int) -> None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(1.0), limits=httpx.Limits(max_connections=n)) as c:
                await asyncio.gather(*[c.post(url, json=body()) for _ in range(n)], return_exceptions=True)

        asyncio.run(abandon(100))  # every one times out client-side and closes its connection
        # every request that reached the gateway left it again (under load a few may time out before arriving)
        _wait_for(lambda: local.waiting == 0 and app.state.chat.admission.depth == 1, timeout=30)
        assert local.lists == 0 and local.abandoned > 50
        dispatcher.gate.set()
        head.join(30)
        t0 = time.perf_counter()
        fresh = httpx.post(url, json=body(), timeout=30)
        waited = time.perf_counter() - t0
    assert fresh.status_code == 200 and waited < 2.0, waited
    assert dispatcher.calls == [1, 1]


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_slow_headers_slow_bodies_and_too_many_connections_are_cut_off(parser):
    app = create_app(make_orch(), body_timeout_s=0.5)
    with serving(app, header_timeout_s=0.5, max_connections=3, parser=parser) as (host, port):
        slow_headers = socket.create_connection((host, port))
        slow_headers.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # never finished
        closed, _ = _closed_within(slow_headers, 3.0)
        assert closed, "a connection with half-sent headers was held open"

        slow_body = socket.create_connection((host, port))
        slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"model\": ")
        closed, got = _closed_within(slow_body, 3.0)
        assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
        assert b"request_timeout" in got

        held = [socket.create_connection((host, port)) for _ in range(3)]
        time.sleep(0.2)
        extra = socket.create_connection((host, port))
        closed, got = _closed_within(extra, 3.0)
        assert closed and got.startswith(b"HTTP/1.1 503") and b"too_many_connections" in got
        for s in [*held, extra, slow_headers, slow_body]:
            s.close()
        time.sleep(0.2)
        assert httpx.post(f"http://{host}:{port}/v1/chat/completions", json=body(), timeout=10).status_code == 200


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_oversized_request_headers_are_refused_and_the_connection_closed(parser):
    with serving(create_app(make_orch()), parser=parser) as (host, port):
        conn = socket.create_connection((host, port))
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):  # 40 x 1 KB, in separate writes, never finished
            try:
                conn.sendall(b"x-pad: " + b"a" * 1024 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):  # refused already
                break
            time.sleep(0.005)
        closed, got = _closed_within(conn, 3.0)
        conn.close()
        status = b"HTTP/1.1 431" if parser == "httptools" else b"HTTP/1.1 400"  # h11 enforces its own limit
        assert closed and got.startswith(status), got[:200]
        r = httpx.post(f"http://{host}:{port}/v1/chat/completions", json=body(), timeout=10,
                       headers={"x-pad": "a" * 8000})  # big but under the limit: answered
        assert r.status_code == 200


# ---- 8. smaller defects ---------------------------------------------------------------------------------
def test_405_is_typed_as_the_clients_error_and_a_huge_model_is_not_echoed():
    with TestClient(create_app(make_orch())) as c:
        r = c.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        r = c.post("/v1/chat/completions", json={**body(), "model": "m" * 500_000})
        assert r.status_code == 400 and len(r.content) < 2_000
        r = c.post("/v1/chat/completions", json={**body(), "model": "n" * 200})
        assert r.status_code == 400 and "(200 characters)" in r.json()["error"]["message"] and len(r.content) < 1_000


def test_several_api_keys_non_ascii_keys_and_duplicate_authorization_headers(tmp_path, monkeypatch):
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("# team keys\nfile-key\n\n", encoding="utf-8")
    monkeypatch.setenv("EXPERTMIX_GATEWAY_API_KEYS", "k1, clé-ü")
    monkeypatch.setenv("EXPERTMIX_GATEWAY_API_KEYS_FILE", str(keyfile))
    monkeypatch.delenv("EXPERTMIX_GATEWAY_API_KEY", raising=False)
    app = create_app(make_orch())

    def post(*headers: tuple[str, bytes]) -> httpx.Response:  # raw ASGI: header bytes exactly as given
        return asyncio.run(_raw_post(app, [(k.encode(), v) for k, v in headers]))

    with TestClient(app) as c:
        for key in (b"k1", "clé-ü".encode("utf-8"), b"file-key"):
            assert post(("authorization", b"Bearer " + key)).status_code == 200, key
        assert post(("authorization", "Bearer clé-ü".encode("latin-1"))).status_code == 401  # UTF-8 only
        r = post(("authorization", b"Bearer nope"))
        assert r.status_code == 401 and "nope" not in r.text and "k1" not in r.text
        r = post(("authorization", b"Bearer k1"), ("authorization", b"Bearer nope"))
        assert r.status_code == 400 and "more than one Authorization header" in r.json()["error"]["message"]
        assert c.get("/healthz").status_code == 200


async def _raw_post(app, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
    payload = json.dumps(body()).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("gw", 80),
             "headers": [(b"content-type", b"application/json"), *headers]}
    sent = [{"type": "http.request", "body": payload, "more_body": False}]
    out: dict = {"body": b""}

    async def receive() -> dict:
        return sent.pop() if sent else await asyncio.sleep(30) or {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], message.get("headers", [])
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return httpx.Response(out["status"], headers=out["headers"], content=out["body"])


def test_a_key_file_that_cannot_be_read_is_a_one_line_config_error(tmp_path, monkeypatch):
    from orchestrator.errors import ConfigError
    from orchestrator.faces.gateway import api_keys_from_env

    with pytest.raises(ConfigError, match="cannot read the key file"):
        api_keys_from_env({"EXPERTMIX_GATEWAY_API_KEYS_FILE": str(tmp_path)})


def test_every_response_has_a_request_id_and_a_sane_client_id_is_kept():
    with TestClient(create_app(make_orch())) as c:
        r = c.post("/v1/chat/completions", json=body(), headers={"x-request-id": "trace-123"})
        assert r.headers["x-request-id"] == "trace-123"
        r = c.post("/v1/chat/completions", json=body(), headers={"x-request-id": "bad id\twith spaces"})
        assert len(r.headers["x-request-id"]) == 32
        assert c.get("/nope").headers["x-request-id"]


# ---- 7. an honest OpenAPI document -------------------------------------------------------------------
def test_openapi_declares_every_error_status_with_the_openai_error_schema():
    doc = TestClient(create_app(make_orch())).get("/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in chat and "HTTPValidationError" not in doc["components"]["schemas"]
    assert {"200", "400", "401", "405", "408", "413", "429", "500", "503"} <= set(chat)
    ref = chat["400"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ErrorResponse"
    assert "Retry-After" in chat["429"]["headers"]
    assert set(doc["components"]["schemas"]["ErrorDetail"]["properties"]) >= {"message", "type", "code"}


# ---- expertmix ask --server ------------------------------------------------------------------------------
def test_ask_with_server_answers_through_a_running_gateway(capsys, monkeypatch):
    import json as _json

    from orchestrator.faces import cli

    dispatcher = FakeDispatcher()
    with serving(create_app(make_orch(dispatcher), api_keys=[])) as (host, port):
        assert cli.main(["ask", "What is 12 * 7?", "--server", f"http://{host}:{port}", "--pipeline",
                         "ensemble-vote", "--json"]) == 0
        result = _json.loads(capsys.readouterr().out)
        assert result["answer"] == "84" and result["trace"]["pipeline"] == "ensemble-vote"
        monkeypatch.setenv("EXPERTMIX_SERVER", f"http://{host}:{port}")
        assert cli.main(["ask", "What is 12 * 7?", "--pipeline", "gpt-4o"]) == 2
        err = capsys.readouterr().err
        assert "answered 400" in err and "unknown pipeline 'gpt-4o'" in err and "\n" not in err.strip()
    assert dispatcher.batches  # the gateway's engines answered, none started here
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    assert cli.main(["ask", "hi there?", "--server", f"http://127.0.0.1:{dead}"]) == 5
    assert "cannot reach the gateway" in capsys.readouterr().err
