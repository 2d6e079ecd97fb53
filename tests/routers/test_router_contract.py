"""The contract every registered router passes (unit mode: fake embedder, fake dispatcher).

Parametrised over ``ROUTERS.names()`` (built-ins and plug-ins, all through entry points), so a
new router is tested the moment it registers. Routers that need constructor arguments list them in
``REQUIRED_PARAMS``.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import BudgetError, ConfigError, InputError, UnknownNameError
from orchestrator.core import Question
from routers.base import ROUTERS, Budget, RoutingDecision, make_router

pytestmark = pytest.mark.unit

REQUIRED_PARAMS = {"fixed": {"experts": ["generalist", "coder", "physician"]}}
K_PARAMS = {name: {"k": 3} for name in ("keyword", "skill", "category", "embedding", "learned")}
QUESTIONS = [
    "What is 15% of 240?",
    "Write a Python function that reverses a linked list.",
    "What are the symptoms of iron deficiency anemia?",
    "Write a short poem about the sea.",
]
ROUTER_NAMES = ROUTERS.names()


def build(name: str, **extra):
    params = {**REQUIRED_PARAMS.get(name, {}), **K_PARAMS.get(name, {}), **extra}
    return make_router(name, **params)


def questions() -> list[Question]:
    return [Question(id=f"q{i}", text=t) for i, t in enumerate(QUESTIONS)]


def route(router, ctx) -> list[RoutingDecision]:
    router.warm_up(ctx)
    return router.route(questions(), ctx)


def test_builtin_routers_registered():
    assert {"keyword", "category", "embedding"} <= set(ROUTER_NAMES)


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_one_decision_per_question_in_order(name, fake_ctx):
    decisions = route(build(name), fake_ctx)
    assert [d.question_id for d in decisions] == [q.id for q in questions()]
    for d in decisions:
        assert d.router == name
        assert d.experts, "a decision names at least one expert"
        assert all(e.name in fake_ctx.registry.experts for e in d.experts)


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_deterministic_under_a_seed(name, fake_ctx):
    first = [d.model_dump() for d in route(build(name), fake_ctx)]
    second = [d.model_dump() for d in route(build(name), fake_ctx)]
    assert first == second


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_honours_max_experts(name, fake_ctx):
    fake_ctx.budget = Budget(max_experts=1)
    for d in route(build(name), fake_ctx):
        assert len(d.experts) == 1


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_honours_max_cost(name, fake_ctx):
    fake_ctx.budget = Budget(max_cost=1.0)  # only the cost-1.0 experts of the default registry fit
    for d in route(build(name), fake_ctx):
        unique = set(d.names)
        assert sum(fake_ctx.registry.expert(n).cost for n in unique) <= 1.0 + 1e-9, d.names


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_impossible_budget_raises_budget_error(name, fake_ctx):
    fake_ctx.budget = Budget(max_cost=0.5)  # the cheapest expert costs 1.0
    with pytest.raises(BudgetError, match="raise max_cost"):
        route(build(name), fake_ctx)


@pytest.mark.parametrize("name", ROUTER_NAMES)
@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_question_is_rejected(name, text, fake_ctx):
    router = build(name)
    router.warm_up(fake_ctx)
    with pytest.raises(InputError, match="empty"):
        router.route([Question(id="bad", text=text)], fake_ctx)


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_config_round_trips_through_the_constructor(name):
    router = build(name)
    cfg = router.config()
    assert json.loads(json.dumps(cfg)) == cfg, "config() must be JSON-able"
    again = ROUTERS.get(name)(**cfg)
    assert again.config() == cfg


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_bad_k_is_a_config_error(name):
    if name not in K_PARAMS:
        pytest.skip(f"{name} has no k")
    with pytest.raises(ConfigError):
        build(name, k=0)


def test_unknown_router_name_lists_the_choices():
    with pytest.raises(UnknownNameError, match="category"):
        make_router("no-such-router")
