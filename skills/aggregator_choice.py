"""Choose the aggregator the Symbolic-MoE way: who best synthesises 1 correct + 2 wrong answers.

From a profiling run's recorded answers, every validation question that has at least one correct
and two wrong expert answers gives one synthetic prompt: those three chain-of-thought answers,
shuffled (seeded), wrapped in the synthesis aggregator's fusion prompt. Every candidate model answers all of them (one
batch per model); the most accurate becomes the aggregator, written to ``aggregator.json``.

Example::

    >>> rows = [{"id": "q", "expert": e, "correct": c, "answer": a}
    ...         for e, c, a in [("x", True, "A"), ("y", False, "B"), ("z", False, "C")]]
    >>> len(synthetic_sets(rows, seed=0))
    1
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from orchestrator.context import RunContext
from orchestrator.prompts import FUSION_SYSTEM, build_request, fusion_user_prompt
from orchestrator.core import Sampling
from skills.extract import stable_seed
from skills.grading import extract_answer, is_correct
from skills.profiles import ProfileStore, ValidationItem


def synthetic_sets(rows: list[dict[str, Any]], *, seed: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """``[{"id", "answers": [3 texts], "correct_index"}]``: 1 correct + 2 wrong answers, shuffled.

    Answers come from different experts; questions are taken in first-seen order, up to ``limit``.
    """
    by_q: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_q[r["id"]].append(r)
    out = []
    for qid, qrows in by_q.items():
        right = [r for r in qrows if r["correct"]]
        wrong = [r for r in qrows if not r["correct"]]
        if not right or len(wrong) < 2:
            continue
        rng = random.Random(stable_seed(seed, qid))
        picked = [rng.choice(right), *rng.sample(wrong, 2)]
        order = list(range(3))
        rng.shuffle(order)
        out.append({"id": qid, "answers": [picked[i]["answer"] for i in order], "correct_index": order.index(0),
                    "experts": [picked[i]["expert"] for i in order]})
        if limit is not None and len(out) >= limit:
            break
    return out


def choose_aggregator(
    items: list[ValidationItem], ctx: RunContext, store: ProfileStore, *, candidates: list[str] | None = None,
    limit: int = 30, max_tokens: int = 128, rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score every candidate model (default: all models the registry uses) and record the best.

    ``rows`` (``{"id", "expert", "correct", "answer"}``): the answers to build the prompts from;
    default the profiling run's recorded answers (``store.rows``).
    """
    reg = ctx.registry
    names = candidates or reg.used_models()
    for name in names:
        reg.model(name)
    by_id = {it.id: it for it in items}
    sets = [s for s in synthetic_sets(store.rows if rows is None else rows, seed=ctx.seed) if s["id"] in by_id][:limit]
    if not sets:
        result = {"model": reg.aggregator_model, "accuracy": None, "scores": {}, "prompts": 0,
                  "note": "no question had 1 correct + 2 wrong expert answers; kept the registry's aggregator_model"}
        store.write_json("aggregator.json", result)
        return result
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    groups = {
        m: [build_request(ctx.key("aggregator", m, s["id"]), reg.model(m), FUSION_SYSTEM,
                          _fusion_prompt(by_id[s["id"]], s["answers"], chat=reg.model(m).chat), sampling) for s in sets]
        for m in names
    }
    done = ctx.dispatcher.run_batches(groups, label="aggregator", progress=ctx.progress)
    scores = {}
    for m in names:
        hits = [is_correct(getattr(done.get(ctx.key("aggregator", m, s["id"])), "text", None),
                           by_id[s["id"]].answer, by_id[s["id"]].answer_type, choices=by_id[s["id"]].choices)
                for s in sets]
        scores[m] = round(sum(hits) / len(hits), 4)
    # ties go to the registry's current aggregator, then the name: deterministic
    best = max(names, key=lambda m: (scores[m], m == reg.aggregator_model, m))
    result = {"model": best, "accuracy": scores[best], "scores": scores, "prompts": len(sets),
              "seed": ctx.seed, "max_tokens": max_tokens,
              "answers": "profiling run" if rows is None else "expertmix eval single-expert answers (validation)"}
    store.write_json("aggregator.json", result)
    return result


def _fusion_prompt(item: ValidationItem, answers: list[str], *, chat: bool) -> str:
    """The same fusion prompt the synthesis aggregator sends (each answer's stated final value)."""
    kind = item.answer_type if item.answer_type in ("choice", "number", "boxed") else "text"
    stated = [(a, extract_answer(a, kind, choices=item.choices) if kind != "text" else None) for a in answers]
    return fusion_user_prompt(item.prompt(chat=chat), stated, kind)
