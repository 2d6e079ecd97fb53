"""`expertmix eval` logic on fakes: grading, lockstep batching, resume, summary, oracle, report."""

from __future__ import annotations

import json
import re
import threading

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.errors import InputError
from orchestrator.core import Completion
from skills.datasets import LabelledItem
from skills.eval_report import render_report
from skills.eval_summary import agreement, pareto_front, summarize, wilson
from skills.evaluation import EvalItem, evaluate, grade, load_items, make_systems, read_items_jsonl, read_rows
from tests.fakes import FakeDispatcher
from workers.lockstep import LockstepDispatcher

pytestmark = pytest.mark.unit


def item(i: int, answer: str, kind: str = "number", task: str = "t") -> EvalItem:
    return EvalItem(task=task, item=LabelledItem(id=f"{task}/{i}", question=f"What is {answer} + 0?", answer=answer,
                                                 answer_type=kind, category="math", source="fake"))


def reply_by_model(request) -> str:
    """math-tutor's model (qwen) is right, smollm2 is off by one, gemma states nothing."""
    text = (request.messages or [{"content": request.prompt}])[-1]["content"]
    gold = int(re.search(r"What is (\d+)", text).group(1)) if "What is" in text else 0
    if request.model == "qwen-coder-0.5b":
        return f"Step by step. Answer: {gold}"
    if request.model == "smollm2-135m":
        return f"Answer: {gold + 1}"
    return "I am not sure."


def test_grading_types_and_code_sandbox():
    num = LabelledItem(id="a", question="q", answer="36", answer_type="number", category="math", source="x")
    assert grade(num, "15% of 240 is 0.15 * 240 = 36.\nAnswer: 36") == (True, "36")
    boolean = LabelledItem(id="b", question="q", answer="no", answer_type="boolean", category="x", source="x")
    assert grade(boolean, "No, it is not.")[0] and not grade(boolean, "Answer: yes")[0]
    code = LabelledItem(id="c", question="add", answer="", answer_type="code", category="code", source="x",
                        tests="assert add(2, 3) == 5")
    assert grade(code, "```python\ndef add(a, b):\n    return a + b\n```")[0]
    assert grade(code, "```python\ndef add(a, b):\n    return a - b\n```") == (False, "AssertionError")
    loop = LabelledItem(id="d", question="", answer="", answer_type="code", category="code", source="x",
                        tests="while True: pass")
    assert grade(loop, "x = 1", timeout_s=1) == (False, "timed out after 1 s")


def test_user_jsonl_items_and_errors(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"question": "2+2?", "answer": "4", "answer_type": "numeric"}) + "\n"
                 + json.dumps({"id": "k", "question": "Sky blue?", "answer": "yes", "answer_type": "boolean"}) + "\n")
    items = load_items(files=[f])
    assert [(e.task, e.item.id, e.item.answer_type) for e in items] == [("mine", "mine/1", "number"), ("mine", "k", "boolean")]
    f.write_text(json.dumps({"question": "2+2?", "answer": "4", "answer_type": "float"}) + "\n")
    with pytest.raises(InputError, match=r"mine.jsonl:1: unknown answer_type 'float'"):
        read_items_jsonl(f)
    f.write_text(json.dumps({"question": "2+2?"}) + "\n")
    with pytest.raises(InputError, match="missing answer, answer_type"):
        read_items_jsonl(f)


def test_all_systems_share_one_batch_per_model_per_step_and_resume(tmp_path):
    reg = ExpertRegistry.default()
    items = [item(i, str(10 + i), task="a" if i % 2 else "b") for i in range(6)]
    systems = make_systems(["ensemble-vote"], ["math-tutor", "generalist"], reg, oracle=False)
    fake = FakeDispatcher(reply=reply_by_model)
    out = tmp_path / "answers.jsonl"
    stats = evaluate(items, systems, reg, fake, out, chunk_size=6, progress=False)
    rows = read_rows(out)
    assert len(rows) == 3 * 6
    # one chunk, one step: each model got exactly one batch holding every system's requests
    per_model = [m for _, m, _ in fake.batches]
    assert len(per_model) == len(set(per_model)), fake.batches
    assert all(n == 1 for n in stats["model_loads"].values())
    assert stats["shared_requests"] >= 6  # ensemble's math-tutor calls reuse the single expert's
    tutor = [r for r in rows if r["system"] == "expert:math-tutor"]
    assert all(r["correct"] for r in tutor)
    assert not any(r["correct"] for r in rows if r["system"] == "expert:generalist")
    # resume: nothing left to do, no new batch
    before = len(fake.batches)
    evaluate(items, systems, reg, fake, out, chunk_size=6, progress=False)
    assert len(fake.batches) == before and len(read_rows(out)) == 18
    # a new item only runs the missing pairs
    evaluate([*items, item(6, "99")], systems, reg, fake, out, chunk_size=6, progress=False)
    assert len(read_rows(out)) == 21


def test_lockstep_merges_calls_of_concurrent_systems():
    fake = FakeDispatcher(reply=lambda r: "x")
    lock = LockstepDispatcher(fake, ["s1", "s2"])
    from orchestrator.core import GenerationRequest

    def go(system: str, n: int) -> None:
        p = lock.participant(system)
        reqs = [GenerationRequest(key=f"{system}/{i}", model="m", prompt=f"p{i}") for i in range(n)]
        done = p.run_batches({"m": reqs})
        assert set(done) == {r.key for r in reqs} and all(isinstance(c, Completion) for c in done.values())
        p.leave()

    threads = [threading.Thread(target=go, args=("s1", 2)), threading.Thread(target=go, args=("s2", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert fake.batches == [("experts m", "m", 3)]  # p0, p1 asked by both: generated once
    assert lock.shared_requests == 2


def test_summary_oracle_ci_agreement_and_report(tmp_path):
    rows = []
    for i in range(10):
        rows.append({"system": "expert:a", "task": "t", "id": str(i), "correct": i < 6, "tokens": 10, "seconds": 1.0,
                     "extracted": str(i), "routed": ["a"], "experts": []})
        rows.append({"system": "expert:b", "task": "t", "id": str(i), "correct": i >= 8, "tokens": 5, "seconds": 0.5,
                     "extracted": str(i) if i < 5 else "z", "routed": ["b"], "experts": []})
        rows.append({"system": "moe", "task": "t", "id": str(i), "correct": i < 7, "tokens": 20, "seconds": 2.0,
                     "extracted": str(i), "routed": ["a", "b"],
                     "experts": [{"expert": "a", "correct": i < 6}, {"expert": "b", "correct": i >= 8}]})
    s = summarize(rows)
    assert s["cells"]["oracle"]["all"]["accuracy"] == 0.8
    assert s["cells"]["moe"]["t"]["recruited_oracle"] == 0.8
    assert s["cells"]["moe"]["t"]["ci"] == list(wilson(7, 10))
    names, m = agreement(rows)
    assert names == ["a", "b"] and m[0][1] == 0.5
    assert pareto_front([("x", 1, 0.5), ("y", 2, 0.4), ("z", 3, 0.9)]) == ["x", "z"]
    page = render_report(rows, meta={"items": 10})
    assert "<svg" in page and "oracle" in page and "Pareto" in page and "http" not in page.replace("http://www.w3.org", "")


def test_every_router_warms_up_in_the_calling_thread_before_systems_start(tmp_path, monkeypatch):
    """Two system threads importing their encoders at once raced in transformers' lazy imports and
    stopped a whole evaluation; the warm-up now happens first, here, one system after another."""
    from routers.keyword import FixedRouter, KeywordRouter

    seen: list[str] = []
    for cls in (FixedRouter, KeywordRouter):
        original = cls.warm_up
        monkeypatch.setattr(cls, "warm_up", lambda self, ctx, _o=original: seen.append(threading.current_thread().name) or _o(self, ctx))
    reg = ExpertRegistry.default()
    systems = make_systems(["ensemble-vote"], ["math-tutor"], reg)
    evaluate([item(0, "10")], systems, reg, FakeDispatcher(reply=reply_by_model), tmp_path / "a.jsonl",
             progress=False)
    main = threading.current_thread().name
    assert seen[:2] == [main, main], seen


def test_a_single_expert_baseline_is_that_expert_alone_even_when_it_states_no_answer(tmp_path):
    reg = ExpertRegistry.default()
    systems = make_systems([], ["generalist"], reg, oracle=False)
    items = [EvalItem(task="t", item=LabelledItem(id="q0", question="Which? A. x B. y", answer="B",
                                                  answer_type="choice", category="general", source="t",
                                                  choices=["x", "y"]))]
    fake = FakeDispatcher(reply=lambda req: "I am not sure.")  # states no letter: nothing to pass through
    out = tmp_path / "answers.jsonl"
    evaluate(items, systems, reg, fake, out, chunk_size=1, progress=False)
    (row,) = read_rows(out)
    assert row["answer"] == "I am not sure." and not row["correct"]
    assert [m for _, m, _ in fake.batches] == ["smollm2-135m"], "no aggregator model rewrote the answer"
