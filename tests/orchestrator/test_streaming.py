"""Token streaming through the executor (orchestrator/streaming.py), on fakes.

The pool runs FakeBackend engines that stream word by word; the pipelines are the built-in ones
or small fixed-router graphs, so which node streams is checked on real graph shapes.
"""

from __future__ import annotations

import threading

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.core import Completion, GenerationRequest
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from orchestrator.streaming import RunStreams, StreamingDispatcher, stream_plan
from tests.fakes import FakeDispatcher
from workers.backends.fake import FakeBackend
from workers.dispatch import LocalDispatcher
from workers.pool import ModelPool

pytestmark = pytest.mark.unit


class Recorder:
    """A TokenStream that keeps every update (cumulative texts) per question."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.updates: dict[str, list[str]] = {}
        self.decisions = []
        self.cancel_after = cancel_after
        self._lock = threading.Lock()

    def update(self, question_id: str, text: str) -> None:
        with self._lock:
            self.updates.setdefault(question_id, []).append(text)

    def routed(self, decision) -> None:
        self.decisions.append(decision)

    def cancelled(self, question_id: str) -> bool:
        return self.cancel_after is not None and len(self.updates.get(question_id, [])) >= self.cancel_after


def _pipeline(experts: list[str], aggregator: str = "synthesis", name: str = "p") -> Pipeline:
    return Pipeline.from_dict({
        "name": name,
        "nodes": [{"name": "input", "type": "input"},
                  {"name": "router", "type": "router", "params": {"router": "fixed", "experts": experts}},
                  {"name": "experts", "type": "experts"},
                  {"name": "aggregate", "type": "aggregator", "params": {"aggregator": aggregator}},
                  {"name": "output", "type": "output"}],
        "edges": [{"from": "input.questions", "to": "router.questions"},
                  {"from": "input.questions", "to": "experts.questions"},
                  {"from": "router.decisions", "to": "experts.decisions"},
                  {"from": "input.questions", "to": "aggregate.questions"},
                  {"from": "experts.answers", "to": "aggregate.answers"},
                  {"from": "aggregate.final", "to": "output.final"}]})


@pytest.fixture
def fake_orch():
    """An orchestrator factory over a pool of streaming FakeBackends (every model of the default registry)."""
    registry = ExpertRegistry.default()
    backends: dict[str, FakeBackend] = {}

    def factory(spec):
        backends[spec.name] = FakeBackend(spec)
        return backends[spec.name]

    pool = ModelPool(registry.models, budget_gib=100, backend_factory=factory)

    def make(pipeline: Pipeline) -> Orchestrator:
        return Orchestrator(registry, pipeline, dispatcher=LocalDispatcher(pool))

    make.backends = backends
    return make


@pytest.mark.parametrize("name, expected", [
    ("symbolic-moe", {"aggregate", "experts"}),  # synthesis generates; passes single answers through
    ("coe", {"aggregate", "experts"}),
    ("ensemble-vote", set()),                     # a vote generates nothing: its answer comes whole
])
def test_stream_plan_of_builtin_pipelines(name, expected):
    assert stream_plan(Pipeline.load(name).compile()) == expected


def test_single_expert_tokens_stream_and_end_as_the_answer(fake_orch):
    orch = fake_orch(_pipeline(["generalist"]))
    rec = Recorder()
    (result,) = orch.run(["What is six times seven"], stream=rec)
    texts = rec.updates["q0"]
    assert len(texts) > 3, "one update per word, not one at the end"
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])), "updates are cumulative"
    assert texts[-1].strip() == result.answer
    assert [d.names for d in rec.decisions] == [["generalist"]]


def test_synthesis_tokens_stream_not_the_experts(fake_orch):
    orch = fake_orch(_pipeline(["generalist", "coder"]))
    rec = Recorder()
    (result,) = orch.run(["What is six times seven"], stream=rec)
    assert rec.updates["q0"][-1].strip() == result.answer
    # the fake echoes its prompt: the synthesis answer lists the responses, an expert's does not
    assert "Response 2:" in result.answer
    assert all(result.answer.startswith(t.strip()) for t in rec.updates["q0"]), "expert answers never reach the stream"


def test_vote_streams_nothing_during_the_run(fake_orch):
    orch = fake_orch(_pipeline(["generalist", "coder"], aggregator="vote"))
    rec = Recorder()
    (result,) = orch.run(["What is six times seven"], stream=rec)
    assert rec.updates == {} and result.answer


def test_merged_run_routes_each_question_to_its_own_stream(fake_orch):
    orch = fake_orch(_pipeline(["generalist"]))
    a, b = Recorder(), Recorder()
    results = orch.run(["first question here", "second question here"], stream=RunStreams({"q0": a, "q1": b}))
    assert a.updates["q0"][-1].strip() == results[0].answer
    assert b.updates["q1"][-1].strip() == results[1].answer
    assert "q1" not in a.updates and "q0" not in b.updates


def test_cancelled_question_stops_and_the_other_finishes(fake_orch):
    orch = fake_orch(_pipeline(["generalist"]))
    stopped, kept = Recorder(cancel_after=2), Recorder()
    results = orch.run(["one two three four five six", "alpha beta gamma delta"],
                       stream=RunStreams({"q0": stopped, "q1": kept}))
    assert len(stopped.updates["q0"]) == 2, "no update after the client gave up"
    assert "six" not in results[0].answer, "its generation stopped early"
    assert kept.updates["q1"][-1].strip() == results[1].answer
    assert results[1].answer.endswith("alpha beta gamma delta")


def test_streaming_dispatcher_skips_cancelled_questions_and_sends_whole_answers_without_streaming():
    inner = FakeDispatcher(reply=lambda r: f"answer to {r.key}")  # no `streams`: answers come whole
    rec = Recorder(cancel_after=0)  # every question counts as cancelled...
    rec.cancel_after = None
    gone = {"q1"}
    rec.cancelled = lambda qid: qid in gone
    hub = RunStreams({"q0": rec, "q1": rec, "q2": rec})
    wrapped = StreamingDispatcher(inner, hub, "run1")
    reqs = [GenerationRequest(key=f"run1/{q}/expert/e{i}", model="m", prompt="hi")
            for q, n in (("q0", 1), ("q1", 1), ("q2", 2)) for i in range(n)]
    done = wrapped.run_batches({"m": reqs})
    assert done["run1/q1/expert/e0"] == Completion(key="run1/q1/expert/e0", model="m", text="", finish_reason="cancelled")
    assert inner.batches == [("experts", "m", 3)], "the cancelled question's request was never sent"
    assert rec.updates == {"q0": ["answer to run1/q0/expert/e0"]}, "q2 has two requests: neither is its answer"


def test_an_empty_delta_only_asks_whether_the_question_is_still_wanted():
    gone: set[str] = set()

    class Probing:  # a streaming dispatcher that probes before any token (the fleet's, for queued requests)
        streams = True
        answers: list[bool] = []

        def run_batches(self, groups, *, label="experts", progress=False, on_delta=None):
            (req,) = groups["m"]
            self.answers.append(on_delta(req.key, ""))
            gone.add("q0")  # its client leaves while the request is still queued
            self.answers.append(on_delta(req.key, ""))
            return {req.key: Completion(key=req.key, model="m", text="", finish_reason="cancelled")}

    rec = Recorder()
    rec.cancelled = lambda qid: qid in gone
    inner = Probing()
    done = StreamingDispatcher(inner, RunStreams({"q0": rec}), "run1").run_batches(
        {"m": [GenerationRequest(key="run1/q0/expert/e", model="m", prompt="hi")]})
    assert inner.answers == [True, False]
    assert rec.updates == {}, "a probe shows nothing"
    assert done["run1/q0/expert/e"].finish_reason == "cancelled"
