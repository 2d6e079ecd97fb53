"""Skill router (Symbolic-MoE): recruit experts by their profiles over the question's skills.

Per question: extract keywords (``embedding``, fast on CPU, or ``llm``), map unknown keywords onto
the profile vocabulary (MiniLM cosine), then

- local(e)  = sum of e's profile over the keywords,
- global(e) = (sum of e's whole profile, shifted positive when the minimum is < 0) ** (1/T),
  normalised over experts (T = 0.5),
- keep experts with local > 0 (if none, shift all local scores positive), weight = local x global,
- draw k experts (k = 3) in proportion to weight, with replacement by default (the paper's);
  no keywords -> k uniformly random experts.

Optionally (``replace_rare``), experts chosen for fewer than ``rare_fraction`` of a batch's
questions are swapped for frequently chosen ones, so fewer models load. Draws are deterministic:
a numpy Generator seeded from ``ctx.seed`` and the question id.

Example::

    >>> from routers.base import make_router
    >>> make_router("skill", k=2).config()["k"]
    2
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import skills
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import ExpertChoice, Question, check_question
from routers.base import ROUTERS, RoutingDecision, apply_budget
from skills.extract import SkillExtractor, make_extractor, stable_seed
from skills.keywords import KeywordMapper
from skills.profiles import load_profiles

log = logging.getLogger(__name__)

DEFAULT_PROFILES = Path(skills.__file__).resolve().parent / "data" / "default_profiles"


def shift_positive(values: np.ndarray) -> np.ndarray:
    """``x - min + 1`` when the minimum is negative (the paper's shift), else unchanged."""
    lo = float(values.min()) if values.size else 0.0
    return values - lo + 1 if lo < 0 else values


def global_scores(profiles: dict[str, dict[str, float]], experts: list[str], temperature: float) -> np.ndarray:
    """Each expert's total profile, shifted positive, raised to 1/T, normalised over ``experts``."""
    totals = np.array([sum(profiles.get(e, {}).values()) for e in experts], dtype=float)
    powered = shift_positive(totals) ** (1.0 / temperature)
    s = powered.sum()
    return powered / s if s > 0 else np.full(len(experts), 1.0 / len(experts))


def local_scores(profiles: dict[str, dict[str, float]], experts: list[str], keywords: list[str]) -> np.ndarray:
    """Each expert's profile summed over the question's keywords."""
    return np.array([sum(profiles.get(e, {}).get(kw, 0.0) for kw in keywords) for e in experts], dtype=float)


def recruit_weights(local: np.ndarray, glob: np.ndarray) -> np.ndarray:
    """local x global over experts with local > 0; when none is positive, all locals shifted positive."""
    if (local > 0).any():
        return np.where(local > 0, local, 0.0) * glob
    return shift_positive(local) * glob


@ROUTERS.register("skill")
class SkillRouter:
    """Symbolic-MoE recruiting over expert skill profiles (see the module docstring)."""

    name = "skill"

    def __init__(
        self, k: int = 3, *, temperature: float = 0.5, replacement: bool = True, extractor: str = "embedding",
        extractor_model: str | None = None, profiles: str | Path | None = None, top_n: int = 3,
        threshold: float = 0.2, replace_rare: bool = False, rare_fraction: float = 0.05,
    ) -> None:
        if k < 1:
            raise ConfigError(f"skill router: k must be >= 1, got {k}")
        if temperature <= 0:
            raise ConfigError(f"skill router: temperature must be > 0, got {temperature}")
        if extractor not in ("embedding", "llm"):
            raise ConfigError(f"skill router: unknown extractor {extractor!r}", hint="use 'embedding' or 'llm'")
        self.k, self.temperature, self.replacement = k, temperature, replacement
        self.extractor_name, self.extractor_model = extractor, extractor_model
        self.profiles_dir = Path(profiles) if profiles else DEFAULT_PROFILES
        self.top_n, self.threshold = top_n, threshold
        self.replace_rare, self.rare_fraction = replace_rare, rare_fraction
        self._profiles: dict[str, dict[str, float]] | None = None
        self._mapper: KeywordMapper | None = None
        self._extractor: SkillExtractor | None = None

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "replacement": self.replacement,
                "extractor": self.extractor_name, "extractor_model": self.extractor_model,
                "profiles": str(self.profiles_dir), "top_n": self.top_n, "threshold": self.threshold,
                "replace_rare": self.replace_rare, "rare_fraction": self.rare_fraction}

    # ---- loading -------------------------------------------------------------------------
    def set_profiles(self, profiles: dict[str, dict[str, float]]) -> None:
        """Use in-memory profiles instead of a profiles dir (evaluation on a recorded table)."""
        self._profiles = {e: dict(p) for e, p in profiles.items()}
        self._mapper = None

    def warm_up(self, ctx: RunContext) -> None:
        self._load()
        if self._mapper is not None:
            self._mapper.load()
        if hasattr(self._extractor, "load"):
            self._extractor.load()

    def _load(self) -> None:
        if self._profiles is None:
            self._profiles = load_profiles(self.profiles_dir)
        if self._mapper is None:
            self._mapper = KeywordMapper(sorted({kw for p in self._profiles.values() for kw in p}))
        if self._extractor is None:
            if self.extractor_name == "llm":
                self._extractor = make_extractor("llm", model=self.extractor_model)
            else:
                self._extractor = make_extractor("embedding", top_n=self.top_n, threshold=self.threshold)

    def experts_for(self, ctx: RunContext) -> list[str]:
        """Registry experts, in registry order; at least one must have a profile."""
        self._load()
        experts = list(ctx.registry.experts)
        if not any(e in self._profiles for e in experts):
            raise ConfigError(
                f"skill router: none of the experts {experts} has a profile in {self.profiles_dir}",
                hint="run `expertmix profile --experts <registry> --out DIR` and pass profiles=DIR",
            )
        return experts

    # ---- routing -------------------------------------------------------------------------
    def route(self, questions: list[Question], ctx: RunContext) -> list[RoutingDecision]:
        for q in questions:
            check_question(q.text, where=q.id)
        experts = self.experts_for(ctx)
        raw = self._extractor.extract(questions, ctx) if questions else []
        return self.route_keywords(questions, self.map_keywords(raw), ctx, experts=experts)

    def map_keywords(self, keywords: list[list[str]]) -> list[list[str]]:
        """Each question's keywords mapped onto the profile vocabulary (nearest by MiniLM cosine)."""
        self._load()
        return [self._mapper.map(kws) if kws else [] for kws in keywords]

    def route_keywords(
        self, questions: list[Question], keywords: list[list[str]], ctx: RunContext, *, experts: list[str] | None = None
    ) -> list[RoutingDecision]:
        """Recruit for questions whose (profile-vocabulary) keywords are already known."""
        experts = experts or self.experts_for(ctx)
        glob = global_scores(self._profiles, experts, self.temperature)
        plans = [self._draw(q, kws, experts, glob, ctx) for q, kws in zip(questions, keywords)]
        notes: list[list[str]] = [[] for _ in plans]
        if self.replace_rare and len(plans) > 1:
            notes = self._replace_rare(plans)
        out = []
        for q, kws, (drawn, weights), extra in zip(questions, keywords, plans, notes):
            ranked = sorted(drawn, key=lambda e: -weights[e])  # best first so a budget keeps the best
            choices = [ExpertChoice(name=e, score=round(float(weights[e]), 4)) for e in ranked]
            chosen = apply_budget(choices, ctx.registry, ctx.budget, k=self.k)
            conf = max(weights.values()) if weights else None
            note = [] if kws else ["skill router: no skill keywords; drew experts uniformly at random"]
            out.append(RoutingDecision(question_id=q.id, experts=chosen, router=self.name, skills=kws,
                                       confidence=None if conf is None else round(float(conf), 4),
                                       notes=note + extra))
        return out

    def _draw(
        self, q: Question, kws: list[str], experts: list[str], glob: np.ndarray, ctx: RunContext
    ) -> tuple[list[str], dict[str, float]]:
        """k experts drawn for one question and the normalised weights of all candidates."""
        rng = np.random.default_rng(stable_seed(ctx.seed, q.id))
        if kws:
            w = recruit_weights(local_scores(self._profiles, experts, kws), glob)
        else:
            w = np.ones(len(experts))
        if w.sum() <= 0:  # every candidate has zero global weight: fall back to uniform
            w = np.ones(len(experts))
        p = w / w.sum()
        positive = int((p > 0).sum())
        size = self.k if self.replacement else min(self.k, positive)
        idx = rng.choice(len(experts), size=size, replace=self.replacement, p=p)
        weights = {experts[j]: float(p[j]) for j in range(len(experts)) if p[j] > 0}
        return [experts[j] for j in idx], weights

    def _replace_rare(self, plans: list[tuple[list[str], dict[str, float]]]) -> list[list[str]]:
        """Swap experts picked for < rare_fraction of the questions for frequent ones (fewer loads)."""
        counts = Counter(e for drawn, _ in plans for e in set(drawn))
        cutoff = self.rare_fraction * len(plans)
        frequent = [e for e, c in counts.most_common() if c >= cutoff]
        notes: list[list[str]] = []
        for drawn, weights in plans:
            swapped = []
            for i, e in enumerate(drawn):
                if e in frequent or not frequent:
                    continue
                pool = [f for f in frequent if self.replacement or f not in drawn]
                if not pool:
                    continue
                # the frequent expert this question itself weighs most; else the most frequent one
                sub = max(pool, key=lambda f: (weights.get(f, 0.0), counts[f]))
                drawn[i] = sub
                weights.setdefault(sub, 0.0)
                swapped.append(f"{e}->{sub}")
            notes.append([f"skill router: replaced rarely chosen experts {', '.join(swapped)}"] if swapped else [])
        return notes
