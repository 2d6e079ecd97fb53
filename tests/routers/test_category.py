"""Category router: classifier, threshold fallback, category map, budgets, training (unit, fakes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError, InputError, ModelNotFoundError
from orchestrator.core import Question
from routers.base import Budget
from routers.category import (
    DEFAULT_MAP, CategoryModel, CategoryRouter, derive_category_map, load_category_map,
)
from routers.category_train import (
    Example, classification_metrics, fit, is_test, read_labelled_jsonl, stem, train_and_evaluate,
)

pytestmark = pytest.mark.unit

TAXONOMY = {"math", "code", "medicine", "science", "law", "business", "humanities", "writing", "general"}


def test_shipped_model_covers_the_taxonomy_and_is_small():
    model = CategoryModel.load(DEFAULT_MAP.parent)
    assert set(model.classes) == TAXONOMY
    assert model.weights.shape == (9, 384)
    assert 0 < model.meta["threshold"] < 1
    assert (DEFAULT_MAP.parent / "category_router.npz").stat().st_size < 300_000


def test_predict_proba_is_a_softmax():
    model = CategoryModel(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2))
    p = model.predict_proba(np.array([[3.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] > 0.9 and p[1, 0] == pytest.approx(0.5)


def test_save_load_round_trip(tmp_path):
    model = CategoryModel(["x", "y", "z"], np.random.default_rng(0).normal(size=(3, 4)), np.arange(3.0), {"threshold": 0.4})
    model.save(tmp_path)
    again = CategoryModel.load(tmp_path)
    assert again.classes == ["x", "y", "z"] and again.meta["threshold"] == 0.4
    assert np.allclose(again.weights, model.weights, atol=1e-2)  # float16 on disk


def test_missing_model_dir_says_how_to_train(tmp_path):
    with pytest.raises(ModelNotFoundError, match="train-router"):
        CategoryModel.load(tmp_path)


def test_low_confidence_goes_to_general(fake_ctx, monkeypatch):
    router = CategoryRouter(threshold=0.6, encoder="minilm")
    probs = np.full(9, 0.5 / 8)
    probs[router.model.classes.index("math")] = 0.5
    monkeypatch.setattr(router.model, "predict_proba", lambda X: np.tile(probs, (len(X), 1)))
    d = router.route([Question(id="q", text="What is 2 + 2?")], fake_ctx)[0]
    assert d.category == "general"
    assert d.names == ["generalist"]
    assert any("below the threshold" in n for n in d.notes)


def test_confident_category_maps_to_its_primary_expert(fake_ctx):
    router = CategoryRouter(k=2, threshold=0.0)
    probs = np.zeros((1, len(router.model.classes)))
    probs[0, router.model.classes.index("code")] = 0.9
    assert router.categories_from_probs(probs) == ["code"]
    mapping = load_category_map(DEFAULT_MAP, fake_ctx.registry)
    ranked, _ = router._ranked("code", {"code": 0.9}, mapping, fake_ctx.registry)
    assert [c.name for c in ranked[:2]] == ["coder", "math-tutor"]
    assert len(ranked) == len(fake_ctx.registry.experts)  # every expert is a last-resort fallback


def test_max_cost_skips_an_expensive_primary(fake_ctx, monkeypatch):
    router = CategoryRouter(k=1, threshold=0.0)
    probs = np.full(9, 0.1 / 8)
    probs[router.model.classes.index("code")] = 0.9
    monkeypatch.setattr(
        router, "_decide", lambda texts: (np.tile(probs, (len(texts), 1)), ["static"] * len(texts), np.zeros(len(texts), bool))
    )
    fake_ctx.budget = Budget(max_cost=1.0)  # coder costs 3.5
    d = router.route([Question(id="q", text="fix my python bug")], fake_ctx)[0]
    assert d.category == "code"
    assert fake_ctx.registry.expert(d.names[0]).cost <= 1.0


def test_category_map_file_is_checked_against_the_registry(tmp_path):
    reg = ExpertRegistry.default()
    bad = tmp_path / "map.yaml"
    bad.write_text("categories:\n  cooking: [chef]\n")
    with pytest.raises(ConfigError, match="cooking"):
        load_category_map(bad, reg)
    not_a_map = tmp_path / "list.yaml"
    not_a_map.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_category_map(not_a_map, reg)


def test_default_map_names_only_default_experts_and_all_categories():
    reg = ExpertRegistry.default()
    mapping = load_category_map(DEFAULT_MAP, reg)
    assert set(mapping) >= TAXONOMY
    assert mapping["medicine"][0] == "physician" and mapping["general"][0] == "generalist"
    derived = derive_category_map(reg)
    assert derived["code"] == ["coder"]


def test_bad_threshold_is_rejected():
    with pytest.raises(ConfigError, match="threshold"):
        CategoryRouter(threshold=1.5)


def test_metrics_accuracy_macro_f1_and_confusion():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 1], [0, 2]]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-4)


def test_split_is_by_item_id_and_stable():
    ids = [f"item/{i}" for i in range(2000)]
    share = sum(is_test(i) for i in ids) / len(ids)
    assert 0.15 < share < 0.25
    assert [is_test(i) for i in ids[:50]] == [is_test(i) for i in ids[:50]]


def test_stem_drops_the_choices():
    assert stem("Which organ?\nA. heart\nB. lung") == "Which organ?"


def test_fit_and_train_and_evaluate_on_separable_data(tmp_path, fake_embedder):
    rows = [Example(id=f"m{i}", text=f"add numbers sum plus {i}", category="math", source="t") for i in range(40)]
    rows += [Example(id=f"c{i}", text=f"python code function bug {i}", category="code", source="t") for i in range(40)]
    model, report = train_and_evaluate(rows, tmp_path, threshold=0.0)
    assert report["test"]["accuracy"] >= 0.9
    assert (tmp_path / "category_router.npz").exists()
    router = CategoryRouter(model_dir=tmp_path, threshold=0.0)
    assert router.classify(["python code function"])[0] == ["code"]
    with pytest.raises(ConfigError):
        fit(np.zeros((3, 4)), ["a", "a", "a"])


def test_read_labelled_jsonl_rejects_bad_lines(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text(json.dumps({"id": "1", "question": "hi", "category": "general"}) + "\n\n")
    assert read_labelled_jsonl(good)[0].category == "general"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no label"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        read_labelled_jsonl(bad)


def _unsure(router, monkeypatch, top="code", p=0.3):
    probs = np.full(9, (1 - p) / 8)
    probs[router.model.classes.index(top)] = p
    monkeypatch.setattr(
        router, "_decide", lambda texts: (np.tile(probs, (len(texts), 1)), ["static"] * len(texts), np.zeros(len(texts), bool))
    )


def test_a_second_opinion_routes_the_unsure_questions_by_the_llms_answer(fake_embedder, registry, monkeypatch):
    from orchestrator.testing import FakeDispatcher

    said = {"q0": "Math.", "q1": "I cannot tell"}
    disp = FakeDispatcher(lambda r: said[r.key.split("/")[-2]])
    ctx = RunContext(registry=registry, dispatcher=disp, seed=0)
    router = CategoryRouter(k=1, threshold=0.4, second_opinion="qwen-coder-0.5b")
    _unsure(router, monkeypatch)
    router.warm_up(ctx)
    d0, d1 = router.route([Question(id="q0", text="what is 2+2"), Question(id="q1", text="hmm")], ctx)
    assert d0.category == "math" and "second opinion from qwen-coder-0.5b: math" in " ".join(d0.notes)
    assert d1.category == "general" and "named no category" in " ".join(d1.notes)
    assert disp.batches == [("route", "qwen-coder-0.5b", 2)]  # one batch for every unsure question


def test_no_second_opinion_is_asked_for_confident_questions_or_an_unknown_model(fake_embedder, registry, monkeypatch):
    from orchestrator.errors import UnknownNameError
    from orchestrator.testing import FakeDispatcher

    disp = FakeDispatcher(lambda r: "math")
    ctx = RunContext(registry=registry, dispatcher=disp, seed=0)
    router = CategoryRouter(k=1, threshold=0.4, second_opinion="qwen-coder-0.5b")
    _unsure(router, monkeypatch, p=0.9)
    assert router.route([Question(id="q", text="fix my python bug")], ctx)[0].category == "code"
    assert disp.batches == []
    with pytest.raises(UnknownNameError):
        CategoryRouter(second_opinion="gpt-17").warm_up(ctx)
