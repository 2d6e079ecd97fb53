"""Executor batching, SDK sync/async, budgets, bad input (fakes only)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import BudgetError, ConfigError, InputError
from orchestrator.executor import execute
from orchestrator.pipeline import Pipeline
from orchestrator.faces.sdk import Orchestrator
from orchestrator.core import Question, Result
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

QUESTIONS = ["What is 12 * 7?", "Write a Python function to reverse a string.", "What nerve innervates the diaphragm?",
             "Who painted the Mona Lisa?", "Solve 3x + 7 = 22.", "What is a tort?", "Why is the sky blue?",
             "Write a haiku about rain."]


def orch(pipeline="ensemble-vote", **kw):
    return Orchestrator(ExpertRegistry.default(), Pipeline.load(pipeline), dispatcher=FakeDispatcher(), **kw)


def test_run_groups_all_expert_calls_into_one_batch_per_model():
    o = orch()
    results = o.run(QUESTIONS)
    batches = o.dispatcher.batches
    models = [m for _, m, _ in batches]
    assert len(models) == len(set(models)), f"a model got more than one batch: {batches}"
    expected_calls = sum(len({e.name for e in r.experts}) for r in results)
    assert sum(n for _, _, n in batches) == expected_calls
    assert all(n == 1 for n in o.model_loads().values())
    assert results[0].model_loads == len(set(models))


def test_result_has_cli_json_keys():
    r = orch().ask("What is 12 * 7?")
    data = r.model_dump()
    assert {"answer", "experts", "aggregator", "model_loads", "trace"} <= set(data)
    assert isinstance(data["experts"], list) and data["experts"][0]["name"]
    assert isinstance(data["model_loads"], int)
    assert data["trace"]["timings"] and data["trace"]["answers"]


def test_async_and_sync_give_the_same_result():
    o = orch()
    sync = o.ask("What is 12 * 7?", id="x")
    async_ = asyncio.run(o.aask("What is 12 * 7?", id="x"))
    assert sync.answer == async_.answer and sync.experts == async_.experts


def test_sync_wrapper_works_inside_a_running_loop():
    async def inside() -> Result:
        return orch().ask("What is 12 * 7?")
    assert asyncio.run(inside()).answer == "84"


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_bad_questions_are_rejected_before_any_model_call(bad):
    o = orch()
    with pytest.raises(InputError, match="question"):
        o.ask(bad)
    assert o.dispatcher.batches == []


def test_a_20000_character_question_is_answered_not_rejected():
    sent = []
    o = Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"),
                     dispatcher=FakeDispatcher(lambda r: (sent.append(r), "Answer: 84")[1]))
    long = "Here is my server log; what does 12 * 7 come to?\n" + "GET /index.html 200 0.003s\n" * 760
    assert len(long) > 20_000
    assert o.ask(long).answer == "84"
    users = [r.messages[-1]["content"] if r.messages else r.prompt for r in sent]
    assert users and all("characters left out to fit" in u for u in users)  # 2k local models: cut, not refused
    assert all(u.startswith("Here is my server log") for u in users[:1])


def test_duplicate_ids_in_one_run():
    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher())
    with pytest.raises(ConfigError, match="ids repeat"):
        execute(Pipeline.load("ensemble-vote"), [Question(id="a", text="x y"), Question(id="a", text="y z")], ctx)


def test_budget_caps_experts_and_cost():
    o = orch()
    r = o.ask("Write a Python function to reverse a string.", budget={"max_experts": 1})
    assert len(r.experts) == 1
    r = o.ask("Write a Python function to reverse a string.", budget={"max_cost": 2.0})
    reg = ExpertRegistry.default()
    assert sum(reg.expert(e.name).cost for e in r.experts) <= 2.0
    with pytest.raises(BudgetError, match="raise max_cost"):
        o.ask("Write a Python function", budget={"max_cost": 0.5})


def test_unknown_expert_in_fixed_router():
    reg = ExpertRegistry.default()
    p = Pipeline.load("ensemble-vote").to_dict()
    p["nodes"][1]["params"] = {"router": "fixed", "experts": ["nobody"]}
    o = Orchestrator(reg, Pipeline.from_dict(p), dispatcher=FakeDispatcher())
    with pytest.raises(ConfigError, match=r"unknown expert 'nobody'.*use one of: coder"):
        o.ask("hello there")


def test_close_releases_dispatcher():
    with orch() as o:
        o.ask("hello there")
    assert o.dispatcher.closed


def test_run_level_notes_reach_every_trace():
    """A fallback a component records on the run context (ctx.notes) is visible in the trace."""
    from routers.base import ROUTERS
    from routers.keyword import FixedRouter

    class NotingRouter(FixedRouter):
        def route(self, questions, ctx):
            ctx.notes.append("noting router: fell back to something")
            return super().route(questions, ctx)

    ROUTERS.add("test-noting", NotingRouter)
    p = Pipeline.load("ensemble-vote").to_dict()
    p["nodes"][1]["params"] = {"router": "test-noting", "experts": ["generalist"]}
    o = Orchestrator(ExpertRegistry.default(), Pipeline.from_dict(p), dispatcher=FakeDispatcher())
    results = o.run(["first question", "second question"])
    assert all("noting router: fell back to something" in r.trace.notes for r in results)
    assert o.ask("third question").trace.notes.count("noting router: fell back to something") == 1
