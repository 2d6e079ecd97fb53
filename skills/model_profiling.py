"""Profile MODELS on tasks where the local models really differ; the rows then profile every persona.

Personas of one model differ only by system prompt, and profiling all seven would cost 7/3 of the
compute for little signal; so each model answers once (a neutral prompt) and its results become
the correctness rows of every expert on that model. What tells personas of one model apart is the
registry's declared ``skills``/``categories`` (the prior of ``skills.scoring``).

- multiple choice: log-likelihood of each option (``skills.loglik``), one engine call per batch;
- ``gsm8k``: chain of thought (``max_tokens`` 320 by default), graded numerically;
- ``mbpp``: code generated and run against the task's asserts in a sandboxed subprocess
  (``skills.code_exec``).

Results go to ``model_results.jsonl`` (one row per (item, model), appended per batch: resumable).

Example::

    >>> gen_prompt("2+2?", "number").endswith('"Answer: <number>".')
    True
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.prompts import build_request
from orchestrator.core import Sampling
from skills.code_exec import extract_code, run_tests
from skills.datasets import load_task
from skills.grading import extract_answer, is_correct
from skills.loglik import ChoiceItem, score_items
from skills.profiles import read_rows

log = logging.getLogger(__name__)

RESULTS_FILE = "model_results.jsonl"
NEUTRAL_SYSTEM = "You are a helpful assistant."


class GenItem(BaseModel):
    """A generative item: GSM8K (number) or MBPP (code with asserts)."""

    id: str
    task: str
    question: str
    answer: str
    answer_type: str  # "number" | "code"
    category: str
    tests: str = ""
    split: str = "validation"


def gen_prompt(question: str, answer_type: str) -> str:
    if answer_type == "code":
        return f"{question.strip()}\n\nWrite the Python function in one ```python code block."
    return f'{question.strip()}\n\nThink step by step, then give the final answer as "Answer: <number>".'


def load_gen_task(name: str, *, limit: int | None = None, seed: int = 0) -> list[GenItem]:
    """Validation items of ``gsm8k`` or ``mbpp`` (a seeded sample of ``limit``)."""
    out = []
    for it in load_task(name, split="validation", limit=limit, seed=seed):
        if it.answer_type == "code" and not it.tests:
            continue  # nothing to run
        out.append(GenItem(id=it.id, task=name, question=it.question, answer=it.answer, answer_type=it.answer_type,
                           category=it.category, tests=it.tests or ""))
    return out


def grade_generation(item: GenItem, text: str) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one completion."""
    if item.answer_type == "code":
        code = extract_code(text)
        return code[:2000], bool(code.strip()) and run_tests(code, item.tests, timeout_s=5.0).passed
    return extract_answer(text, "number"), is_correct(text, item.answer, "number")


class ResultStore:
    """``model_results.jsonl`` of a profiles dir: one row per (item, model), appended per batch."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RESULTS_FILE
        directory.mkdir(parents=True, exist_ok=True)
        self.rows = read_rows(self.path)
        self.done = {(r["id"], r["model"]) for r in self.rows}

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.rows.extend(rows)
        self.done.update((r["id"], r["model"]) for r in rows)


def profile_choices(backend: Any, model: str, items: list[ChoiceItem], store: ResultStore, *,
                    chunk: int = 64, deadline: float | None = None) -> int:
    """Score the not-yet-done choice items on a loaded backend; returns how many were scored."""
    todo = [it for it in items if (it.id, model) not in store.done]
    n = 0
    for start in range(0, len(todo), chunk):
        if deadline is not None and time.monotonic() > deadline:
            break
        batch = todo[start: start + chunk]
        rows = [{**r, "model": model, "kind": "loglik"} for r in score_items(backend, batch)]
        store.append(rows)
        n += len(rows)
    return n


def profile_generation(backend: Any, spec: Any, items: list[GenItem], store: ResultStore, *, max_tokens: int,
                       chunk: int = 16, deadline: float | None = None) -> int:
    """Generate (greedy) and grade the not-yet-done generative items; returns how many were graded."""
    todo = [it for it in items if (it.id, spec.name) not in store.done]
    n = 0
    stop = [] if spec.chat else ["\nQuestion:", "\n\n\n"]
    for start in range(0, len(todo), chunk):
        if deadline is not None and time.monotonic() > deadline:
            break
        batch = todo[start: start + chunk]
        sampling = Sampling(temperature=0.0, max_tokens=max_tokens, stop=stop)
        reqs = [build_request(f"profile/{it.id}", spec, NEUTRAL_SYSTEM, gen_prompt(it.question, it.answer_type),
                              sampling) for it in batch]
        rows = []
        for it, comp in zip(batch, backend.generate(reqs)):
            extracted, ok = grade_generation(it, comp.text)
            rows.append({"id": it.id, "task": it.task, "model": spec.name, "kind": "generate", "correct": ok,
                         "extracted": extracted, "gold": it.answer if it.answer_type == "number" else None,
                         "completion_tokens": comp.completion_tokens, "answer": comp.text[:1500]})
        store.append(rows)
        n += len(rows)
    return n


def persona_rows(results: list[dict[str, Any]], registry: Any, keywords: dict[str, list[str]],
                 answer_types: dict[str, str]) -> list[dict[str, Any]]:
    """Correctness rows per registry expert. A result with an ``expert`` field is that persona's own
    answer (its role prompt and token budget, from ``import-eval``); a result without one is its
    model's and stands for every persona on that model that has no answer of its own to the item."""
    by_model: dict[str, list[str]] = {}
    for name in registry.experts:
        by_model.setdefault(registry.model_of(name).name, []).append(name)
    own = {(r["id"], r["expert"]) for r in results if r.get("expert")}
    rows = []
    for r in results:
        if r["id"] not in keywords:
            continue
        experts = [r["expert"]] if r.get("expert") else [e for e in by_model.get(r["model"], []) if (r["id"], e) not in own]
        for expert in experts:
            rows.append({"id": r["id"], "keywords": keywords[r["id"]], "expert": expert, "model": r["model"],
                         "task": r["task"], "answer_type": answer_types.get(r["id"]), "correct": bool(r["correct"])})
    return rows
