"""Evaluate pipelines and single experts on labelled items, all systems in one shared run.

Every system (a pipeline, or one expert asked directly) runs its own pipeline in its own thread on
a :class:`~workers.lockstep.LockstepDispatcher`: at each step the systems' calls are merged per
model, so every model loads once for the whole evaluation and gets one batch per step for all
systems. Items go in chunks; each finished chunk's rows are appended to ``answers.jsonl``, so a
rerun resumes and skips (system, item) pairs already answered.

Example::

    >>> from orchestrator.config import ExpertRegistry
    >>> [s.name for s in make_systems(["symbolic-moe"], ["math-tutor"], ExpertRegistry.default())]
    ['symbolic-moe', 'expert:math-tutor']
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel
from tqdm.auto import tqdm

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError, InputError
from orchestrator.executor import execute
from orchestrator.pipeline import Pipeline
from orchestrator.core import Budget, Question, Result
from skills.code_exec import extract_code, humaneval_program, run_tests
from skills.datasets import LabelledItem, load_task
from skills.grading import extract_answer, is_correct
from workers.lockstep import LockstepDispatcher

USER_ANSWER_TYPES = {"numeric": "number", "number": "number", "choice": "choice", "boolean": "boolean",
                     "exact": "exact", "code": "code", "boxed": "boxed"}
FORMAT_HINTS = {
    "choice": "Answer with the letter of the correct option, as: Answer: <letter>",
    "number": "Give the final answer as: Answer: <number>",
    "boxed": "Give the final answer as: Answer: <value>",
    "boolean": "Answer yes or no, as: Answer: yes/no",
    "exact": "Give the final answer as: Answer: <answer>",
}

class EvalItem(BaseModel):
    """One labelled item of one task (``task``: the name a summary groups by)."""

    task: str
    item: LabelledItem

    def prompt(self, format_hints: bool = True) -> str:
        """The question every system sees (with the answer-format line, same for all systems)."""
        hint = FORMAT_HINTS.get(self.item.answer_type) if format_hints else None
        return f"{self.item.question.strip()}\n\n{hint}" if hint else self.item.question


class System(BaseModel):
    """One thing being evaluated: a pipeline (``kind="pipeline"``) or one expert alone."""

    name: str
    kind: str
    pipeline: dict[str, Any]
    expert: str | None = None

    model_config = {"arbitrary_types_allowed": True}


# ---- data ---------------------------------------------------------------------------------
def load_items(tasks: Iterable[str] = (), files: Iterable[str | Path] = (), *, split: str = "test",
               limit: int | None = None, seed: int = 0) -> list[EvalItem]:
    """Items of built-in tasks (``split``, ``limit`` per task, seeded) and user JSONL files,
    interleaved across tasks."""
    groups = [[EvalItem(task=t, item=it) for it in load_task(t, split=split, limit=limit, seed=seed)] for t in tasks]
    for f in files:
        rows = read_items_jsonl(Path(f))
        groups.append([EvalItem(task=Path(f).stem, item=it) for it in (rows[:limit] if limit else rows)])
    # round-robin over tasks: every chunk mixes them, so a partial (resumable) run covers every task
    out = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
    if not out:
        raise InputError("no items to evaluate", hint="pass --task NAME (e.g. gsm8k) or --data FILE.jsonl")
    ids = [e.item.id for e in out]
    if len(set(ids)) != len(ids):
        raise InputError("item ids repeat across tasks/files", hint="give every JSONL item a unique id")
    return out


def read_items_jsonl(path: Path) -> list[LabelledItem]:
    """User items: ``{"question", "answer", "answer_type"}`` per line (optional ``id``, ``choices``,
    ``tests`` for code, ``category``). A bad line raises :class:`InputError` naming it."""
    if not path.exists():
        raise InputError(f"{path}: no such file", hint='one {"question", "answer", "answer_type"} object per line')
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})", hint="one JSON object per line") from None
        missing = [k for k in ("question", "answer", "answer_type") if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}",
                             hint='e.g. {"question": "2+2?", "answer": "4", "answer_type": "numeric"}')
        kind = USER_ANSWER_TYPES.get(str(obj["answer_type"]))
        if kind is None:
            raise InputError(f"{where}: unknown answer_type {obj['answer_type']!r}",
                             hint="use numeric, choice, boolean, exact or code")
        if kind == "code" and not obj.get("tests"):
            raise InputError(f"{where}: a code item needs `tests` (assert lines)")
        items.append(LabelledItem(id=str(obj.get("id", f"{path.stem}/{n}")), question=str(obj["question"]),
                                  choices=obj.get("choices"), answer=str(obj["answer"]), answer_type=kind,
                                  category=obj.get("category", "general"), source=path.name, tests=obj.get("tests"),
                                  entry_point=obj.get("entry_point")))
    return items


# ---- grading ------------------------------------------------------------------------------
def grade(item: LabelledItem, text: str, *, timeout_s: float = 10.0) -> tuple[bool, str | None]:
    """``(correct, extracted answer)``; code runs its tests in a limited subprocess."""
    if item.answer_type == "code":
        if not item.tests:
            raise InputError(f"item {item.id}: a code item has no tests to run")
        if item.entry_point:
            program = humaneval_program(item.question, text, item.tests, item.entry_point)
            res = run_tests(program, "", timeout_s=timeout_s)
        else:
            res = run_tests(extract_code(text), item.tests, timeout_s=timeout_s)
        return res.passed, "pass" if res.passed else (res.error or "fail")
    got = extract_answer(text, item.answer_type, choices=item.choices)
    return is_correct(text, item.answer, item.answer_type, choices=item.choices), got


# ---- systems ------------------------------------------------------------------------------
def expert_pipeline(expert: str) -> dict[str, Any]:
    """A one-expert pipeline: the fixed router names ``expert``; its answer passes through unchanged.

    The merge is a one-answer vote (``answer: response``), which never calls a model: a synthesis
    node would hand an answer that states no final value to the aggregator model, so the
    "single expert" would be that expert plus another model's rewrite.
    """
    return {
        "name": f"expert:{expert}", "description": f"the {expert} expert alone",
        "nodes": [{"name": "input", "type": "input"},
                  {"name": "router", "type": "router", "params": {"router": "fixed", "experts": [expert]}},
                  {"name": "experts", "type": "experts"},
                  {"name": "aggregate", "type": "aggregator",
                   "params": {"aggregator": "vote", "answer": "response"}},
                  {"name": "output", "type": "output"}],
        "edges": [{"from": "input.questions", "to": "router.questions"},
                  {"from": "input.questions", "to": "experts.questions"},
                  {"from": "router.decisions", "to": "experts.decisions"},
                  {"from": "input.questions", "to": "aggregate.questions"},
                  {"from": "experts.answers", "to": "aggregate.answers"},
                  {"from": "aggregate.final", "to": "output.final"}],
    }


def make_systems(pipelines: Iterable[str], experts: Iterable[str], registry: ExpertRegistry, *,
                 oracle: bool = False) -> list[System]:
    """Systems in CLI order; ``oracle`` adds every registry expert not listed (the oracle needs them all)."""
    experts = list(experts)
    if oracle:
        experts += [e for e in registry.experts if e not in experts]
    systems = [System(name=Pipeline.load(p).name if not _is_path(p) else Path(p).stem, kind="pipeline",
                      pipeline=Pipeline.load(p).to_dict()) for p in pipelines]
    for e in experts:
        registry.expert(e)
        systems.append(System(name=f"expert:{e}", kind="expert", pipeline=expert_pipeline(e), expert=e))
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"a system is listed twice: {names}", hint="list each --pipeline / --expert once")
    if not systems:
        raise InputError("nothing to evaluate", hint="pass --pipeline NAME, --expert NAME or --oracle")
    return systems


def _is_path(p: str) -> bool:
    return p.endswith((".yaml", ".yml")) or os.sep in p


# ---- the run ------------------------------------------------------------------------------
def done_pairs(path: Path) -> set[tuple[str, str]]:
    """(system, item id) pairs already in an answers file (what a resumed run skips)."""
    if not path.exists():
        return set()
    return {(r["system"], r["id"]) for r in read_rows(path)}


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def evaluate(items: list[EvalItem], systems: list[System], registry: ExpertRegistry, dispatcher: Any,
             out: Path, *, chunk_size: int = 32, seed: int = 0, progress: bool = True,
             format_hints: bool = True, budget: Budget | None = None) -> dict[str, Any]:
    """Run every system on every item (resuming from ``out``); returns run statistics.

    ``budget`` caps every system alike (e.g. ``Budget(max_tokens=64)`` for a quick look)."""
    if chunk_size < 1:
        raise InputError("chunk size must be >= 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_pairs(out)
    nodes = {s.name: Pipeline.from_dict(s.pipeline, source=s.name).compile() for s in systems}  # built once
    warm_up_systems(nodes, RunContext(registry=registry, dispatcher=dispatcher, seed=seed, budget=budget))
    stats = {"steps": 0, "batches": {}, "shared_requests": 0, "chunks": 0, "seconds": 0.0}
    todo = sum(1 for it in items for s in systems if (s.name, it.item.id) not in done)
    bar = tqdm(total=todo, desc="eval", unit="answer", disable=not progress)
    t_start = time.perf_counter()
    with bar:
        for start in range(0, len(items), chunk_size):
            chunk = items[start:start + chunk_size]
            work = {s.name: [it for it in chunk if (s.name, it.item.id) not in done] for s in systems}
            work = {k: v for k, v in work.items() if v}
            if not work:
                continue
            lock = LockstepDispatcher(dispatcher, list(work), progress=False)
            rows = _run_chunk(work, nodes, RunContext(registry=registry, dispatcher=lock, seed=seed, budget=budget),
                              lock, start, format_hints)
            _append(out, rows)
            bar.update(len(rows))
            stats["chunks"] += 1
            stats["steps"] += len(lock.steps)
            stats["shared_requests"] += lock.shared_requests
            for m, n in lock.batches_per_model().items():
                stats["batches"][m] = stats["batches"].get(m, 0) + n
    stats["seconds"] = round(time.perf_counter() - t_start, 2)
    stats["model_loads"] = dict(dispatcher.model_loads())
    return stats


def warm_up_systems(nodes: dict[str, Any], ctx: RunContext) -> None:
    """Warm every system's nodes here, one after another, before any system thread starts.

    Systems run in threads; two routers importing their encoders at once raced in transformers'
    lazy imports ("cannot import name 'AutoTokenizer'") and stopped a whole evaluation.
    """
    for compiled in nodes.values():
        for node in compiled.nodes.values():
            node.warm_up(ctx)


def _run_chunk(work, nodes, base: RunContext, lock: LockstepDispatcher, start: int,
               format_hints: bool) -> list[dict[str, Any]]:
    results: dict[str, list[Result]] = {}
    errors: dict[str, BaseException] = {}
    walls: dict[str, float] = {}

    def run(system: str) -> None:
        part = lock.participant(system)
        t0 = time.perf_counter()
        try:
            qs = [Question(id=it.item.id, text=it.prompt(format_hints)) for it in work[system]]
            ctx = RunContext(registry=base.registry, dispatcher=part, seed=base.seed, budget=base.budget,
                             run_id=f"eval{start}-{system}")
            results[system] = execute(nodes[system], qs, ctx)
        except BaseException as exc:  # re-raised below in the caller's thread
            errors[system] = exc
        finally:
            walls[system] = time.perf_counter() - t0
            part.leave()

    threads = [threading.Thread(target=run, args=(s,), name=f"eval-{s}") for s in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        system, exc = next(iter(errors.items()))
        raise exc
    rows = []
    for system, its in work.items():
        cost = lock.costs[system]
        own = max(0.0, walls[system] - cost.waited_s)  # routing, aggregation logic, grading-free
        per_item = ((own + cost.generate_s) / len(its), cost.completion_tokens / len(its))
        for it, res in zip(its, results[system]):
            rows.append(_row(system, it, res, *per_item))
    return rows


def _row(system: str, it: EvalItem, res: Result, seconds: float, tokens: float) -> dict[str, Any]:
    """One answers.jsonl line; ``seconds``/``tokens``: the system's chunk cost shared per item
    (every generation it asked for: routing, experts, aggregator)."""
    correct, extracted = grade(it.item, res.answer)
    experts = []
    for a in res.trace.answers:
        ok, got = grade(it.item, a.text)
        experts.append({"expert": a.expert, "extracted": got, "correct": ok, "tokens": a.completion_tokens})
    return {"system": system, "task": it.task, "id": it.item.id, "gold": it.item.answer, "answer": res.answer,
            "extracted": extracted, "correct": correct, "routed": [e.name for e in res.experts],
            "experts": experts, "aggregator": res.aggregator, "aggregator_model": res.trace.aggregator_model,
            "tokens": round(tokens, 1), "seconds": round(seconds, 4), "notes": res.trace.notes}


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
