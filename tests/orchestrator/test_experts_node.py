"""The experts node: token caps, repeated draws as weight or as self-consistency samples (fakes only)."""

from __future__ import annotations

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Budget, Completion, ExpertChoice, Question, RoutingDecision
from orchestrator.errors import PipelineValidationError
from orchestrator.nodes import ExpertsNode

pytestmark = pytest.mark.unit


class SamplingFake:
    """Records requests; returns one text per requested sample."""

    def __init__(self) -> None:
        self.requests = []

    def run_batches(self, groups, *, label="experts", progress=False):
        out = {}
        for reqs in groups.values():
            for r in reqs:
                self.requests.append(r)
                texts = [f"Answer: {i}" for i in range(r.sampling.n)]
                out[r.key] = Completion(key=r.key, model=r.model, text=texts[0], texts=texts, completion_tokens=4 * r.sampling.n)
        return out

    def model_loads(self):
        return {}

    def close(self):
        pass


def run(node, budget=None, draws=("math-tutor", "math-tutor", "generalist")):
    fake = SamplingFake()
    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=fake, run_id="r", budget=budget)
    d = RoutingDecision(question_id="q", router="fixed", experts=[ExpertChoice(name=e, score=0.5) for e in draws])
    answers = node.run(ctx, questions=[Question(id="q", text="What is 6*7?")], decisions=[d])["answers"][0]
    return fake.requests, answers


def test_a_repeated_draw_adds_weight_by_default():
    reqs, answers = run(ExpertsNode("experts"))
    assert len(reqs) == 2 and all(r.sampling.n == 1 and r.sampling.temperature == 0 for r in reqs)
    assert [(a.expert, a.score) for a in answers] == [("math-tutor", 1.0), ("generalist", 0.5)]


def test_repeats_sample_draws_the_expert_twice_at_temperature():
    reqs, answers = run(ExpertsNode("experts", repeats="sample", sample_temperature=0.8))
    tutor = next(r for r in reqs if "math-tutor" in r.key)
    assert tutor.sampling.n == 2 and tutor.sampling.temperature == 0.8
    assert [(a.expert, a.text, a.score) for a in answers] == [
        ("math-tutor", "Answer: 0", 0.5), ("math-tutor", "Answer: 1", 0.5), ("generalist", "Answer: 0", 0.5)]


def test_samples_is_self_consistency_for_every_expert():
    reqs, answers = run(ExpertsNode("experts", samples=3), draws=("math-tutor",))
    assert reqs[0].sampling.n == 3 and len(answers) == 3 and {a.text for a in answers} == {"Answer: 0", "Answer: 1", "Answer: 2"}


def test_budgets_are_caps_the_smallest_wins():
    reg = ExpertRegistry.default()
    own = reg.expert("math-tutor").sampling.max_tokens
    reqs, _ = run(ExpertsNode("experts", max_tokens=own * 10))
    assert {r.sampling.max_tokens for r in reqs if "math-tutor" in r.key} == {own}  # a node cannot raise it
    reqs, _ = run(ExpertsNode("experts", max_tokens=100), budget=Budget(max_tokens=50))
    assert {r.sampling.max_tokens for r in reqs} == {50}


def test_bad_params_are_rejected():
    with pytest.raises(PipelineValidationError, match="unknown repeats"):
        ExpertsNode("experts", repeats="twice")
    with pytest.raises(PipelineValidationError, match="samples must be >= 1"):
        ExpertsNode("experts", samples=0)
