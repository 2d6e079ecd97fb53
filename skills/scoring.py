"""Confidence-aware skill scoring: smoothed per-skill accuracy with the registry's declared skills as prior.

Symbolic-MoE sums +1/-1 per (expert, keyword): a keyword seen once weighs as much as one seen a
hundred times, so a sparse profile routes on noise. Here each (expert, keyword) cell is a Beta
posterior instead::

    prior mean  m(e, kw) = base(e) + (1 - base(e)) * lift * declared(e, kw)
    posterior   p(e, kw) = (correct + strength * m) / (answered + strength)

``base(e)`` is the expert's Laplace-smoothed accuracy over its whole profile and ``declared(e, kw)``
in [0, 1] says how close ``kw`` is to the skills (and categories) the registry declares for ``e``
(MiniLM cosine, rescaled). With no data a cell is its prior (declared expertise); with many answers
it is the measured accuracy. An expert's score for a question is the posterior averaged over the
question's keywords, weighted 1, 1/2, 1/3, ... by extraction rank; experts are weighted
``softmax(score / tau)``.

Example::

    >>> counts = {"a": {"algebra": (9, 10)}, "b": {"algebra": (1, 10)}}
    >>> prior = DeclaredPrior({"a": 0.5, "b": 0.5}, lambda e, kws: [0.0] * len(kws))
    >>> s = smoothed_scores(counts, ["a", "b"], ["algebra"], prior, strength=10.0, lift=0.5)
    >>> bool(s[0] > s[1])
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

Counts = dict[str, dict[str, tuple[int, int]]]
"""``{expert: {keyword: (correct, answered)}}``."""

# MiniLM cosine of unrelated short skill names is ~0.1-0.35, of related ones ~0.5-0.8 (measured on
# the skill bank); the rescaling maps FLOOR -> 0 and 1 -> 1.
DECLARED_FLOOR = 0.35


def build_counts(rows: Iterable[dict[str, Any]], experts: Iterable[str] = ()) -> Counts:
    """``{expert: {keyword: (correct, answered)}}`` from correctness rows."""
    out: dict[str, dict[str, list[int]]] = {e: {} for e in experts}
    for row in rows:
        prof = out.setdefault(row["expert"], {})
        for kw in row["keywords"]:
            cell = prof.setdefault(kw, [0, 0])
            cell[0] += 1 if row["correct"] else 0
            cell[1] += 1
    return {e: {kw: (c, n) for kw, (c, n) in p.items()} for e, p in out.items()}


def base_accuracy(rows: Iterable[dict[str, Any]], experts: Iterable[str]) -> dict[str, float]:
    """Laplace-smoothed accuracy per expert over all its answered questions: (c + 1) / (n + 2)."""
    hits: dict[str, list[int]] = {e: [0, 0] for e in experts}
    for row in rows:
        cell = hits.setdefault(row["expert"], [0, 0])
        cell[0] += 1 if row["correct"] else 0
        cell[1] += 1
    return {e: (c + 1) / (n + 2) for e, (c, n) in hits.items()}


def rescale_cosine(cos: np.ndarray, floor: float = DECLARED_FLOOR) -> np.ndarray:
    """Cosine similarity -> [0, 1]: ``floor`` and below -> 0, 1 -> 1, linear between."""
    return np.clip((np.asarray(cos, dtype=float) - floor) / (1.0 - floor), 0.0, 1.0)


@dataclass
class DeclaredPrior:
    """Per-expert base accuracy plus a ``declared(expert, keywords) -> [0..1] per keyword`` function."""

    base: dict[str, float]
    declared: Callable[[str, list[str]], list[float]]

    def means(self, expert: str, keywords: list[str], lift: float) -> np.ndarray:
        """Prior mean accuracy of ``expert`` on each keyword."""
        b = self.base.get(expert, 0.5)
        d = np.asarray(self.declared(expert, keywords), dtype=float) if keywords else np.zeros(0)
        return b + (1.0 - b) * lift * d


def smoothed_scores(
    counts: Counts, experts: list[str], keywords: list[str], prior: DeclaredPrior, *,
    strength: float, lift: float,
) -> np.ndarray:
    """Mean Beta-posterior accuracy of each expert over ``keywords`` (the prior mean when unseen)."""
    if not keywords:
        return np.array([prior.base.get(e, 0.5) for e in experts], dtype=float)
    w = rank_weights(len(keywords))
    out = np.empty(len(experts), dtype=float)
    for i, e in enumerate(experts):
        m = prior.means(e, keywords, lift)
        cells = counts.get(e, {})
        c = np.array([cells.get(kw, (0, 0))[0] for kw in keywords], dtype=float)
        n = np.array([cells.get(kw, (0, 0))[1] for kw in keywords], dtype=float)
        out[i] = float(w @ ((c + strength * m) / (n + strength)))
    return out


def rank_weights(n: int) -> np.ndarray:
    """Weights 1, 1/2, 1/3, ... normalised: an extractor's best-matching keyword counts most."""
    w = 1.0 / np.arange(1, n + 1)
    return w / w.sum()


def softmax_weights(scores: np.ndarray, tau: float) -> np.ndarray:
    """``softmax(scores / tau)``: weights that sum to 1 (a 1-point gap in ``tau`` units = e-fold)."""
    z = (np.asarray(scores, dtype=float) - np.max(scores)) / tau
    w = np.exp(z)
    return w / w.sum()


class SkillSimilarity:
    """``declared(expert, keywords)``: how close each keyword is to what the registry declares for an expert.

    1.0 when the keyword's category (``skills/data/skill_categories.yaml``) is one of the expert's
    ``categories`` or the keyword is one of its ``skills``; else the rescaled max MiniLM cosine to
    its skills (single-word MiniLM cosines are weak: "percentages" vs "arithmetic" is 0.32, hence
    the category table). ``embed`` is a ``list[str] -> (n, d)`` normalised-embedding function.
    """

    def __init__(self, declared_skills: dict[str, list[str]], embed: Callable[[list[str]], np.ndarray], *,
                 categories: dict[str, list[str]] | None = None, keyword_categories: dict[str, set[str]] | None = None,
                 floor: float = DECLARED_FLOOR) -> None:
        self.declared_skills = {e: [s.lower() for s in v] for e, v in declared_skills.items()}
        self.categories = {e: set(v) for e, v in (categories or {}).items()}
        self.keyword_categories = keyword_categories if keyword_categories is not None else load_skill_categories()
        self.embed, self.floor = embed, floor
        self._matrices: dict[str, np.ndarray] = {}

    def __call__(self, expert: str, keywords: list[str]) -> list[float]:
        if not keywords:
            return []
        cats = self.categories.get(expert, set())
        in_category = np.array([bool(self.keyword_categories.get(kw, set()) & cats) for kw in keywords])
        skills = self.declared_skills.get(expert) or []
        if not skills:
            return list(in_category.astype(float))
        if expert not in self._matrices:
            self._matrices[expert] = self.embed(skills)
        sims = self.embed(keywords) @ self._matrices[expert].T
        best = rescale_cosine(sims.max(axis=1), self.floor)
        exact = np.array([kw.lower() in skills for kw in keywords])
        return list(np.where(exact | in_category, 1.0, best))


def load_skill_categories(path: str | Path | None = None) -> dict[str, set[str]]:
    """``{keyword: {category, ...}}`` from the shipped (or given) ``skill_categories.yaml``."""
    import yaml

    text = Path(path).read_text() if path else (resources.files("skills") / "data" / "skill_categories.yaml").read_text()
    out: dict[str, set[str]] = {}
    for category, keywords in (yaml.safe_load(text) or {}).items():
        for kw in keywords or []:
            out.setdefault(str(kw).lower(), set()).add(str(category))
    return out


def declared_of(registry: Any, experts: list[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each expert's declared ``skills`` and ``categories`` from the registry."""
    skills = {e: list(registry.expert(e).skills or []) for e in experts}
    categories = {e: list(registry.expert(e).categories or []) for e in experts}
    return skills, categories
