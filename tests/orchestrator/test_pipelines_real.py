"""The branching built-ins on real vLLM engines (the shared session pool): ``moa``, ``cascade``
and ``decomp`` on two questions each. Answers are shortened (``max_tokens``) to keep CI small; the
graphs are the shipped ones. Each run loads every model at most once and sends each model one
batch per node."""

from __future__ import annotations

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Question
from orchestrator.executor import execute
from orchestrator.pipeline import Pipeline
from orchestrator.testing import RecordingDispatcher
from workers.dispatch import LocalDispatcher

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHORT = {"experts": {"max_tokens": 24}, "synthesis": {"max_tokens": 48}, "decompose": {"max_tokens": 48},
         "compose": {"max_tokens": 32}}


class SharedPool(LocalDispatcher):
    def close(self) -> None:  # the session pool is shared: never release it here
        pass


def shortened(name: str) -> Pipeline:
    data = Pipeline.load(name).to_dict()
    for node in data["nodes"]:
        params = node.setdefault("params", {})
        params.update(SHORT.get(params.get("aggregator", node["type"]), {}))
    return Pipeline.from_dict(data)


def run(real_pool, name: str, texts: list[str]):
    disp = RecordingDispatcher(SharedPool(real_pool))
    before = dict(real_pool.loads)
    questions = [Question(id=f"q{i}", text=t) for i, t in enumerate(texts)]
    results = execute(shortened(name).compile(), questions,
                      RunContext(registry=ExpertRegistry.default(), dispatcher=disp, run_id=f"real-{name}"))
    loads = {m: n - before.get(m, 0) for m, n in real_pool.loads.items()}
    assert all(n <= 1 for n in loads.values()), f"a model loaded twice in one run: {loads}"
    steps = [(label, model) for label, model, _ in disp.batches]
    assert len(steps) == len(set(steps)), f"a model got two batches in one node: {steps}"
    for r in results:
        assert r.status == "ok", r.error
        assert r.answer.strip() and r.trace.prompt_tokens > 0 and r.trace.completion_tokens > 0
    return results, disp


def test_moa_round_two_reads_round_one_on_real_engines(real_pool):
    results, disp = run(real_pool, "moa", ["What is 6 * 7?", "Name the largest planet in the solar system."])
    round1 = {(r.key.split("/")[1], r.model) for label, _, reqs in disp.batches if label == "round1" for r in reqs}
    assert round1, "round 1 ran"
    for res in results:
        first = next(s for s in res.trace.steps if s.node == "round1").part["answers"]
        second = next(s for s in res.trace.steps if s.node == "round2")
        assert second.part["references"] == len(first) and second.prompt_tokens > 0
        prompts = [r.messages[-1]["content"] if r.messages else r.prompt
                   for label, _, reqs in disp.batches if label == "round2" for r in reqs if f"/{res.id}/" in r.key]
        texts = [a["text"].strip() for a in first if a["text"].strip()]
        assert prompts and all(any(t[:40] in p for t in texts) for p in prompts), "round 2 saw round 1's answers"
        assert res.aggregator == "synthesis"


def test_cascade_escalates_only_unsure_questions_on_real_engines(real_pool):
    results, disp = run(real_pool, "cascade", ["What is 2 + 2?", "Write a haiku about rain."])
    escalated = []
    for res in results:
        step = next(s for s in res.trace.steps if s.node == "escalate")
        unsure = step.part["confidence"] < step.part["threshold"]
        assert step.part["escalated"] is unsure
        assert res.aggregator == ("synthesis" if unsure else "vote")
        assert ("synthesis" in {s.node for s in res.trace.steps}) is unsure
        escalated += [res.id] if unsure else []
    assert "q1" in escalated, "three sampled haikus never agree"
    cheap = [reqs for label, _, reqs in disp.batches if label == "cheap"]
    assert len(cheap) == 1 and len(cheap[0]) == 2 and cheap[0][0].sampling.n == 3
    routed = {r.key.split("/")[1] for label, _, reqs in disp.batches if label == "experts" for r in reqs}
    assert routed == set(escalated), "only the escalated questions reached the k=3 experts"


def test_decomp_answers_sub_questions_and_composes_on_real_engines(real_pool):
    results, disp = run(real_pool, "decomp", [
        "What is the capital of France, and what is 15% of 240?",
        "Write a Python function that adds two numbers, and explain what a function is."])
    for res in results:
        parts = next(s for s in res.trace.steps if s.node == "decompose").part["subquestions"]
        subs = [s.question for s in res.trace.steps if s.node == "experts"]
        assert subs == [f"{res.id}/{j + 1}" for j in range(len(parts))]
        assert all(s.level == 2 for s in res.trace.steps if s.node in ("router", "experts"))
        assert res.aggregator == "compose" and res.experts
    n_subs = sum(len(next(s for s in r.trace.steps if s.node == "decompose").part["subquestions"]) for r in results)
    assert sum(len(reqs) for label, _, reqs in disp.batches if label == "experts") == n_subs  # k=1 per sub-question
    assert [label for label, _, _ in disp.batches].count("decompose") == 1  # both questions: one batch
