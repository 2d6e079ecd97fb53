"""The gateway as a drop-in OpenAI endpoint (issue 10), on fakes: sampling parameters honoured on
every model call, fields it cannot honour refused by name, `n`, real usage, `expert/NAME`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from orchestrator.config import ExpertRegistry
from orchestrator.core import Completion
from orchestrator.faces.gateway import create_app
from orchestrator.faces.overrides import SamplingOverride
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

QUESTION = {"role": "user", "content": "Explain why the sky is blue."}


class FakeCountingDispatcher(FakeDispatcher):
    """Keeps every request; each model answers differently (so synthesis has to call its model);
    a completion counts 10 prompt and 3 completion tokens."""

    def __init__(self) -> None:
        super().__init__(reply=lambda r: f"Rayleigh scattering, says {r.model}.")
        self.requests = []

    def run_batches(self, groups, **kw):
        self.requests += [r for reqs in groups.values() for r in reqs]
        done = super().run_batches(groups, **kw)
        return {k: Completion(**{**c.model_dump(), "prompt_tokens": 10}) for k, c in done.items()}


def fused_pipeline() -> Pipeline:
    """Two fixed experts on different models, fused by the synthesis aggregator (a model call)."""
    data = Pipeline.load("ensemble-vote").to_dict()
    data["name"] = "two-and-synthesis"
    data["nodes"][1]["params"] = {"router": "fixed", "experts": ["coder", "generalist"]}
    data["nodes"][3]["params"] = {"aggregator": "synthesis", "answer_type": "text", "max_tokens": 256}
    return Pipeline.from_dict(data)


@pytest.fixture
def served():
    dispatcher = FakeCountingDispatcher()
    orch = Orchestrator(ExpertRegistry.default(), fused_pipeline(), dispatcher=dispatcher)
    with TestClient(create_app(orch, api_keys=[])) as c:
        yield c, dispatcher


def chat(client, **extra):
    return client.post("/v1/chat/completions", json={"model": "expertmix", "messages": [QUESTION], **extra})


def test_sampling_parameters_reach_every_model_call_and_max_tokens_caps_the_final_answer_too(served):
    client, dispatcher = served
    r = chat(client, temperature=0.7, top_p=0.9, seed=5, stop="\n\n", max_tokens=7)
    assert r.status_code == 200, r.text
    labels = {r.key.split("/")[2] for r in dispatcher.requests}
    assert {"experts", "vote"} <= labels  # the experts' calls and the aggregator's own call
    for req in dispatcher.requests:
        s = req.sampling
        assert (s.temperature, s.top_p, s.seed, s.stop) == (0.7, 0.9, 5, ["\n\n"]), req.key
        assert s.max_tokens == 7, req.key
    dispatcher.requests.clear()
    assert chat(client, max_completion_tokens=100_000).status_code == 200
    aggregate = [r for r in dispatcher.requests if "/vote/" in r.key]
    assert aggregate[0].sampling.max_tokens == 256  # a cap only lowers a call's own limit


def test_without_sampling_fields_the_pipeline_settings_stand(served):
    client, dispatcher = served
    assert chat(client).status_code == 200
    registry = ExpertRegistry.default()
    for req in dispatcher.requests:
        if "/experts/" in req.key:
            assert req.sampling == registry.expert(req.key.split("/")[-1]).sampling.model_copy(
                update={"max_tokens": req.sampling.max_tokens})


@pytest.mark.parametrize("field, value", [
    ("logprobs", True), ("presence_penalty", 0.5), ("frequency_penalty", -1),
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("logit_bias", {"50256": -100}),
    ("response_format", {"type": "json_object"}), ("stop", ["a", "b", "c", "d", "e"]),
])
def test_fields_that_cannot_be_honoured_are_400_naming_the_field(served, field, value):
    client, dispatcher = served
    r = chat(client, **{field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["message"].startswith(f"{field}:") and "fix:" in err["message"]
    assert dispatcher.requests == []


@pytest.mark.parametrize("field, value", [("temperature", 3), ("top_p", 0), ("n", 0), ("n", 99), ("max_tokens", 0)])
def test_out_of_range_sampling_values_are_400(served, field, value):
    client, _ = served
    r = chat(client, **{field: value})
    assert r.status_code == 400 and field in r.json()["error"]["message"]


def test_openai_defaults_that_mean_nothing_are_accepted(served):
    client, _ = served
    r = chat(client, presence_penalty=0, frequency_penalty=0, logprobs=False, tool_choice="none",
             response_format={"type": "text"}, user="someone", n=1)
    assert r.status_code == 200, r.text


def test_n_gives_n_choices_with_consecutive_seeds_and_summed_usage(served):
    client, dispatcher = served
    r = chat(client, n=3, seed=10, temperature=0.8)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {req.sampling.seed for req in dispatcher.requests} == {10, 11, 12}
    assert body["usage"]["prompt_tokens"] == 10 * len(dispatcher.requests)
    assert body["usage"]["completion_tokens"] == 3 * len(dispatcher.requests)
    assert len(body["expertmix"]["choices"]) == 2


def test_usage_counts_every_model_call_with_a_per_node_breakdown(served):
    client, dispatcher = served
    body = chat(client).json()
    calls = len(dispatcher.requests)  # 2 experts + 1 synthesis call
    assert calls == 3
    assert body["usage"] == {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
    steps = {s["node"]: s for s in body["expertmix"]["trace"]["steps"]}
    assert steps["experts"]["prompt_tokens"] == 20 and steps["vote"]["completion_tokens"] == 3


def test_expert_name_asks_one_expert_directly():
    dispatcher = FakeDispatcher(reply=lambda r: f"Answer: 84, from {r.model}")
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=dispatcher)
    with TestClient(create_app(orch, api_keys=[])) as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert "expert/coder" in ids and "expert/generalist" in ids
        r = c.post("/v1/chat/completions", json={"model": "expert/coder", "messages": [QUESTION]})
        assert r.status_code == 200, r.text
        body = r.json()
        coder_model = ExpertRegistry.default().expert("coder").model
        assert body["choices"][0]["message"]["content"] == f"Answer: 84, from {coder_model}"  # unchanged
        assert [e["name"] for e in body["expertmix"]["experts"]] == ["coder"]
        assert body["model"] == "expert/coder" and dispatcher.batches == [("experts", coder_model, 1)]
        r = c.post("/v1/chat/completions", json={"model": "expert/nobody", "messages": [QUESTION]})
        assert r.status_code == 400 and "expert/<expert>" in r.json()["error"]["message"]


def test_sampling_override_is_a_cap_and_leaves_unset_fields_alone():
    from orchestrator.core import Sampling

    base = Sampling(temperature=0.2, max_tokens=64, seed=1)
    assert SamplingOverride(max_tokens=500).apply(base).max_tokens == 64
    assert SamplingOverride(max_tokens=8, top_p=0.5).apply(base) == base.model_copy(update={"max_tokens": 8, "top_p": 0.5})
    assert SamplingOverride().apply(base) is base


# ---- conversations ---------------------------------------------------------------------------------------
FOLLOW_UP = [{"role": "system", "content": "Answer in one sentence."},
             {"role": "user", "content": "What is the boiling point of water in Fahrenheit?"},
             {"role": "assistant", "content": "212 degrees Fahrenheit."},
             {"role": "user", "content": "and in Celsius?"}]


def test_experts_receive_the_conversation_with_the_users_system_message_after_their_role():
    dispatcher = FakeCountingDispatcher()
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=dispatcher)
    with TestClient(create_app(orch, api_keys=[])) as c:
        r = c.post("/v1/chat/completions", json={"model": "expertmix", "messages": FOLLOW_UP})
    assert r.status_code == 200, r.text
    assert r.json()["expertmix"]["question"] == "and in Celsius?"
    registry = ExpertRegistry.default()
    chat_requests = [q for q in dispatcher.requests if q.messages]
    assert chat_requests
    for req in chat_requests:
        expert = registry.expert(req.key.split("/")[-1])
        system, *turns = req.messages
        assert system == {"role": "system", "content": f"{expert.system_prompt}\n\nAnswer in one sentence."}
        assert turns == FOLLOW_UP[1:]
    for req in (q for q in dispatcher.requests if q.prompt):  # base models get the conversation as text
        assert "Conversation so far:\nUser: What is the boiling point" in req.prompt
        assert req.prompt.rstrip().endswith("Question: and in Celsius?\nAnswer:")


def test_the_router_reads_the_follow_up_with_the_earlier_user_turns():
    from orchestrator.core import Question

    q = Question(id="q", text="and in Celsius?", context=FOLLOW_UP[:3])
    assert q.routing_text() == "and in Celsius?\n\nWhat is the boiling point of water in Fahrenheit?"


def test_the_oldest_turns_are_dropped_first_to_fit_a_small_context_window():
    from orchestrator.config import ModelSpec
    from orchestrator.core import Sampling
    from orchestrator.prompts import build_request

    model = ModelSpec(name="tiny", backend="fake", path="tiny", max_model_len=400)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 60}
             for i in range(8)]
    req = build_request("k", model, "You are terse.", "the question?", Sampling(max_tokens=64), turns)
    kept = req.messages[1:-1]
    assert 0 < len(kept) < len(turns) and kept == turns[len(turns) - len(kept):]  # the latest turns survive
    assert req.messages[-1] == {"role": "user", "content": "the question?"}


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "prefill"}], "messages.1"),
    ([{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}], "messages.0.role"),
])
def test_conversations_that_cannot_be_honoured_are_400(served, messages, param):
    client, _ = served
    r = client.post("/v1/chat/completions", json={"model": "expertmix", "messages": messages})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_n_above_one_with_stream_is_a_400(served):
    client, dispatcher = served
    r = chat(client, n=2, stream=True)
    assert r.status_code == 400 and "`n` > 1 cannot be streamed" in r.json()["error"]["message"]
    assert dispatcher.requests == []


# ---- finish_reason: "length" when the call whose text is the answer stopped at max_tokens ------
LONG = " ".join(["word"] * 500)  # longer than any call's max_tokens (experts: 256 or 384; synthesis: 256)


def _finish_client(expert_reply: str, fused_reply: str) -> TestClient:
    """Two experts on different models (synthesis must call its model); the fake cuts at max_tokens."""
    def reply(r):
        return fused_reply if "/aggregate/" in r.key else f"{r.model}: {expert_reply}"

    orch = Orchestrator(ExpertRegistry.default(), fused_pipeline(), dispatcher=FakeDispatcher(reply=reply))
    return TestClient(create_app(orch, api_keys=[]))


def _streamed_finish(client, **extra) -> tuple[str | None, str]:
    import json

    r = chat(client, stream=True, **extra)
    assert r.status_code == 200, r.text
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    return chunks[-1]["choices"][0]["finish_reason"], text


@pytest.mark.parametrize("expert_reply, fused_reply, expected", [
    ("Rayleigh scattering", "Rayleigh scattering.", "stop"),
    (LONG, "Rayleigh scattering.", "stop"),  # only the experts were cut: the answer is whole
    ("Rayleigh scattering", LONG, "length"),  # the synthesis call hit its max_tokens
])
def test_finish_reason_is_that_of_the_final_generating_call(expert_reply, fused_reply, expected):
    with _finish_client(expert_reply, fused_reply) as client:
        body = chat(client).json()
        assert body["choices"][0]["finish_reason"] == expected, body["expertmix"]["trace"]["notes"]
        answers = body["expertmix"]["trace"]["answers"]
        assert {a["finish_reason"] for a in answers} == {"length" if expert_reply == LONG else "stop"}
        assert _streamed_finish(client) == (expected, body["choices"][0]["message"]["content"])


def test_a_request_max_tokens_that_cuts_the_answer_finishes_with_length():
    with _finish_client("Rayleigh scattering", "Blue light scatters more than red light.") as client:
        assert chat(client, max_tokens=3).json()["choices"][0]["finish_reason"] == "length"
        finish, text = _streamed_finish(client, max_tokens=3)
        assert (finish, text) == ("length", "Blue light scatters")
        assert chat(client, max_tokens=30).json()["choices"][0]["finish_reason"] == "stop"


def test_a_passed_through_expert_answer_keeps_the_experts_finish_reason():
    """expert/NAME: one expert, synthesis passes its answer through without a call."""
    with _finish_client(LONG, "unused") as client:
        r = client.post("/v1/chat/completions", json={"model": "expert/coder", "messages": [QUESTION]})
        assert r.json()["choices"][0]["finish_reason"] == "length"
        r = client.post("/v1/chat/completions", json={"model": "expert/coder", "messages": [QUESTION], "max_tokens": 400})
        assert r.json()["choices"][0]["finish_reason"] == "length"  # a cap only lowers the expert's own limit
