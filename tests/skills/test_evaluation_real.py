"""`expertmix eval` on the real engines: every model loads once for all systems, one batch per step."""

from __future__ import annotations

import json

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.core import Budget
from skills.eval_summary import summarize
from skills.evaluation import evaluate, load_items, make_systems, read_rows
from workers.dispatch import LocalDispatcher

pytestmark = pytest.mark.integration

ITEMS = [{"id": "add", "question": "What is 2 + 2?", "answer": "4", "answer_type": "numeric"},
         {"id": "mars", "question": "Which planet is known as the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn",
          "answer": "B", "answer_type": "choice"},
         {"id": "sky", "question": "Is the sky blue on a clear day?", "answer": "yes", "answer_type": "boolean"}]


class BatchSpy(LocalDispatcher):
    """The real local dispatcher, recording each batch (label, model, size)."""

    def __init__(self, pool):
        super().__init__(pool)
        self.calls: list[tuple[str, str, int]] = []

    def run_batches(self, groups, *, label="experts", progress=False):
        self.calls += [(label, m, len(r)) for m, r in groups.items() if r]
        return super().run_batches(groups, label=label, progress=progress)


def test_all_systems_share_the_engines_one_load_and_one_batch_per_model_per_step(real_pool, tmp_path):
    real_pool.release("smollm2-135m")  # cheapest to reload: lets the test see a load happen once
    before = dict(real_pool.loads)
    data = tmp_path / "certain.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    reg = ExpertRegistry.default()
    systems = make_systems(["ensemble-vote"], ["math-tutor", "generalist", "encyclopedia"], reg)
    spy = BatchSpy(real_pool)
    out = tmp_path / "answers.jsonl"
    stats = evaluate(load_items(files=[data]), systems, reg, spy, out, progress=False, budget=Budget(max_tokens=96))

    loads = {m: n - before.get(m, 0) for m, n in real_pool.loads.items() if n - before.get(m, 0)}
    assert loads == {"smollm2-135m": 1}  # loaded once for all four systems; the others stayed resident
    per_model: dict[str, int] = {}
    for _, model, _ in spy.calls:
        per_model[model] = per_model.get(model, 0) + 1
    assert all(n <= stats["steps"] for n in per_model.values()), (spy.calls, stats)
    assert stats["shared_requests"] >= 3  # the ensemble's recruits reuse the single experts' answers
    rows = read_rows(out)
    assert len(rows) == 4 * 3 and all(r["answer"].strip() for r in rows)
    tutor = [r for r in rows if r["system"] == "expert:math-tutor"]
    assert {r["id"]: r["correct"] for r in tutor}["add"], tutor  # 2 + 2 is certain for Qwen
    assert summarize(rows)["cells"]["expert:math-tutor"]["all"]["n"] == 3
