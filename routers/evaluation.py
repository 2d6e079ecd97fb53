"""Router evaluation by source and by category, with 95% intervals (``expertmix eval-router``).

A single accuracy over a mixed file hides what matters: whether the router generalises to a
source it never saw. :func:`report` gives the overall metrics plus, per source (the ``source``
field of each labelled line) and per category, accuracy with a Wilson interval, macro-F1 with a
bootstrap interval, and the in-domain top-1 rate (the top expert's registry ``categories``
include the gold category: the embedding and skill routers' measure).

Example::

    >>> r = report(["math", "code", "math"], ["math", "code", "law"], ["a", "a", "b"])
    >>> r["by_source"]["a"]["accuracy"], r["by_source"]["b"]["n"]
    (1.0, 1)
"""

from __future__ import annotations

import numpy as np

from routers.category_train import classification_metrics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(float(centre - half), 4), round(float(centre + half), 4)


def macro_f1_interval(truth: list[str], pred: list[str], rounds: int = 500, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of macro-F1 (resampling questions)."""
    if not truth:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    t, p = np.array(truth, dtype=object), np.array(pred, dtype=object)
    stats = []
    for _ in range(rounds):
        idx = rng.integers(0, len(t), len(t))
        stats.append(classification_metrics(list(t[idx]), list(p[idx]))["macro_f1"])
    return round(float(np.percentile(stats, 2.5)), 4), round(float(np.percentile(stats, 97.5)), 4)


def summary(truth: list[str], pred: list[str], in_domain: list[bool] | None = None) -> dict:
    """n, accuracy (+ Wilson CI), macro-F1 (+ bootstrap CI) and the in-domain top-1 rate."""
    m = classification_metrics(truth, pred)
    hits = sum(t == p for t, p in zip(truth, pred))
    out = {"n": len(truth), "accuracy": m["accuracy"], "accuracy_ci95": wilson(hits, len(truth)),
           "macro_f1": m["macro_f1"], "macro_f1_ci95": macro_f1_interval(truth, pred)}
    if in_domain is not None:
        out["in_domain_top1"] = round(float(np.mean(in_domain)), 4) if in_domain else 0.0
        out["in_domain_top1_ci95"] = wilson(sum(in_domain), len(in_domain))
    return out


def report(truth: list[str], pred: list[str], sources: list[str], in_domain: list[bool] | None = None) -> dict:
    """Overall metrics (with confusion matrix) and breakdowns ``by_source`` and ``by_category``."""
    labels = sorted(set(truth) | set(pred))
    out = {**classification_metrics(truth, pred, labels), **summary(truth, pred, in_domain)}
    groups: dict[str, dict[str, list[int]]] = {"by_source": {}, "by_category": {}}
    for i, (s, t) in enumerate(zip(sources, truth)):
        groups["by_source"].setdefault(s, []).append(i)
        groups["by_category"].setdefault(t, []).append(i)
    for key, index in groups.items():
        out[key] = {}
        for name, idx in sorted(index.items()):
            dom = [in_domain[i] for i in idx] if in_domain is not None else None
            out[key][name] = summary([truth[i] for i in idx], [pred[i] for i in idx], dom)
            if key == "by_category":
                out[key][name]["f1"] = out["f1"].get(name, 0.0)
    return out


def format_table(rows: dict[str, dict], title: str) -> str:
    """A markdown table of a ``by_source`` / ``by_category`` breakdown."""
    has_dom = any("in_domain_top1" in r for r in rows.values())
    head = f"| {title} | n | accuracy (95% CI) | macro-F1 (95% CI) |" + (" in-domain top-1 (95% CI) |" if has_dom else "")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, r in rows.items():
        line = (f"| {name} | {r['n']} | {r['accuracy']:.3f} ({r['accuracy_ci95'][0]:.2f}-{r['accuracy_ci95'][1]:.2f}) "
                f"| {r['macro_f1']:.3f} ({r['macro_f1_ci95'][0]:.2f}-{r['macro_f1_ci95'][1]:.2f}) |")
        if has_dom:
            lo, hi = r["in_domain_top1_ci95"]
            line += f" {r['in_domain_top1']:.3f} ({lo:.2f}-{hi:.2f}) |"
        lines.append(line)
    return "\n".join(lines)
