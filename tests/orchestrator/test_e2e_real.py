"""End to end on the real parts: vLLM engines on the three local models, the real pipelines.

Shares the session's engines (``real_pool``); one test deliberately releases them first so it can
count the loads a run causes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import ExpertRegistry
from skills.grading import is_correct
from orchestrator.pipeline import Pipeline
from orchestrator.faces.runfile import run_file
from orchestrator.faces.sdk import Orchestrator
from workers.dispatch import LocalDispatcher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["What is 15% of 240?", "Write a Python function that reverses a string.",
             "Which vitamin deficiency causes scurvy?", "What is the capital of Australia?",
             "Solve for x: 3x + 7 = 22.", "What does the Fourth Amendment protect against?",
             "Why is the sky blue?", "Write a short thank-you note to a colleague."]
THREE_MODELS = {"name": "three-models", "nodes": [
    {"name": "input", "type": "input"},
    {"name": "router", "type": "router", "params": {"router": "fixed", "experts": ["generalist", "math-tutor", "encyclopedia"]}},
    {"name": "experts", "type": "experts", "params": {"max_tokens": 32}},
    {"name": "aggregate", "type": "aggregator", "params": {"aggregator": "synthesis", "max_tokens": 48}},
    {"name": "output", "type": "output"}],
    "edges": [{"from": a, "to": b} for a, b in [
        ("input.questions", "router.questions"), ("input.questions", "experts.questions"),
        ("router.decisions", "experts.decisions"), ("input.questions", "aggregate.questions"),
        ("experts.answers", "aggregate.answers"), ("aggregate.final", "output.final")]]}


# resuming is about the answers file, not answer quality: one small expert, few tokens
ONE_SMALL_EXPERT = {"name": "one-small-expert", "nodes": [
    {"name": "input", "type": "input"},
    {"name": "router", "type": "router", "params": {"router": "fixed", "experts": ["generalist"]}},
    {"name": "experts", "type": "experts", "params": {"max_tokens": 16}},
    {"name": "aggregate", "type": "aggregator", "params": {"aggregator": "vote", "answer": "response"}},
    {"name": "output", "type": "output"}],
    "edges": THREE_MODELS["edges"]}


class BatchSpy(LocalDispatcher):
    """The real local dispatcher, recording how many batches each model got."""

    def __init__(self, pool):
        super().__init__(pool)
        self.calls: list[tuple[str, str, int]] = []

    def run_batches(self, groups, *, label="experts", progress=False):
        self.calls += [(label, m, len(r)) for m, r in groups.items() if r]
        return super().run_batches(groups, label=label, progress=progress)


def test_eight_questions_load_each_model_once_and_send_one_batch_per_model(real_pool):
    for model in real_pool.resident():
        real_pool.release(model)  # count the loads this run causes, from cold
    before = dict(real_pool.loads)
    spy = BatchSpy(real_pool)
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.from_dict(THREE_MODELS), dispatcher=spy)
    results = orch.run(QUESTIONS)

    loads = {m: n - before.get(m, 0) for m, n in real_pool.loads.items() if n - before.get(m, 0)}
    assert loads == {"smollm2-135m": 1, "qwen-coder-0.5b": 1, "gemma3-270m": 1}
    expert_batches = [(m, n) for label, m, n in spy.calls if label == "experts"]
    assert sorted(expert_batches) == [("gemma3-270m", 8), ("qwen-coder-0.5b", 8), ("smollm2-135m", 8)]
    aggregate = [(m, n) for label, m, n in spy.calls if label == "aggregate"]
    assert len(aggregate) == 1 and aggregate[0][1] == 8, aggregate  # one batch, on the chosen aggregator model
    assert len(results) == 8 and all(r.answer.strip() for r in results)
    assert results[0].model_loads == 3
    assert {a.model for a in results[0].trace.answers} == {"smollm2-135m", "qwen-coder-0.5b", "gemma3-270m"}


def test_builtin_pipelines_answer_real_questions(real_pool):
    registry = ExpertRegistry.default()
    # symbolic-moe, the default, is graded on this question in test_answers_real.py
    for name in ("coe", "ensemble-vote"):
        orch = Orchestrator(registry, Pipeline.load(name), dispatcher=LocalDispatcher(real_pool))
        r = orch.ask("What is 15% of 240?")
        assert r.answer.strip(), name
        assert r.experts and r.trace.timings and r.aggregator, name
        if name == "coe":
            assert r.trace.category == "math"


def test_run_file_resumes_without_redoing_finished_questions(real_pool, tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"id": f"id{i}", "question": q}) + "\n" for i, q in enumerate(QUESTIONS[:4])))
    out = tmp_path / "a.jsonl"
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.from_dict(ONE_SMALL_EXPERT), dispatcher=LocalDispatcher(real_pool))
    first = run_file(orch, qfile, out, chunk_size=2, progress=False)
    assert first["answered_now"] == 4
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # an interruption mid-write of chunk 2
    again = run_file(orch, qfile, out, chunk_size=2, progress=False)
    assert again["answered_now"] == 2 and again["skipped_already_done"] == 2
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == ["id0", "id1", "id2", "id3"]


@pytest.mark.slow
def test_cli_ask_json_readme_command():
    """The README's first command (without setup): a fresh process, real engines, default pipeline."""
    exe = ROOT / ".venv" / "bin" / "expertmix"
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "orchestrator.faces.cli"]),
           "ask", "What is 15% of 240?", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), f"no JSON on stdout; stderr ends with: {proc.stderr[-3000:]}"
    data = json.loads(proc.stdout)
    assert is_correct(data["answer"], "36", "number"), data["answer"]
    registry = ExpertRegistry.default()
    assert data["experts"] and all("math" in registry.expert(e["name"]).categories for e in data["experts"]), data["experts"]
    assert data["aggregator"] and isinstance(data["model_loads"], int) and data["model_loads"] >= 1
