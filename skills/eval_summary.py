"""Summaries of an evaluation's answers: accuracy with a 95% Wilson interval, cost, oracle, agreement.

``summarize(rows)`` groups answers.jsonl rows by system and task (plus ``all``); the oracle is
correct on an item when any single-expert system is (its cost: all of them together). The
ensemble's own "recruited oracle" (any expert it routed to was right) shows how much a perfect
aggregator could have gained.

Example::

    >>> round(wilson(8, 10)[0], 3), round(wilson(8, 10)[1], 3)
    (0.49, 0.943)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

ORACLE = "oracle"
ALL = "all"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials ((0, 0) for n = 0)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def oracle_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One oracle row per item answered by every single-expert system (best expert per item)."""
    experts = sorted({r["system"] for r in rows if r["system"].startswith("expert:")})
    if len(experts) < 2:
        return []
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["system"] in experts:
            by_item[r["id"]].append(r)
    out = []
    for item_id, rs in by_item.items():
        if len(rs) != len(experts):
            continue
        right = [r["system"] for r in rs if r["correct"]]
        out.append({"system": ORACLE, "task": rs[0]["task"], "id": item_id, "correct": bool(right),
                    "routed": [s.removeprefix("expert:") for s in right[:1]],
                    "tokens": sum(r["tokens"] for r in rs), "seconds": sum(r["seconds"] for r in rs)})
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"systems": [...], "tasks": [...], "cells": {system: {task: cell}}}``; a cell holds n,
    correct, accuracy, ci (low, high), tokens and seconds per item, recruited-oracle accuracy."""
    rows = [*rows, *oracle_rows(rows)]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["system"], r["task"])].append(r)
        groups[(r["system"], ALL)].append(r)
    cells: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (system, task), rs in groups.items():
        cells[system][task] = _cell(rs)
    return {"systems": systems, "tasks": [*tasks, ALL], "cells": dict(cells)}


def _cell(rs: list[dict[str, Any]]) -> dict[str, Any]:
    n, k = len(rs), sum(1 for r in rs if r["correct"])
    lo, hi = wilson(k, n)
    recruited = [r for r in rs if r.get("experts")]
    reach = sum(1 for r in recruited if any(e["correct"] for e in r["experts"]))
    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci": [lo, hi],
            "tokens": sum(r["tokens"] for r in rs) / n if n else 0.0,
            "seconds": sum(r["seconds"] for r in rs) / n if n else 0.0,
            "recruited_oracle": reach / len(recruited) if recruited else None}


def routed_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Counter]]:
    """Per pipeline system and task: how often each expert was routed to."""
    out: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in rows:
        if not r["system"].startswith("expert:") and r["system"] != ORACLE:
            out[r["system"]][r["task"]].update(r.get("routed", []))
    return {s: dict(t) for s, t in out.items()}


def agreement(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[float | None]]]:
    """Pairwise agreement of single experts: share of common items with the same extracted answer."""
    answers: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in rows:
        if r["system"].startswith("expert:"):
            answers[r["system"].removeprefix("expert:")][r["id"]] = r.get("extracted")
    names = sorted(answers)
    matrix: list[list[float | None]] = []
    for a in names:
        row: list[float | None] = []
        for b in names:
            common = set(answers[a]) & set(answers[b])
            row.append(sum(1 for i in common if answers[a][i] is not None and answers[a][i] == answers[b][i])
                       / len(common) if common else None)
        matrix.append(row)
    return names, matrix


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per system, per task ``acc [lo, hi]``, then tokens and s per item."""
    tasks = summary["tasks"]
    head = ["system", *[f"{t} (n)" for t in tasks], "tokens/item", "s/item"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary["systems"]:
        cells = summary["cells"][s]
        vals = []
        for t in tasks:
            c = cells.get(t)
            vals.append(f"{c['accuracy']:.3f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}] ({c['n']})" if c else "-")
        total = cells[ALL]
        lines.append(f"| {s} | " + " | ".join(vals) + f" | {total['tokens']:.0f} | {total['seconds']:.2f} |")
    return "\n".join(lines)


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of (name, cost, accuracy) points no other point beats on both (lower cost, higher acc)."""
    front = []
    for name, cost, acc in points:
        if not any((c <= cost and a >= acc) and (c < cost or a > acc) for _, c, a in points):
            front.append(name)
    return front
