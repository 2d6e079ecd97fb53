"""Evaluate a routing policy offline on a recorded correctness table (no model reruns).

The table (``correctness.jsonl`` from ``expertmix profile``) says, for every (question, expert),
whether the expert was right. Split the questions, build profiles on one part, route the other,
and score each routed question by the recorded correctness of the experts it got.

Example::

    >>> rows = [{"id": "q", "expert": "a", "keywords": ["x"], "correct": True},
    ...         {"id": "q", "expert": "b", "keywords": ["x"], "correct": False}]
    >>> split_ids(rows, holdout=0.5, seed=0)[1] in (["q"], [])
    True
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from orchestrator.context import RunContext
from orchestrator.core import Question
from skills.extract import stable_seed
from skills.profiles import build_profiles


def split_ids(rows: list[dict[str, Any]], *, holdout: float = 0.3, seed: int = 0) -> tuple[list[str], list[str]]:
    """(profile ids, held-out ids): a stable hash split of the table's question ids."""
    ids = list(dict.fromkeys(r["id"] for r in rows))
    test = [i for i in ids if stable_seed(seed, "split", i) % 1000 < holdout * 1000]
    held = set(test)
    return [i for i in ids if i not in held], test


def correctness(rows: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """``{question id: {expert: correct}}``."""
    table: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in rows:
        table[r["id"]][r["expert"]] = bool(r["correct"])
    return dict(table)


def evaluate_router(
    router: Any, rows: list[dict[str, Any]], ctx: RunContext, *, holdout: float = 0.3, seed: int = 0,
    map_keywords: bool = True, questions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Profile on the split's first part, route the held-out part, compare with baselines.

    ``questions`` (id -> text) is needed by ``scoring: learned`` (kNN over the profile part).
    ``routed``: mean recorded correctness of the routed experts (each draw counts); ``random``:
    that of a uniformly random expert; ``best_single``: the expert best on the profile part, used
    for every held-out question; ``oracle``: a question counts if any expert got it right.
    """
    experts = sorted({r["expert"] for r in rows})
    complete = {q for q, answers in correctness(rows).items() if len(answers) == len(experts)}
    rows = [r for r in rows if r["id"] in complete]  # only questions every expert answered
    train, test = split_ids(rows, holdout=holdout, seed=seed)
    train_set = set(train)
    train_rows = [r for r in rows if r["id"] in train_set]
    if getattr(router, "scoring", "paper") == "paper":
        router.set_profiles(build_profiles(train_rows, experts))
    else:
        router.set_rows(train_rows, questions=questions)
    table = correctness(rows)
    keywords = {r["id"]: r["keywords"] for r in rows}
    kws = [keywords[i] for i in test]
    if map_keywords:
        kws = router.map_keywords(kws)
    texts = questions or {}
    routed_qs = [Question(id=i, text=texts.get(i, i)) for i in test]
    vectors = router.encode([q.text for q in routed_qs]) if getattr(router, "scoring", "") == "learned" else None
    decisions = router.route_keywords(routed_qs, kws, ctx, vectors=vectors)
    routed = [sum(table[d.question_id].get(e, False) for e in d.names) / len(d.names) for d in decisions]
    rand = [sum(table[i].values()) / len(table[i]) for i in test]
    train_acc = {e: sum(table[i].get(e, False) for i in train) / max(1, len(train)) for e in experts}
    best = max(experts, key=lambda e: (train_acc[e], e))
    return {
        "profile_questions": len(train), "heldout_questions": len(test),
        "routed": _mean(routed), "random": _mean(rand),
        "best_single": _mean([float(table[i].get(best, False)) for i in test]), "best_single_expert": best,
        "oracle": _mean([float(any(table[i].values())) for i in test]),
        "chosen": dict(sorted(_count(decisions).items())),
    }


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def _count(decisions: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for d in decisions:
        for e in d.names:
            counts[e] += 1
    return counts
