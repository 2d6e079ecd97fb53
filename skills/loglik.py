"""Multiple choice graded by log-likelihood, as lm-eval-harness does (fast and fair to small models).

Each :class:`ChoiceItem` is a zero-shot cloze prompt (``Question: ...\\nAnswer:``) and the answer
options as continuations (`` <option text>``). A model is right when the option with the highest
log-probability per character of the continuation is the gold one (lm-eval's ``acc_norm``; OLMES
uses this "RC" format for small models, which cannot yet answer by letter). One vLLM call scores
all options of a batch through prompt log-probabilities (``max_tokens=1``).

Tasks: any multiple-choice task of :func:`skills.datasets.load_task` (``arc_easy``, ``sciq``,
``medmcqa``, ``mmlu/<subject>``, ``basic_skills/<skill>``, ...), validation or dev splits only.

Example::

    >>> it = ChoiceItem(id="t/1", task="t", question="2 + 2 =", context="2 + 2 =", choices=["3", "4"], gold=1,
    ...                 category="math")
    >>> grade_choice(it, [-5.0, -1.0])
    (1, True)
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel

from orchestrator.errors import InputError
from skills.datasets import LETTERS, LabelledItem, load_task

MAX_CONTEXT_CHARS = 1500  # longer items (some professional_law) cost minutes of CPU prefill each batch

class ChoiceItem(BaseModel):
    """One multiple-choice item in cloze form: ``context`` + `` choice`` scored per option."""

    id: str
    task: str
    question: str  # what a user would ask (embedded, keyword-extracted)
    context: str  # what the model is scored on
    choices: list[str]
    gold: int
    category: str
    split: str = "validation"


def grade_choice(item: ChoiceItem, logprobs: list[float]) -> tuple[int, bool]:
    """(chosen option, correct) by log-probability per character of `` choice``."""
    norm = [lp / max(1, len(" " + c)) for lp, c in zip(logprobs, item.choices)]
    chosen = max(range(len(norm)), key=lambda i: norm[i])
    return chosen, chosen == item.gold


def _cloze(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def to_choice_item(item: LabelledItem, task: str, split: str) -> ChoiceItem:
    """A ``skills.datasets`` multiple-choice item in cloze form (its listed options dropped from the stem)."""
    choices = item.choices or []
    stem = "\n".join(item.question.split("\n")[: -len(choices)]) if choices else item.question
    context = stem if task.startswith("basic_skills/") else _cloze(stem)  # those are statements to complete
    return ChoiceItem(id=item.id, task=task, question=stem, context=context, choices=choices,
                      gold=LETTERS.index(item.answer), category=item.category, split=split)


def load_choice_task(name: str, *, split: str = "validation", limit: int | None = None, seed: int = 0) -> list[ChoiceItem]:
    """A seeded sample of one task's validation (or dev) items, contexts capped at MAX_CONTEXT_CHARS.

    Items, ids and splits are those of :func:`skills.datasets.load_task`, so the evaluation's test
    split (same loader) never overlaps what was profiled.
    """
    if split == "test":
        raise InputError(f"{name}: profiling never uses the test split", hint="use split='validation' or 'dev'")
    items = [to_choice_item(it, name, split) for it in load_task(name, split=split)  # type: ignore[arg-type]
             if it.answer_type == "choice"]
    items = [it for it in items if len(it.context) <= MAX_CONTEXT_CHARS and len(it.choices) >= 2]
    if limit is not None and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return items


def score_items(backend: Any, items: list[ChoiceItem]) -> list[dict[str, Any]]:
    """Grade ``items`` on one loaded backend (one engine call for all options); one result per item."""
    pairs = [(it.context, " " + c) for it in items for c in it.choices]
    lps = backend.loglikelihoods(pairs)
    out, pos = [], 0
    for it in items:
        chosen, ok = grade_choice(it, lps[pos: pos + len(it.choices)])
        pos += len(it.choices)
        out.append({"id": it.id, "task": it.task, "chosen": chosen, "gold": it.gold, "correct": ok})
    return out
