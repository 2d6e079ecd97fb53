"""Correct answers on the real parts: the default pipeline and `expertmix eval` on real vLLM engines.

A test that checks only the shape of an answer does not show a pipeline works, so these grade the
answers (``skills.grading``) to questions whose answers are certain. Shares the session's engines
(``real_pool``); the eval test releases them first to count the loads it causes.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.core import Budget
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from skills.grading import is_correct
from workers.dispatch import LocalDispatcher

pytestmark = pytest.mark.integration

# (question, gold, answer type, a category the first recruited expert must cover)
CERTAIN = [
    ("What is 15% of 240?", "36", "number", "math"),
    ("What is 7 * 8?", "56", "number", "math"),
    ("Solve for x: 3x + 7 = 22.", "5", "number", "math"),
    ("What is 144 divided by 12?", "12", "number", "math"),
    ("Water boils at what temperature in degrees Celsius at sea level?", "100", "number", None),
]


def test_the_default_pipeline_answers_certain_questions_correctly_with_math_experts(real_pool):
    registry = ExpertRegistry.default()
    orch = Orchestrator(registry, Pipeline.load("symbolic-moe"), dispatcher=LocalDispatcher(real_pool))
    results = orch.run([q for q, *_ in CERTAIN])
    wrong = [(q, r.answer[-160:]) for (q, gold, kind, _), r in zip(CERTAIN, results) if not is_correct(r.answer, gold, kind)]
    assert not wrong, wrong
    for (q, _, _, category), r in zip(CERTAIN, results):
        if category:
            first = registry.expert(r.experts[0].name)
            assert category in first.categories, (q, [e.name for e in r.experts])
        assert r.trace.skills, q


def test_eval_runs_pipeline_and_experts_with_each_model_loaded_once(real_pool, tmp_path):
    """`expertmix eval`'s engine on real models: a pipeline and three single experts (one per
    model) on user items; no model loads twice for all systems, answers are graded, the math
    expert gets the arithmetic right, and the summary has every system."""
    from skills.eval_summary import summarize
    from skills.evaluation import evaluate, load_items, make_systems, read_rows

    # the engines stay warm (a cold start of all three is counted in test_e2e_real.py): whatever is
    # resident already, the run may load each model at most once and must never reload one
    before = dict(real_pool.loads)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "mul", "question": "What is 7 * 8?", "answer": "56", "answer_type": "numeric"},
        {"id": "pct", "question": "What is 15% of 240?", "answer": "36", "answer_type": "numeric"},
        {"id": "sky", "question": "Is the sky blue on a clear day?", "answer": "yes", "answer_type": "boolean"},
    ]))
    registry = ExpertRegistry.default()
    items = load_items((), [data])
    systems = make_systems(["symbolic-moe"], ["math-tutor", "generalist", "encyclopedia"], registry)
    out = tmp_path / "answers.jsonl"
    stats = evaluate(items, systems, registry, LocalDispatcher(real_pool), out, chunk_size=8, progress=False,
                     budget=Budget(max_tokens=160))
    loads = {m: n - before.get(m, 0) for m, n in real_pool.loads.items() if n - before.get(m, 0)}
    assert all(n == 1 for n in loads.values()), loads
    assert {"smollm2-135m", "qwen-coder-0.5b", "gemma3-270m"} <= set(real_pool.resident()), real_pool.resident()
    rows = read_rows(out)
    assert len(rows) == len(items) * len(systems)
    tutor = {r["id"]: r["correct"] for r in rows if r["system"] == "expert:math-tutor"}
    assert tutor["mul"] and tutor["pct"], [r for r in rows if r["system"] == "expert:math-tutor"]
    # one lockstep chunk: no model got more batches than there were steps
    assert all(n <= stats["steps"] for n in stats["batches"].values()), stats
    summary = summarize(rows)
    assert {"symbolic-moe", "expert:math-tutor"} <= set(summary["systems"]), summary["systems"]


def test_select_by_log_likelihood_on_the_real_aggregator_model_picks_the_true_candidate(real_pool):
    """`select` with `method: loglik` on the real engine: the majority and the router's scores say
    the wrong option; the aggregator model's log-likelihood of each candidate's option finds the
    true one (questions whose answers are certain), in one scoring batch, without generating."""
    from aggregators.base import AggregationItem, make_aggregator
    from orchestrator.context import RunContext
    from orchestrator.core import ExpertAnswer, Question
    from orchestrator.testing import RecordingDispatcher

    def item(qid, text, *answers):
        return AggregationItem(question=Question(id=qid, text=text), answers=[
            ExpertAnswer(expert=f"e{i}", model="m", text=t, score=s) for i, (t, s) in enumerate(answers)])

    items = [
        item("capital", "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome",
             ("Answer: A", 0.9), ("Berlin. Answer: A", 0.8), ("It is Paris. Answer: C", 0.1)),
        item("ice", "Does ice float on liquid water? Answer yes or no.", ("Answer: no", 0.9), ("Answer: yes", 0.2)),
    ]
    disp = RecordingDispatcher(LocalDispatcher(real_pool))
    out = make_aggregator("select", method="loglik").aggregate(items, RunContext(
        registry=ExpertRegistry.default(), dispatcher=disp, run_id="select-loglik"))
    assert out[0].answer == "It is Paris. Answer: C", out[0].notes
    assert is_correct(out[1].answer, "yes", "boolean"), out[1].notes
    assert all("log-likelihood per character" in o.notes[-1] for o in out)
    assert [(label, len(reqs)) for label, _, reqs in disp.batches] == [("aggregate", 2)]
    assert all(r.continuations for _, _, reqs in disp.batches for r in reqs)
