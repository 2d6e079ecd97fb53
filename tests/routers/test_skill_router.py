"""Skill router (Symbolic-MoE recruiting): scoring math on hand-computed profiles, sampling settings,
rare-expert replacement, no-keyword fallback, budget, config; no model runs here."""

from collections import Counter

import numpy as np
import pytest

from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import Question
from routers.base import Budget, make_router
from routers.skill import SkillRouter, global_scores, local_scores, recruit_weights
from tests.fakes import FakeDispatcher
from tests.skills.fake_fleet import fake_registry

pytestmark = pytest.mark.unit

EXPERTS = ["alpha", "beta", "gamma"]
# totals: alpha 1, beta 2, gamma -1 -> shifted (x - min + 1): 3, 4, 1 -> ** (1/0.5): 9, 16, 1 -> / 26
PROFILES = {
    "alpha": {"algebra": 2, "history": -1},
    "beta": {"algebra": -1, "history": 3},
    "gamma": {"algebra": 1, "history": -2},
}


def ctx(seed=0, budget=None):
    return RunContext(registry=fake_registry(), dispatcher=FakeDispatcher(), seed=seed, budget=budget)


def router(**kw):
    r = SkillRouter(scoring="paper", **kw)
    r.set_profiles(PROFILES)
    return r


def qs(n, prefix="q"):
    return [Question(id=f"{prefix}{i}", text=f"question {i}") for i in range(n)]


def test_global_scores_shift_power_normalise():
    np.testing.assert_allclose(global_scores(PROFILES, EXPERTS, 0.5), [9 / 26, 16 / 26, 1 / 26])
    # no negative total: no shift; T=1 is plain normalisation
    np.testing.assert_allclose(global_scores({"a": {"x": 1}, "b": {"x": 3}}, ["a", "b"], 1.0), [0.25, 0.75])


def test_local_scores_and_weights_keep_only_positive_local():
    local = local_scores(PROFILES, EXPERTS, ["algebra"])
    np.testing.assert_allclose(local, [2, -1, 1])
    glob = global_scores(PROFILES, EXPERTS, 0.5)
    np.testing.assert_allclose(recruit_weights(local, glob), [18 / 26, 0, 1 / 26])


def test_no_positive_local_shifts_all_positive():
    glob = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(recruit_weights(np.array([-1.0, -2.0, -3.0]), glob), [3 * 0.5, 2 * 0.25, 1 * 0.25])


def test_decision_scores_are_normalised_weights():
    (d,) = router().route_keywords(qs(1), [["algebra", "history"]], ctx())
    # local [1, 2, -1] -> weights [9, 32, 0] / 26 -> normalised 9/41, 32/41
    scores = {e.name: e.score for e in d.experts}
    assert set(scores) <= {"alpha", "beta"}
    assert scores.get("beta", round(32 / 41, 4)) == round(32 / 41, 4)
    assert d.confidence == round(32 / 41, 4) and d.skills == ["algebra", "history"]
    assert [e.score for e in d.experts] == sorted((e.score for e in d.experts), reverse=True)


def test_draws_follow_weights_with_replacement():
    decisions = router(k=1).route_keywords(qs(2000), [["algebra", "history"]] * 2000, ctx())
    freq = Counter(d.experts[0].name for d in decisions)
    assert set(freq) == {"alpha", "beta"}
    assert abs(freq["beta"] / 2000 - 32 / 41) < 0.03


def test_with_replacement_may_repeat_an_expert():
    (d,) = router(k=3).route_keywords(qs(1), [["history"]], ctx())
    assert d.names == ["beta", "beta", "beta"]  # only beta has local > 0


def test_without_replacement_draws_distinct_experts_among_positive():
    decisions = router(k=3, replacement=False).route_keywords(qs(50), [["algebra"]] * 50, ctx())
    for d in decisions:
        assert sorted(d.names) == ["alpha", "gamma"]  # beta's local is negative; only 2 candidates


def test_deterministic_under_seed_and_varies_across_seeds():
    kws = [["algebra", "history"]] * 40
    a = [d.names for d in router().route_keywords(qs(40), kws, ctx(seed=1))]
    b = [d.names for d in router().route_keywords(qs(40), kws, ctx(seed=1))]
    c = [d.names for d in router().route_keywords(qs(40), kws, ctx(seed=2))]
    assert a == b and a != c


def test_no_keywords_draws_uniformly_at_random_with_a_note():
    decisions = router(k=1).route_keywords(qs(600), [[]] * 600, ctx())
    freq = Counter(d.experts[0].name for d in decisions)
    assert set(freq) == set(EXPERTS) and min(freq.values()) > 150  # ~200 each, gamma's low prior ignored
    assert "no skill keywords" in decisions[0].notes[0] and decisions[0].skills == []


def test_rare_experts_replaced_by_frequent_ones_when_enabled():
    profiles = {"alpha": {"algebra": 5}, "beta": {"history": 5}, "gamma": {"poetry": 5}}
    keywords = [["history"]] * 39 + [["poetry"]]  # gamma is needed by 1 of 40 questions (< 5%)
    questions = qs(40)
    plain = SkillRouter(k=1, scoring="paper")
    plain.set_profiles(profiles)
    assert plain.route_keywords(questions, keywords, ctx())[-1].names == ["gamma"]
    swapping = SkillRouter(k=1, replace_rare=True, scoring="paper")
    swapping.set_profiles(profiles)
    decisions = swapping.route_keywords(questions, keywords, ctx())
    assert decisions[-1].names == ["beta"] and "gamma->beta" in decisions[-1].notes[-1]
    assert {n for d in decisions for n in d.names} == {"beta"}  # one model fewer to load


def test_budget_caps_the_number_of_experts():
    (d,) = router(k=3).route_keywords(qs(1), [["algebra", "history"]], ctx(budget=Budget(max_experts=1)))
    assert len(d.experts) == 1


def test_route_uses_the_extractor_and_maps_known_keywords():
    class FakeExtractor:
        name = "fake"

        def extract(self, questions, ctx):
            return [["History"] for _ in questions]

    r = router()
    r._extractor = FakeExtractor()
    (d,) = r.route(qs(1), ctx())
    assert d.skills == ["history"] and d.names == ["beta", "beta", "beta"] and d.router == "skill"


def test_registered_and_config_round_trip():
    r = make_router("skill", k=2, replacement=False, extractor="llm", extractor_model="m1", scoring="learned")
    again = make_router("skill", **r.config())
    assert again.config() == r.config() and r.config()["temperature"] == 0.5


@pytest.mark.parametrize(("kw", "match"), [({"k": 0}, "k must be an integer >= 1"), ({"temperature": 0}, "temperature"),
                                             ({"extractor": "tfidf"}, "unknown extractor 'tfidf'"),
                                             ({"scoring": "votes"}, "unknown scoring 'votes'"),
                                             ({"prior_lift": 2}, "prior_lift"), ({"tau": 0}, "tau")])
def test_bad_settings_raise(kw, match):
    with pytest.raises(ConfigError, match=match):
        SkillRouter(**kw)


def test_missing_profiles_dir_and_unprofiled_registry_raise_with_hint(tmp_path):
    with pytest.raises(ConfigError, match="expertmix profile"):
        SkillRouter(profiles=tmp_path).route(qs(1), ctx())
    r = SkillRouter(scoring="paper")
    r.set_profiles({"someone-else": {"x": 1}})
    with pytest.raises(ConfigError, match="none of the experts"):
        r.route(qs(1), ctx())
