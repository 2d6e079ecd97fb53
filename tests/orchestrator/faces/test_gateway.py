"""The REST gateway (orchestrator.faces.gateway) over a FakeDispatcher: OpenAI shape, errors, limits, probes."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from orchestrator.config import ExpertRegistry
from orchestrator.errors import BackendError, DispatchError, InputError
from orchestrator.faces.gateway import MAX_BODY_BYTES, create_app
from orchestrator.pipeline import Pipeline, builtin_pipelines
from orchestrator.faces.sdk import Orchestrator
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

QUESTION = {"role": "user", "content": "What is 12 * 7?"}


def make_orch(pipeline: str = "ensemble-vote", dispatcher=None) -> Orchestrator:
    return Orchestrator(ExpertRegistry.default(), Pipeline.load(pipeline), dispatcher=dispatcher or FakeDispatcher())


@pytest.fixture
def orch() -> Orchestrator:
    return make_orch()


@pytest.fixture
def client(orch):
    with TestClient(create_app(orch)) as c:
        yield c


def chat(client, messages=(QUESTION,), **extra):
    return client.post("/v1/chat/completions", json={"model": "expertmix", "messages": list(messages), **extra})


def test_chat_completion_has_the_openai_shape(client):
    r = chat(client, max_tokens=16, temperature=0.2)  # OpenAI fields the gateway ignores are accepted
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int) and body["model"] == "ensemble-vote"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "84"}  # the vote over "Answer: 84 (...)"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 3 * len(body["expertmix"]["trace"]["answers"]) > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_response_carries_the_trace(client):
    body = chat(client).json()
    x = body["expertmix"]
    assert x["id"] == body["id"]  # the request id is the question id: the trace and the reply correlate
    assert x["question"] == "What is 12 * 7?" and x["aggregator"] == "vote"
    assert x["experts"] and all(e["name"] for e in x["experts"])
    assert x["trace"]["pipeline"] == "ensemble-vote" and x["trace"]["router"]
    assert x["trace"]["timings"] and x["trace"]["answers"]
    assert isinstance(x["model_loads"], int) and x["model_loads"] >= 1


def test_the_last_user_message_is_the_question_and_content_parts_work(client, orch):
    seen = []
    orch.dispatcher.reply = lambda req: seen.append(req) or "Answer: 5"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first question?"},
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}]
    body = chat(client, messages).json()
    assert body["expertmix"]["question"] == "What is 2 + 3?"
    assert body["choices"][0]["message"]["content"] == "5"
    assert seen and all("first question" in str(r.messages or r.prompt) for r in seen)  # the conversation goes along


def custom_pipeline() -> Pipeline:
    """A user's own pipeline (the `serve --pipeline my.yaml` case): ensemble-vote on two fixed experts."""
    data = Pipeline.load("ensemble-vote").to_dict()
    data["name"] = "my-vote"
    data["nodes"][1]["params"] = {"router": "fixed", "experts": ["coder", "math-tutor"]}
    return Pipeline.from_dict(data)


def test_each_pipeline_gets_one_reused_orchestrator_sharing_the_dispatcher():
    dispatcher = FakeDispatcher()
    base = Orchestrator(ExpertRegistry.default(), custom_pipeline(), dispatcher=dispatcher)
    with TestClient(create_app(base)) as c:
        assert chat(c).json()["expertmix"]["trace"]["pipeline"] == "my-vote"  # `expertmix` = the default
        assert "my-vote" in [m["id"] for m in c.get("/v1/models").json()["data"]]
        for _ in range(2):
            r = c.post("/v1/chat/completions", json={"model": "ensemble-vote", "messages": [QUESTION]})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "ensemble-vote" and r.json()["expertmix"]["trace"]["pipeline"] == "ensemble-vote"
        orchestrators = c.app.state.orchestrators
        sibling = orchestrators.get("ensemble-vote")
        assert sibling is orchestrators.get("ensemble-vote") and orchestrators.get("my-vote") is base
        assert sibling.dispatcher is dispatcher
    assert dispatcher.loads and all(n == 1 for n in dispatcher.loads.values())  # engines shared: loaded once
    assert dispatcher.closed  # released when the app shuts down


def test_empty_question_is_400_with_the_message(client, orch):
    r = chat(client, [{"role": "user", "content": "   "}])
    assert r.status_code == 400
    err = r.json()["error"]
    assert "question is empty" in err["message"] and "fix:" in err["message"]
    assert err["type"] == "invalid_request_error" and err["code"] == "input_error"
    assert orch.dispatcher.batches == []  # rejected before any model ran


def test_missing_user_message_and_malformed_requests_are_400(client):
    r = chat(client, [{"role": "system", "content": "hi"}])
    assert r.status_code == 400 and "no message with role 'user'" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "expertmix"})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = chat(client, stream=True, stream_options=3)  # streaming works (test_streaming_*.py); bad options are 400
    assert r.status_code == 400 and "stream_options" in r.json()["error"]["message"]


def test_unknown_pipeline_is_400_listing_the_choices(client):
    r = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [QUESTION]})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "unknown pipeline 'gpt-4o'" in message
    for name in ["expertmix", *builtin_pipelines()]:
        assert name in message
    assert r.json()["error"]["code"] == "unknown_name_error"


def test_a_request_cannot_load_a_pipeline_from_a_file_path(client, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(Pipeline.load("ensemble-vote").to_yaml())
    r = client.post("/v1/chat/completions", json={"model": str(path), "messages": [QUESTION]})
    assert r.status_code == 400 and "unknown pipeline" in r.json()["error"]["message"]


def test_budget_extension_is_applied_and_validated(client):
    r = chat(client, expertmix_budget={"max_experts": 1})
    assert r.status_code == 200, r.text
    assert len({e["name"] for e in r.json()["expertmix"]["experts"]}) == 1
    r = chat(client, expertmix_budget={"max_experts": 0})
    assert r.status_code == 400 and "expertmix_budget.max_experts" in r.json()["error"]["message"]
    r = chat(client, expertmix_budget={"max_cost": 0.001})
    assert r.status_code == 400 and r.json()["error"]["code"] == "budget_error", r.text


def test_oversized_body_is_413(client, orch):
    big = "x" * (MAX_BODY_BYTES + 10)
    r = chat(client, [{"role": "user", "content": big}])
    assert r.status_code == 413
    assert "larger than 1048576 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"x" * 65536
    r = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert orch.dispatcher.batches == []


def test_models_lists_the_pipelines(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids[0] == "expertmix" and set(builtin_pipelines()) <= set(ids)
    assert body["data"][0]["pipeline"] == "ensemble-vote"
    assert all(m["object"] == "model" for m in body["data"])


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True and r.json()["executor"] == "local"


def test_unknown_route_gets_an_openai_error_body(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404 and "/v1/nope" in r.json()["error"]["message"]


class FakeFailingDispatcher(FakeDispatcher):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def run_batches(self, groups, **kw):
        raise self.exc


@pytest.mark.parametrize("exc, status, code", [
    (DispatchError("no live worker for model(s) smollm2-135m", hint="start one"), 503, "dispatch_error"),
    (BackendError("engine for smollm2-135m failed"), 500, "backend_error"),
])
def test_backend_and_fleet_errors_map_to_5xx(exc, status, code):
    with TestClient(create_app(make_orch(dispatcher=FakeFailingDispatcher(exc)))) as c:
        r = chat(c)
    assert r.status_code == status
    assert r.json()["error"]["message"].endswith(str(exc)) and r.json()["error"]["code"] == code


def test_a_pipeline_the_gateway_cannot_build_is_a_500_not_the_clients_fault():
    from orchestrator.errors import PipelineValidationError

    def factory(name: str) -> Orchestrator:
        raise PipelineValidationError(f"pipeline {name!r}, node 'router': unknown router 'category'")

    with TestClient(create_app(factory, default_pipeline="ensemble-vote")) as c:
        r = chat(c)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "misconfigured on this gateway" in r.json()["error"]["message"]
    assert "unknown router 'category'" in r.json()["error"]["message"]


def test_unexpected_errors_are_500_without_internals():
    with TestClient(create_app(make_orch(dispatcher=FakeFailingDispatcher(RuntimeError("secret detail")))),
                    raise_server_exceptions=False) as c:
        r = chat(c)
    assert r.status_code == 500 and "secret detail" not in r.text
    assert "RuntimeError" in r.json()["error"]["message"]


def test_factory_source_and_shutdown_closes_dispatchers():
    made: list[str] = []
    dispatcher = FakeDispatcher()

    def factory(name: str) -> Orchestrator:
        made.append(name)
        return make_orch(name, dispatcher=dispatcher)

    with TestClient(create_app(factory, default_pipeline="ensemble-vote")) as c:
        assert chat(c).json()["model"] == "ensemble-vote"
        assert chat(c).status_code == 200
    assert made == ["ensemble-vote"] and dispatcher.closed


def test_api_key_is_required_when_configured(monkeypatch, orch):
    monkeypatch.setenv("EXPERTMIX_GATEWAY_API_KEY", "s3cret")
    with TestClient(create_app(orch)) as c:
        assert chat(c).status_code == 401
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/chat/completions", json={"model": "expertmix", "messages": [QUESTION]},
                   headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200, r.text


def test_serve_command_parses_what_deploy_runs():
    from orchestrator.faces.cli import build_parser

    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "8080", "--executor", "celery"])
    assert (args.host, args.port, args.executor, args.pipeline) == ("0.0.0.0", 8080, "celery", "symbolic-moe")
    assert args.func.__name__ == "cmd_serve"


def test_serve_fails_before_starting_on_a_bad_pipeline(capsys):
    from orchestrator.faces.cli import main

    assert main(["serve", "--pipeline", "no-such-pipeline", "--port", "0"]) == 2
    assert "unknown pipeline 'no-such-pipeline'" in capsys.readouterr().err


# ---- --executor celery: the gateway over the Celery dispatcher, on fakeredis and a fake worker ----
class FakeSmolWorker:
    """Serves only ``smollm2-135m``: runs each sent batch task at once with the real batching code."""

    MODEL = "smollm2-135m"

    def __init__(self, store) -> None:
        from orchestrator.config import ModelSpec
        from workers.backends.fake import FakeBackend
        from workers.fleet import beat
        from workers.pool import ModelPool

        self.store = store
        backend = FakeBackend(ModelSpec(name=self.MODEL, backend="fake", path=self.MODEL),
                              answers=lambda req, i: "Answer: 84")
        self.pool = ModelPool({self.MODEL: backend.spec}, budget_gib=4, backend_factory=lambda spec: backend)
        beat(store, "fake-smol-worker", [self.MODEL], {"loads": {self.MODEL: 1}}, ttl_s=10)

    def send(self, model: str) -> str:
        from workers import batching

        batching.run_batch(self.store, self.pool.generate, model, "b0", max_batch=8, max_wait_s=0)
        return "b0"


@pytest.fixture
def fleet_client():
    import fakeredis

    from workers.celery_dispatch import CeleryDispatcher
    from workers.settings import FleetSettings
    from workers.store import FleetStore

    server = fakeredis.FakeServer()
    store = FleetStore(fakeredis.FakeRedis(server=server, decode_responses=True))
    registry = ExpertRegistry.default()
    dispatcher = CeleryDispatcher(registry, FleetSettings(), store, send=FakeSmolWorker(store).send)
    orch = Orchestrator(registry, Pipeline.load("ensemble-vote"), executor="celery", dispatcher=dispatcher)
    with TestClient(create_app(orch)) as c:
        yield c, server


def test_fleet_answers_through_live_workers_and_readiness_lists_models_without_one(fleet_client):
    client, _ = fleet_client
    r = chat(client, expertmix_budget={"max_cost": 1.0})  # SmolLM2 experts only: the one live worker
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "84"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["executor"] == "celery"
    assert ready.json()["models_without_worker"] == ["gemma3-270m", "qwen-coder-0.5b"]


def test_fleet_without_a_live_worker_for_a_model_is_503(fleet_client):
    client, _ = fleet_client
    r = client.post("/v1/chat/completions", json={"model": "ensemble-vote", "messages": [
        {"role": "user", "content": "Write a Python function to reverse a string."}]})
    assert r.status_code == 503
    err = r.json()["error"]
    assert "no live worker for model(s) qwen-coder-0.5b" in err["message"] and "expertmix worker" in err["message"]
    assert err["type"] == "service_unavailable_error"


def test_fleet_readiness_is_503_when_redis_is_down(fleet_client):
    client, server = fleet_client
    server.connected = False
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False and "Redis is unreachable" in r.json()["reason"]
    assert client.get("/healthz").status_code == 200  # alive, just not ready


# ---- local engines: concurrent requests merge into one run -----------------------------------------
class FakeGatedDispatcher(FakeDispatcher):
    """Holds its first call until ``gate`` opens; records each call's batch sizes per model."""

    def __init__(self, reply=None) -> None:
        super().__init__(reply)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.calls: list[dict[str, int]] = []

    def run_batches(self, groups, **kw):
        self.entered.set()
        assert self.gate.wait(10), "test gate never opened"
        self.calls.append({m: len(g) for m, g in groups.items() if g})
        return super().run_batches(groups, **kw)


async def _concurrent(app, dispatcher, first: str, rest: list[str]) -> list[httpx.Response]:
    """Send ``first``; while its run holds the engines, send ``rest``; then let everything run."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as c:
        def post(text: str):
            return c.post("/v1/chat/completions", json={"model": "expertmix",
                                                        "messages": [{"role": "user", "content": text}]})
        head = asyncio.create_task(post(first))
        while not dispatcher.entered.is_set():
            await asyncio.sleep(0.01)
        tail = [asyncio.create_task(post(t)) for t in rest]
        local = app.state.chat.local
        while local.waiting < len(rest):
            await asyncio.sleep(0.01)
        dispatcher.gate.set()
        return await asyncio.gather(head, *tail)


def test_requests_arriving_during_a_local_run_are_answered_by_one_merged_run():
    dispatcher = FakeGatedDispatcher()
    app = create_app(make_orch(dispatcher=dispatcher))
    responses = asyncio.run(_concurrent(app, dispatcher, "What is 12 * 7?", ["What is 12 * 7?"] * 4))
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.json()["id"] for r in responses}) == 5
    assert all(r.json()["choices"][0]["message"]["content"] == "84" for r in responses)
    first, merged = dispatcher.calls  # two runs for five requests: one batch per model in each
    assert merged == {m: 4 * n for m, n in first.items()}


def test_one_bad_question_in_a_merged_run_fails_alone():
    def reply(req):
        if "poison" in str(req.messages or req.prompt):
            raise InputError("a question the experts refuse", hint="ask something else")
        return "Answer: 84"

    dispatcher = FakeGatedDispatcher(reply)
    app = create_app(make_orch(dispatcher=dispatcher))
    responses = asyncio.run(_concurrent(app, dispatcher, "What is 12 * 7?",
                                        ["What is 12 * 7?", "poison: what is 2 + 2?", "What is 12 * 7?"]))
    assert [r.status_code for r in responses] == [200, 200, 400, 200]
    assert "experts refuse" in responses[2].json()["error"]["message"]
    # the head run, the merged run that failed, then its halves until the bad one is alone:
    # [good] ok, [bad, good] fails, [bad] fails, [good] ok
    assert len(dispatcher.calls) == 1 + 1 + 4


def test_stream_true_sends_role_then_answer_then_finish_as_sse(client):
    """The fake dispatcher cannot stream: the answer comes in one chunk when decided."""
    import json

    plain = chat(client).json()
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["expertmix"]["routing"]["router"] == plain["expertmix"]["trace"]["router"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) \
        == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


