"""Skill router on real parts: the shipped default profiles, the real MiniLM embedding model, and
the recorded correctness table of the real profiling run (skills/data/default_profiles)."""

import time

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Question
from routers.base import make_router
from routers.skill import DEFAULT_PROFILES, SkillRouter
from skills.profile_eval import evaluate_router
from skills.profiles import read_rows
from workers.dispatch import LocalDispatcher
from workers.pool import ModelPool

pytestmark = pytest.mark.integration


def real_ctx(seed=0):
    reg = ExpertRegistry.default()
    # the embedding extractor never calls a model: this pool stays empty (nothing loads)
    return RunContext(registry=reg, dispatcher=LocalDispatcher(ModelPool(reg.models)), seed=seed)


def test_router_recovers_the_better_experts_on_the_recorded_table():
    rows = read_rows(DEFAULT_PROFILES / "correctness.jsonl")
    assert len({r["expert"] for r in rows}) == 7
    # repeated random splits: profile on 70% of the questions, route the held-out 30%
    # the paper's scoring on its own recorded table (smoothed scoring is measured on the cross-source set below)
    reports = [evaluate_router(SkillRouter(scoring="paper"), rows, real_ctx(split), holdout=0.3, seed=split)
               for split in range(10)]
    routed = sum(r["routed"] for r in reports) / len(reports)
    rand = sum(r["random"] for r in reports) / len(reports)
    best = sum(r["best_single"] for r in reports) / len(reports)
    oracle = sum(r["oracle"] for r in reports) / len(reports)
    print(f"10 splits x {reports[0]['heldout_questions']} held-out questions: routed accuracy {routed:.3f} vs random "
          f"expert {rand:.3f}; best single expert on the profile part {best:.3f}; oracle {oracle:.3f}; "
          f"chosen (split 0): {reports[0]['chosen']}")
    assert routed > rand + 0.03


def test_default_router_routes_real_questions_quickly_and_deterministically():
    questions = [
        Question(id="gsm", text="A baker makes 24 muffins and sells 15. How many muffins are left?"),
        Question(id="med", text="Which nerve supplies the diaphragm?\nA. Phrenic\nB. Vagus\nC. Radial\nD. Ulnar"),
        Question(id="law", text="What does the doctrine of stare decisis require courts to do?"),
        Question(id="hist", text="Who was the first president of the United States?"),
    ]
    router = make_router("skill")
    ctx = real_ctx()
    router.warm_up(ctx)
    decisions = router.route(questions, ctx)
    batch = [Question(id=f"{q.id}-{i}", text=q.text) for i in range(5) for q in questions]
    t0 = time.perf_counter()
    router.route(batch, ctx)
    per_q = (time.perf_counter() - t0) / len(batch)
    print(f"skill router latency after warm-up: {per_q * 1000:.1f} ms/question; "
          + "; ".join(f"{d.question_id}: {d.skills} -> {d.names}" for d in decisions))
    assert per_q < 1.0
    assert all(d.skills and len(d.experts) == 3 and set(d.names) <= set(ctx.registry.experts) for d in decisions)
    assert {"arithmetic", "word problems", "counting", "mental math"} & set(decisions[0].skills)
    assert [d.names for d in router.route(questions, real_ctx())] == [d.names for d in decisions]


def test_percent_question_recruits_the_math_tutor_first():
    """The README's `expertmix ask "What is 15% of 240?"`: math skills, math-tutor first (real MiniLM)."""
    router = make_router("skill")
    ctx = real_ctx()
    router.warm_up(ctx)
    (d,) = router.route([Question(id="pct", text="What is 15% of 240?")], ctx)
    print(f"15% of 240: skills {d.skills} -> {d.names} {[e.score for e in d.experts]}")
    assert {"percentages", "arithmetic", "ratios", "fractions", "rates"} & set(d.skills)
    assert d.names[0] == "math-tutor" and "counsel" not in d.names
    paper = make_router("skill", scoring="paper")
    paper.warm_up(ctx)
    print(f"paper scoring on the same profiles: {paper.route([Question(id='pct', text='What is 15% of 240?')], ctx)[0].names}")


@pytest.mark.slow
def test_in_domain_first_on_the_cross_source_set():
    """Every 4th prompt of routers/data/eval/cross_source.jsonl (sources never trained or profiled on)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "routers" / "data" / "eval" / "cross_source.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[1::4] if line.strip()]
    ctx = real_ctx()
    cats = {e: spec.categories for e, spec in ctx.registry.experts.items()}
    results, multilingual = {}, [i for i, r in enumerate(rows) if r["source"] == "authored_multilingual"]
    for label, params in [("default", {}), ("no topic", {"topic": 0.0}), ("paper", {"scoring": "paper"})]:
        router = make_router("skill", **params)
        router.warm_up(ctx)
        decisions = router.route([Question(id=str(i), text=r["question"]) for i, r in enumerate(rows)], ctx)
        hits = [r["category"] in cats[d.names[0]] for r, d in zip(rows, decisions)]
        results[label] = sum(hits) / len(rows)
        results[label + " multilingual"] = sum(hits[i] for i in multilingual) / len(multilingual)
    print(f"in-domain expert first on {len(rows)} cross-source prompts: {results}")
    # whole file (docs/routers.md): default (topic 0.6) 0.772, no topic 0.609, paper 0.163
    assert results["default"] >= 0.70 and results["default"] > results["no topic"] + 0.08, results
    assert results["default multilingual"] >= 0.8, results  # 0.97 on the whole file
    assert results["no topic"] > results["paper"] + 0.15, results
