"""Confidence-aware skill scoring and the learned kNN predictor on hand-made tables (fakes, no models)."""

from collections import Counter

import numpy as np
import pytest

from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import Question
from routers.skill import SkillRouter
from skills.learned import KnnPredictor, correctness_matrix
from skills.scoring import (DeclaredPrior, SkillSimilarity, base_accuracy, build_counts, load_skill_categories,
                            rescale_cosine, smoothed_scores, softmax_weights)
from tests.fakes import FakeDispatcher
from tests.skills.fake_fleet import fake_registry

pytestmark = pytest.mark.unit

NO_DECLARED = DeclaredPrior({"a": 0.5, "b": 0.5}, lambda e, kws: [0.0] * len(kws))


def rows_for(table):
    """``{(expert, keyword): [bools]}`` -> correctness rows, one question per answer."""
    out = []
    for (e, kw), answers in table.items():
        out += [{"id": f"{kw}{i}", "expert": e, "keywords": [kw], "correct": ok} for i, ok in enumerate(answers)]
    return out


def test_counts_and_laplace_base():
    rows = rows_for({("a", "algebra"): [True, True, False], ("b", "algebra"): [False]})
    assert build_counts(rows, ["a", "b", "c"]) == {"a": {"algebra": (2, 3)}, "b": {"algebra": (0, 1)}, "c": {}}
    assert base_accuracy(rows, ["a", "b", "c"]) == {"a": 3 / 5, "b": 1 / 3, "c": 0.5}


def test_one_lucky_answer_does_not_beat_many_good_ones():
    # paper scoring: a's single correct answer (+1) ties b's 6 of 10 (+2)... and beats b's 55 of 100 (+10)? no:
    # the posterior ranks a well-measured 70% over a lucky 1 of 1
    counts = {"a": {"x": (1, 1)}, "b": {"x": (70, 100)}}
    s = smoothed_scores(counts, ["a", "b"], ["x"], NO_DECLARED, strength=8.0, lift=0.5)
    assert s[1] > s[0]
    assert s[0] == pytest.approx((1 + 8 * 0.5) / 9)


def test_unseen_keyword_falls_back_to_declared_expertise():
    prior = DeclaredPrior({"a": 0.4, "b": 0.4}, lambda e, kws: [1.0 if e == "b" else 0.0] * len(kws))
    s = smoothed_scores({}, ["a", "b"], ["never profiled"], prior, strength=8.0, lift=0.5)
    assert s[0] == pytest.approx(0.4) and s[1] == pytest.approx(0.4 + 0.6 * 0.5)


def test_evidence_overrides_the_prior_when_strong():
    prior = DeclaredPrior({"a": 0.5, "b": 0.5}, lambda e, kws: [1.0 if e == "b" else 0.0] * len(kws))
    weak = smoothed_scores({"a": {"x": (2, 2)}}, ["a", "b"], ["x"], prior, strength=8.0, lift=0.5)
    strong = smoothed_scores({"a": {"x": (95, 100)}, "b": {"x": (30, 100)}}, ["a", "b"], ["x"], prior,
                             strength=8.0, lift=0.5)
    assert weak[1] > weak[0] and strong[0] > strong[1]


def test_softmax_and_rescale():
    w = softmax_weights(np.array([0.6, 0.5]), 0.1)
    assert w.sum() == pytest.approx(1) and w[0] / w[1] == pytest.approx(np.e)
    np.testing.assert_allclose(rescale_cosine(np.array([0.1, 0.35, 1.0])), [0, 0, 1])


def test_declared_similarity_uses_categories_and_skills():
    emb = {"percentages": [1, 0], "arithmetic": [0, 1], "poetry": [0.6, 0.8]}
    sim = SkillSimilarity({"math": ["arithmetic"], "poet": []}, lambda ts: np.array([emb[t] for t in ts], float),
                          categories={"math": ["math"], "poet": ["writing"]},
                          keyword_categories={"percentages": {"math"}, "poetry": {"writing"}})
    assert sim("math", ["percentages", "arithmetic"]) == [1.0, 1.0]  # category, exact skill
    assert sim("poet", ["poetry", "percentages"]) == [1.0, 0.0]
    assert 0 < sim("math", ["poetry"])[0] < 1  # cosine 0.8 rescaled


def test_shipped_skill_categories_cover_math_words():
    cats = load_skill_categories()
    assert "math" in cats["percentages"] and "code" in cats["python"] and "law" in cats["contract law"]


def test_knn_predicts_per_region_and_falls_back_to_prior_far_away():
    X = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.14, 0.99, 0]], dtype=np.float32)
    Y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    knn = KnnPredictor(neighbours=2, strength=1.0, tau=0.1).fit(X, Y)
    P = knn.predict(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32), np.full((3, 2), 0.3))
    assert P[0, 0] > 0.6 > P[0, 1] and P[1, 1] > 0.6 > P[1, 0]
    np.testing.assert_allclose(P[2], [0.3, 0.3], atol=1e-3)  # nothing near: the prior


def test_knn_ignores_unanswered_cells_and_bad_settings_raise():
    rows = [{"id": "q1", "expert": "a", "correct": True}, {"id": "q2", "expert": "b", "correct": False}]
    Y = correctness_matrix(rows, ["q1", "q2"], ["a", "b"])
    assert np.isnan(Y[0, 1]) and Y[0, 0] == 1 and Y[1, 1] == 0
    P = KnnPredictor(neighbours=2, strength=1.0).fit(np.eye(2, dtype=np.float32), Y).predict(
        np.eye(2, dtype=np.float32)[:1], np.full((1, 2), 0.5))
    assert P[0, 0] > 0.5 and P[0, 1] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ConfigError, match="neighbours >= 1"):
        KnnPredictor(neighbours=0)


# ---- the skill router's smoothed and learned scoring on a fake registry -----------------------
def table_rows():
    # alpha (m1) right on algebra, gamma (m2) right on history; beta shares alpha's model
    out = []
    for i in range(20):
        for topic in ("algebra", "history"):
            for e in ("alpha", "beta", "gamma"):
                ok = (e in ("alpha", "beta")) == (topic == "algebra")
                out.append({"id": f"{topic}{i}", "expert": e, "keywords": [topic], "correct": ok})
    return out


def fake_ctx():
    return RunContext(registry=fake_registry(), dispatcher=FakeDispatcher(), seed=0)


def test_smoothed_router_follows_evidence_and_declared_skill_breaks_ties():
    r = SkillRouter(k=1, scoring="smoothed")
    r.set_rows(table_rows())
    r.set_similarity(lambda e, kws: [1.0 if e == "beta" else 0.0] * len(kws))  # beta declares everything
    qs = [Question(id=f"q{i}", text="t") for i in range(40)]
    algebra = r.route_keywords(qs, [["algebra"]] * 40, fake_ctx())
    history = r.route_keywords(qs, [["history"]] * 40, fake_ctx())
    # alpha and beta share the evidence; beta's declared skill puts it first on algebra
    assert sum(d.names == ["beta"] for d in algebra) > 30
    assert sum(d.names == ["gamma"] for d in history) > 30
    unseen = r.route_keywords(qs, [["poetry"]] * 40, fake_ctx())
    assert sum(d.names == ["beta"] for d in unseen) > 30  # no evidence: the declared prior decides


def test_smoothed_router_needs_rows_not_net_profiles():
    with pytest.raises(ConfigError, match="set_rows"):
        SkillRouter(scoring="smoothed").set_profiles({"alpha": {"x": 1}})


def test_learned_scoring_routes_by_question_embedding():
    rows = table_rows()
    questions = {r["id"]: r["id"].rstrip("0123456789") for r in rows}  # "algebra" / "history"
    vec = {"algebra": [1.0, 0.0], "history": [0.0, 1.0]}
    r = SkillRouter(k=1, scoring="learned", tau=0.05)
    r.set_rows(rows, questions=questions)
    r._scorer.encoder = lambda texts: np.array([vec[t] for t in texts], dtype=np.float32)
    r.set_similarity(lambda e, kws: [0.0] * len(kws))
    qs = [Question(id=f"h{i}", text="history") for i in range(30)]
    ds = r.route_keywords(qs, [[]] * 30, fake_ctx(), vectors=r.encode([q.text for q in qs]))
    assert sum(d.names == ["gamma"] for d in ds) > 25


class FakeTopics:
    """A stand-in for the category router's classifier: every question is ``writing`` at 0.9."""

    class model:
        classes = ["math", "writing"]

    def probabilities(self, texts):
        return np.tile([0.1, 0.9], (len(texts), 1)), ["fake"] * len(texts)


def test_topic_prior_moves_a_question_to_the_expert_of_its_field():
    ctx = fake_ctx()
    ctx.registry.experts["gamma"].categories = ["writing"]
    ctx.registry.experts["alpha"].categories = ["math"]
    qs = [Question(id=f"q{i}", text="write me an essay about algebra") for i in range(40)]
    picks = {}
    for topic in (0.0, 1.0):
        r = SkillRouter(k=1, scoring="smoothed", topic=topic)
        r.set_rows(table_rows())
        r.set_similarity(lambda e, kws: [0.0] * len(kws))
        r._topic_router = FakeTopics()
        ds = r.route_keywords(qs, [["algebra"]] * 40, ctx)
        picks[topic] = Counter(d.names[0] for d in ds)
        if topic:
            assert any("topic writing (0.90)" in n for n in ds[0].notes) and ds[0].category == "writing"
    assert picks[0.0]["gamma"] < 5  # the algebra evidence alone: alpha / beta
    assert picks[1.0]["gamma"] > 28  # + 1.0 x P(writing) = 0.9 for the writer: ~0.8 of the draws at tau 0.05


def test_topic_prior_is_refused_with_the_paper_scoring():
    with pytest.raises(ConfigError, match="topic"):
        SkillRouter(scoring="paper", topic=0.5)
