"""Expert profiles (Symbolic-MoE): every expert answers every validation question, graded per skill.

For each (question, expert): the expert answers with chain of thought, the answer is graded, and
``profile[expert][keyword] += 1`` (correct) or ``-= 1`` (wrong) for every keyword of the question.

Work goes to the dispatcher grouped per model (experts sharing a model share its batch; each model
is loaded once), in chunks so an interrupted run loses at most one chunk: every finished
(question, expert) pair is appended to ``correctness.jsonl`` in the out dir and skipped on rerun.
The out dir then holds::

    items.jsonl              the validation items with their (extracted) keywords and answer types
    correctness.jsonl        one row per (question, expert): id, keywords, expert, model, correct, answer
    <expert>.profile.json    one profile per expert: {"expert", "model", "profile": {keyword: score}, ...}
    aggregator.json          the chosen aggregator model and its accuracy (see skills.aggregator_choice)
    manifest.json            what was run: data, extractor, counts, seconds

Example::

    >>> build_profiles([{"expert": "e", "keywords": ["algebra"], "correct": True}])
    {'e': {'algebra': 1}}
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from orchestrator.context import RunContext
from orchestrator.errors import BackendError, ConfigError, InputError
from orchestrator.prompts import expert_request
from orchestrator.core import GenerationRequest, Question
from skills.grading import ANSWER_TYPES, detect_answer_type, extract_answer, format_choices, is_correct

log = logging.getLogger(__name__)

PROFILE_SUFFIX = ".profile.json"
ROWS_FILE = "correctness.jsonl"
ITEMS_FILE = "items.jsonl"

ANSWER_FORMAT = {
    "choice": 'Think step by step, then give the final answer as "Answer: <letter>".',
    "number": 'Think step by step, then give the final answer as "Answer: <number>".',
    "boxed": "Think step by step, then put the final answer in \\boxed{}.",
    "boolean": 'Think step by step, then give the final answer as "Answer: yes" or "Answer: no".',
    "exact": 'Think step by step, then give the final answer as "Answer: <answer>".',
}


class ValidationItem(BaseModel):
    """One labelled question (``skills.datasets.LabelledItem`` JSONL rows load as these)."""

    id: str
    question: str
    answer: str | int | float
    answer_type: str | None = None
    choices: list[str] | None = None
    keywords: list[str] | None = None
    category: str | None = None
    source: str | None = None

    model_config = {"extra": "ignore"}

    def prompt(self, *, chat: bool = True) -> str:
        """The question as experts see it while profiling: options listed, answer format asked.

        A base model (``chat=False``) gets no format instruction: its completion prompt already ends
        with ``Answer:`` and it would copy a ``<letter>`` placeholder literally (measured on Gemma).
        """
        text = self.question.strip()
        if self.choices and "\nA." not in text and "\n(A)" not in text:
            text = format_choices(text, self.choices)
        return f"{text}\n\n{ANSWER_FORMAT[self.answer_type or 'number']}" if chat else text


def load_items(path: str | Path, *, limit: int | None = None) -> list[ValidationItem]:
    """Labelled items from JSONL (answer types detected when missing; ungradable types skipped)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file", hint="pass a JSONL file of labelled items (id, question, answer)")
    items: list[ValidationItem] = []
    skipped = 0
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = ValidationItem.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InputError(f"{p}:{n}: not a labelled item: {str(exc).splitlines()[0]}",
                             hint="each line needs a JSON object with id, question and answer") from None
        item.answer_type = item.answer_type or detect_answer_type(item.question)
        if item.answer_type not in ANSWER_TYPES:
            skipped += 1  # e.g. "code": no grader here
            continue
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if skipped:
        log.warning("%s: skipped %d items whose answer_type has no grader (%s only)", p, skipped, ANSWER_TYPES)
    if not items:
        raise InputError(f"{p}: no gradable items", hint=f"answer_type must be one of {', '.join(ANSWER_TYPES)}")
    return items


def build_profiles(rows: Iterable[dict[str, Any]], experts: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """``{expert: {keyword: correct - wrong}}`` from correctness rows (``experts`` listed even if empty)."""
    profiles: dict[str, dict[str, int]] = {e: {} for e in experts}
    for row in rows:
        prof = profiles.setdefault(row["expert"], {})
        for kw in row["keywords"]:
            prof[kw] = prof.get(kw, 0) + (1 if row["correct"] else -1)
    return profiles


def load_profiles(directory: str | Path) -> dict[str, dict[str, float]]:
    """``{expert: profile}`` from the ``*.profile.json`` files of a profiles dir."""
    d = Path(directory)
    files = sorted(d.glob(f"*{PROFILE_SUFFIX}")) if d.is_dir() else []
    if not files:
        raise ConfigError(f"no expert profiles (*{PROFILE_SUFFIX}) in {d}",
                          hint="run `expertmix profile --data FILE --out DIR` and pass that DIR")
    out = {}
    for f in files:
        try:
            data = json.loads(f.read_text())
            out[data["expert"]] = {str(k): float(v) for k, v in data["profile"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{f}: not an expert profile ({exc})", hint="regenerate it with `expertmix profile`")
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``correctness.jsonl`` (a torn last line from an interruption is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: ignoring a torn line (interrupted write)", p)
    return rows


class ProfileStore:
    """The out dir of one profiling run: appends finished rows, knows what is done, writes profiles."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows = read_rows(self.dir / ROWS_FILE)
        self.done = {(r["id"], r["expert"]) for r in self.rows}

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Persist finished rows at once (one write, flushed) so an interruption keeps them."""
        with (self.dir / ROWS_FILE).open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            fh.flush()
        self.rows.extend(rows)
        self.done.update((r["id"], r["expert"]) for r in rows)

    def saved_keywords(self) -> dict[str, list[str]]:
        p = self.dir / ITEMS_FILE
        if not p.exists():
            return {}
        return {r["id"]: r["keywords"] for r in read_rows(p) if r.get("keywords") is not None}

    def save_items(self, items: list[ValidationItem]) -> None:
        text = "".join(json.dumps(it.model_dump(exclude_none=True), ensure_ascii=False) + "\n" for it in items)
        (self.dir / ITEMS_FILE).write_text(text, encoding="utf-8")

    def current_rows(self, item_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows of the given items only (a dir may keep rows of items a later run dropped)."""
        if item_ids is None:
            return list(self.rows)
        keep = set(item_ids)
        return [r for r in self.rows if r["id"] in keep]

    def write_profiles(self, experts: dict[str, str], item_ids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """One ``<expert>.profile.json`` per expert (``experts``: name -> model) over ``item_ids``."""
        rows = self.current_rows(item_ids)
        ids: dict[str, set[str]] = {e: set() for e in experts}
        for r in rows:
            ids.setdefault(r["expert"], set()).add(r["id"])
        profiles = build_profiles(rows, experts)
        counts: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for r in rows:
            for kw in r["keywords"]:
                cell = counts[r["expert"]].setdefault(kw, [0, 0])
                cell[0] += int(bool(r["correct"]))
                cell[1] += 1
        for name, prof in profiles.items():
            hits = [r["correct"] for r in rows if r["expert"] == name]
            data = {"expert": name, "model": experts.get(name), "questions": len(ids[name]),
                    "accuracy": round(sum(hits) / len(hits), 4) if hits else None,
                    "profile": dict(sorted(prof.items(), key=lambda kv: (-kv[1], kv[0]))),
                    "counts": dict(sorted(counts[name].items()))}  # keyword: [correct, answered]
            (self.dir / f"{name}{PROFILE_SUFFIX}").write_text(json.dumps(data, indent=1) + "\n")
        return profiles

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        (self.dir / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def fill_keywords(items: list[ValidationItem], ctx: RunContext, store: ProfileStore, extractor: Any) -> None:
    """Give every item keywords: its own, those saved by an earlier run, else extracted (one batch)."""
    saved = store.saved_keywords()
    for it in items:
        if it.keywords is None and it.id in saved:
            it.keywords = saved[it.id]
    missing = [it for it in items if it.keywords is None]
    if missing:
        found = extractor.extract([Question(id=it.id, text=it.question) for it in missing], ctx)
        for it, kws in zip(missing, found):
            it.keywords = kws
    store.save_items(items)


def pending_by_model(
    items: list[ValidationItem], ctx: RunContext, experts: list[str], done: set[tuple[str, str]]
) -> dict[str, list[tuple[ValidationItem, str]]]:
    """Unfinished (item, expert) pairs grouped per model, experts sharing a model together."""
    groups: dict[str, list[tuple[ValidationItem, str]]] = defaultdict(list)
    for name in experts:
        model = ctx.registry.model_of(name).name
        groups[model].extend((it, name) for it in items if (it.id, name) not in done)
    return {m: g for m, g in groups.items() if g}


def answer_chunk(
    chunk: list[tuple[ValidationItem, str]], model: str, ctx: RunContext, max_tokens: int | None
) -> list[dict[str, Any]]:
    """One batch on ``model``: each expert answers its items; graded rows back."""
    reg = ctx.registry
    requests: list[GenerationRequest] = []
    for it, name in chunk:
        expert = reg.expert(name)
        sampling = expert.sampling.model_copy(update={"max_tokens": max_tokens}) if max_tokens else None
        spec = reg.model(model)
        requests.append(expert_request(ctx.key("profile", it.id, name), expert, spec, it.prompt(chat=spec.chat),
                                       sampling=sampling))
    done = ctx.dispatcher.run_batches({model: requests}, label="profile")
    rows = []
    for (it, name), req in zip(chunk, requests):
        comp = done.get(req.key)
        if comp is None:
            raise BackendError(f"profiling: no completion for question {it.id!r}, expert {name!r}",
                               hint="rerun the same command: finished pairs are kept", transient=True)
        rows.append({"id": it.id, "keywords": it.keywords or [], "expert": name, "model": model,
                     "answer_type": it.answer_type, "gold": str(it.answer),
                     "extracted": extract_answer(comp.text, it.answer_type, choices=it.choices),
                     "correct": is_correct(comp.text, it.answer, it.answer_type, choices=it.choices),
                     "answer": comp.text})
    return rows


def run_profiling(
    items: list[ValidationItem], ctx: RunContext, out_dir: str | Path, *, extractor: Any = None,
    experts: list[str] | None = None, chunk_size: int = 32, max_tokens: int | None = None,
) -> dict[str, Any]:
    """Profile ``experts`` (default: all in the registry) on ``items``; resumable; returns a summary."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    names = experts or list(ctx.registry.experts)
    for name in names:
        ctx.registry.expert(name)  # unknown names fail before any model runs
    store = ProfileStore(out_dir)
    if extractor is None:
        from skills.extract import make_extractor

        extractor = make_extractor("embedding")
    fill_keywords(items, ctx, store, extractor)
    t_kw = time.perf_counter() - t0
    groups = pending_by_model(items, ctx, names, store.done)
    resumed = len(store.done)
    with tqdm(total=sum(map(len, groups.values())), desc="profile", unit="answer", disable=not ctx.progress) as bar:
        for model, pairs in groups.items():
            bar.set_postfix_str(model)
            for start in range(0, len(pairs), max(1, chunk_size)):
                rows = answer_chunk(pairs[start : start + chunk_size], model, ctx, max_tokens)
                store.append(rows)
                bar.update(len(rows))
    ids = [it.id for it in items]
    rows = store.current_rows(ids)
    profiles = store.write_profiles({n: ctx.registry.model_of(n).name for n in names}, ids)
    summary = {
        "questions": len(items), "experts": names, "answers": len(rows), "resumed": resumed,
        "extractor": getattr(extractor, "name", type(extractor).__name__),
        "extractor_config": extractor.config() if hasattr(extractor, "config") else {},
        "keyword_seconds": round(t_kw, 2), "seconds": round(time.perf_counter() - t0, 2),
        "model_loads": ctx.dispatcher.model_loads(),
        "accuracy": expert_accuracy(rows),
        "keywords": len({kw for p in profiles.values() for kw in p}),
    }
    store.write_json("manifest.json", summary)
    return summary


def expert_accuracy(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Fraction correct per expert."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        hits[r["expert"]].append(bool(r["correct"]))
    return {e: round(sum(h) / len(h), 4) for e, h in sorted(hits.items())}
