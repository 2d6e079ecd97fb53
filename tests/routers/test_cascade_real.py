"""The shipped category and embedding routers on the real encoders and the cross-source test set.

``routers/data/eval/cross_source.jsonl`` holds only sources the routers never trained on (see
``routers/data/SOURCES.md``): several languages, prompts up to ~14,000 characters. Floors are the
measured values (docs/routers.md, per-source table) minus a margin.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Question
from routers.base import make_router
from routers.category_train import classification_metrics
from routers.sources import EVAL_FILE, TRAIN_SOURCES, train_rows
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.integration

ROWS = [json.loads(line) for line in EVAL_FILE.read_text(encoding="utf-8").split("\n") if line.strip()]
# measured values (docs/routers.md) minus ~0.03: far below the 0.85 / 0.80 target, see there
ACCURACY_FLOOR, MACRO_F1_FLOOR = 0.70, 0.66  # measured 0.740 / 0.692 on 1,866 rows (cascade: e5 | static -> e5)
MULTILINGUAL_FLOOR = 0.85  # authored_multilingual (10 languages) measured 0.978 through the e5 stage


@pytest.fixture(scope="module")
def ctx(real_embedder) -> RunContext:
    return RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher())


@pytest.fixture(scope="module")
def cascade(ctx):
    router = make_router("category")
    assert router.encoder == "cascade"
    router.warm_up(ctx)
    return router


def test_test_set_sources_were_never_trained_on():
    assert not {r["source"] for r in ROWS} & set(TRAIN_SOURCES)
    train = {r.text.strip() for r in train_rows()}
    assert not [r["id"] for r in ROWS if r["question"].strip() in train]


@pytest.mark.slow
def test_cascade_on_sources_never_trained_on(cascade):
    probs, stages = cascade.probabilities([r["question"] for r in ROWS])
    m = classification_metrics([r["category"] for r in ROWS], cascade.categories_from_probs(probs))
    assert m["accuracy"] >= ACCURACY_FLOOR, m
    assert m["macro_f1"] >= MACRO_F1_FLOOR, m
    multi = [i for i, r in enumerate(ROWS) if r["source"] == "authored_multilingual"]
    english = [i for i in range(len(ROWS)) if i not in set(multi)]
    assert "minilm" not in stages  # e5 is the second stage
    assert 0.0 < sum(stages[i] == "e5" for i in english) / len(english) <= 0.75  # measured 0.57
    to_e5 = sum(stages[i] == "e5" for i in multi) / len(multi)
    assert to_e5 >= 0.9, f"only {to_e5:.0%} of the non-English prompts reached the multilingual stage"
    m = classification_metrics([ROWS[i]["category"] for i in multi],
                               cascade.categories_from_probs(probs[multi]))
    assert m["accuracy"] >= MULTILINGUAL_FLOOR, m


def test_the_e5_minilm_second_stage_averages_both_real_classifiers(ctx):
    """``cascade_encoder: e5+minilm`` on the real encoders, on FreshQA (open questions about the
    world, never trained on): measured 0.75 there vs 0.67 with e5 alone (docs/routers.md)."""
    rows = [r for r in ROWS if r["source"] == "freshqa"]
    texts = [r["question"] for r in rows]
    router = make_router("category", cascade_encoder="e5+minilm")
    router.warm_up(ctx)
    probs, stages = router.probabilities(texts)
    deep = [i for i, s in enumerate(stages) if s == "e5+minilm"]
    assert deep and set(stages) <= {"static", "e5+minilm", "e5"}
    sub = [texts[i] for i in deep[:8]]
    mean = (router.probabilities_with("e5", sub) + router.probabilities_with("minilm", sub)) / 2
    assert abs(probs[deep[:8]] - mean).max() < 1e-5
    m = classification_metrics([r["category"] for r in rows], router.categories_from_probs(probs))
    assert m["accuracy"] >= 0.68, m


def test_a_20000_character_prompt_routes_through_every_encoder(ctx):
    long = ("Here is the CSV export of our sales ledger. Which quarter had the highest revenue, and what "
            "is the year-over-year growth?\n" + "2023-04-02,EMEA,widget,19.99,3\n" * 700)
    assert len(long) > 20_000
    for name, params in [("category", {}), ("category", {"encoder": "minilm"}),                          ("embedding", {}), ("keyword", {})]:
        router = make_router(name, **params)
        router.warm_up(ctx)
        d = router.route([Question(id="long", text=long)], ctx)[0]
        assert d.experts, (name, params)


def test_a_second_opinion_from_a_real_local_model_decides_the_unsure_questions(real_pool, real_embedder):
    """``second_opinion`` on a real vLLM engine: threshold 1.0 makes every question unsure, so
    Qwen-Coder classifies each one zero-shot, in one batch, and its words decide the category.
    How accurate a 0.5B judge is was measured on the cross-source file (docs/routers.md: it does not
    beat routing the unsure ones to general); this shows the path works end to end."""
    from routers.category import parse_category
    from workers.dispatch import LocalDispatcher

    class Spy(LocalDispatcher):
        def __init__(self, pool):
            super().__init__(pool)
            self.batches: list[dict[str, str]] = []

        def run_batches(self, groups, **kw):
            out = super().run_batches(groups, **kw)
            self.batches.append({k: c.text for k, c in out.items()})
            return out

    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=Spy(real_pool))
    router = make_router("category", threshold=1.0, second_opinion="qwen-coder-0.5b")
    router.warm_up(ctx)
    qs = [Question(id="code", text="Write a Python function that reverses a linked list."),
          Question(id="math", text="Solve for x: 3x + 7 = 22."),
          Question(id="medicine", text="What is the first-line treatment for type 2 diabetes?")]
    decisions = router.route(qs, ctx)
    (said,) = ctx.dispatcher.batches  # one batch, one request per unsure question
    assert len(said) == 3
    for q, d in zip(qs, decisions):
        words = next(t for k, t in said.items() if f"/{q.id}/" in k)
        assert d.category == (parse_category(words, router.model.classes) or "general"), (words, d.notes)
        assert "second opinion from qwen-coder-0.5b" in " ".join(d.notes)
    print({q.id: d.category for q, d in zip(qs, decisions)})
