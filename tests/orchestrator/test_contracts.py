"""The importable contract checks (orchestrator.testing) on every registered node type, the
built-in aggregators, the model-free routers and the fake backend: what a plug-in author runs."""

from __future__ import annotations

import pytest

from orchestrator.config import ExpertRegistry, ModelSpec
from orchestrator.context import RunContext
from orchestrator.core import NODE_TYPES, AGGREGATORS, ROUTERS, Aggregated, ExpertAnswer, RoutingDecision
from orchestrator.testing import (
    FakeDispatcher,
    check_aggregator,
    check_backend,
    check_node,
    check_router,
    contract_questions,
)
from workers.backends.fake import FakeBackend

pytestmark = pytest.mark.unit

NODE_PARAMS = {"router": {"router": "fixed", "experts": ["generalist", "coder"]}, "aggregator": {"aggregator": "vote"},
               "token_fusion": {"max_tokens": 4}, "latent_fusion": {"fuser": None, "max_tokens": 4}}


@pytest.fixture(autouse=True)
def fake_fusion_models(monkeypatch):
    """Fused-group nodes run tiny random LMs (tests/workers/fusion_fakes.py), not the real models."""
    import workers.fusion.lm as lm_mod
    from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm

    made: dict = {}
    monkeypatch.setattr(lm_mod, "load_lm", lambda spec, device="auto": made.setdefault(
        spec.name, fake_lm(fake_byte_bpe(), name=spec.name, seed=len(made))))


def ctx() -> RunContext:
    return RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher(), run_id="c")


def sample_inputs() -> dict[str, list]:
    qs = contract_questions()
    decisions = [RoutingDecision.model_validate({"question_id": q.id, "router": "fixed",
                                                 "experts": [{"name": "generalist", "score": 1.0}]}) for q in qs]
    answers = [[ExpertAnswer(expert="generalist", model="smollm2-135m", text="Answer: 36", score=1.0)] for _ in qs]
    finals = [Aggregated(answer="36", aggregator="vote", confidence=c) for c in (1.0, 0.3, 0.9, 0.0)]
    return {"questions": qs, "decisions": decisions, "answers": answers, "final": finals, "references": answers,
            "subquestions": [[q] for q in qs], "subanswers": [[a] for a in answers]}


@pytest.mark.parametrize("name", [n for n in NODE_TYPES.names() if n not in ("input", "output")])
def test_every_node_type_keeps_the_node_contract(name):
    node = NODE_TYPES.get(name)(name=name, **NODE_PARAMS.get(name, {}))
    declared, _outputs, optional = node.ports()
    pool = sample_inputs()
    inputs = {}
    for port, spec in declared.items():
        if port in optional:
            continue
        inputs[port] = pool["sub" + spec.name] if spec.children else pool[spec.name]
    check_node(node, ctx(), inputs)


@pytest.mark.parametrize("name", ["vote", "synthesis"])
def test_builtin_aggregators_keep_the_aggregator_contract(name):
    check_aggregator(AGGREGATORS.get(name)(), ctx())


@pytest.mark.parametrize("name,params", [("keyword", {"k": 2}), ("fixed", {"experts": ["generalist", "coder"]})])
def test_model_free_routers_keep_the_router_contract(name, params):
    check_router(ROUTERS.get(name)(**params), ctx())


def test_fake_backend_keeps_the_backend_contract():
    backend = FakeBackend(ModelSpec(name="fake-model", backend="fake", path="x"), answers=lambda r, i: f"sample {i}")
    backend.load()
    check_backend(backend)


def test_a_broken_aggregator_is_named():
    class Short:
        name = "short"

        def config(self):
            return {}

        def aggregate(self, items, ctx):
            return []

    with pytest.raises(AssertionError, match="0 results for 4 items"):
        check_aggregator(Short(), ctx())
