"""Skill router (Symbolic-MoE): recruit experts by their profiles over the question's skills.

Per question: extract keywords (``embedding``, fast on CPU, or ``llm``), map unknown keywords onto
the profile vocabulary (MiniLM cosine), score every expert, draw ``k`` experts (k = 3) in
proportion to the weights, with replacement by default (the paper's); best-weighted first.

``scoring`` chooses how experts are scored (:mod:`skills.scoring`, :mod:`skills.learned`):

- ``smoothed`` (default): each expert's Beta-posterior accuracy on the keywords, its prior the
  registry's declared ``skills``/``categories`` (``prior_strength`` pseudo-answers, ``prior_lift``),
  so a sparse or noisy profile falls back to declared expertise; weights ``softmax(score / tau)``.
- ``learned``: P(correct | question embedding) from a kNN over the profiled questions, the same
  prior; weights ``softmax(P / tau)``.
- ``paper``: Symbolic-MoE exactly: local(e) = sum of e's +1/-1 profile over the keywords,
  global(e) = (e's whole profile, shifted positive) ** (1/T), normalised (T = ``temperature``);
  experts with local > 0 kept (if none, all shifted positive); weight = local x global.

``topic`` (default 0.6 with ``smoothed``/``learned``, 0 with ``paper``) adds ``topic`` x P(the question's topic is one of the expert's
registry ``categories``), from the category router's classifier, to every expert's score before the
softmax: the skills say what a question needs, the topic whose field it is. 0 (off) keeps the paper.

No keywords -> ``paper`` draws k experts uniformly at random; the others score on the prior
(base accuracy). Optionally (``replace_rare``), experts chosen for fewer than ``rare_fraction`` of
a batch's questions are swapped for frequently chosen ones, so fewer models load. Draws are
deterministic: a numpy Generator seeded from ``ctx.seed`` and the question id.

Example::

    >>> from routers.base import make_router
    >>> make_router("skill", k=2).config()["scoring"]
    'smoothed'
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
from orchestrator.core import ExpertChoice, Question
from routers.base import ROUTERS, BaseRouter, RoutingDecision, Scored
from routers.skill_multilingual import MultilingualKeywords, is_foreign
from skills.extract import EmbeddingSkillExtractor, SkillExtractor, make_extractor, stable_seed
from skills.keywords import KeywordMapper
from skills.profiles import ROWS_FILE, build_profiles, load_profiles, read_rows
from skills.scorer import SkillScorer
from skills.scoring import softmax_weights

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


SCORINGS = ("smoothed", "learned", "paper")
# weight of the topic prior (module doc); chosen on a fresh draw of the evaluation sources,
# docs/routers.md: in-domain first 0.626 (0 = off) -> 0.667 (0.3), 0.674 (0.6), 0.671 (1.0)
DEFAULT_TOPIC = 0.6


@ROUTERS.register("skill")
class SkillRouter(BaseRouter):
    """Symbolic-MoE recruiting over expert skill profiles (see the module docstring)."""

    name = "skill"

    def __init__(
        self, k: int = 3, *, seed: int = 0, temperature: float = 0.5, replacement: bool = True, extractor: str = "embedding",
        extractor_model: str | None = None, profiles: str | Path | None = None, top_n: int = 3,
        threshold: float = 0.2, head_chars: int = 120, multilingual: bool = True, replace_rare: bool = False, rare_fraction: float = 0.05,
        scoring: str = "smoothed", prior_strength: float = 8.0, prior_lift: float = 0.6, tau: float = 0.05,
        neighbours: int = 32, knn_tau: float = 0.2, topic: float | None = None,
    ) -> None:
        super().__init__(k=k, seed=seed)
        if temperature <= 0 or tau <= 0:
            raise ConfigError(f"skill router: temperature and tau must be > 0, got {temperature}, {tau}")
        if extractor not in ("embedding", "llm"):
            raise ConfigError(f"skill router: unknown extractor {extractor!r}", hint="use 'embedding' or 'llm'")
        if scoring not in SCORINGS:
            raise ConfigError(f"skill router: unknown scoring {scoring!r}", hint=f"use one of: {', '.join(SCORINGS)}")
        if topic is None:
            topic = 0.0 if scoring == "paper" else DEFAULT_TOPIC
        if topic < 0 or (topic > 0 and scoring == "paper"):
            raise ConfigError(f"skill router: topic must be >= 0 and needs scoring smoothed or learned, got "
                              f"{topic} with {scoring!r}", hint="topic: 0 keeps the paper's scoring exactly")
        if prior_strength <= 0 or not 0 <= prior_lift <= 1:
            raise ConfigError(f"skill router: need prior_strength > 0 and 0 <= prior_lift <= 1, got "
                              f"{prior_strength}, {prior_lift}")
        self.temperature, self.replacement = temperature, replacement
        self.extractor_name, self.extractor_model = extractor, extractor_model
        self.profiles_dir = Path(profiles) if profiles else DEFAULT_PROFILES
        self.top_n, self.threshold, self.head_chars, self.multilingual = top_n, threshold, head_chars, multilingual
        self._ml: MultilingualKeywords | None = None
        self.replace_rare, self.rare_fraction = replace_rare, rare_fraction
        self.scoring, self.prior_strength, self.prior_lift, self.tau = scoring, prior_strength, prior_lift, tau
        self.neighbours, self.knn_tau = neighbours, knn_tau
        self.topic = topic
        self._topic_router: Any = None
        self._profiles: dict[str, dict[str, float]] | None = None
        self._mapper: KeywordMapper | None = None
        self._extractor: SkillExtractor | None = None
        self._scorer: SkillScorer | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "temperature": self.temperature, "replacement": self.replacement,
                "extractor": self.extractor_name, "extractor_model": self.extractor_model,
                "profiles": str(self.profiles_dir), "top_n": self.top_n, "threshold": self.threshold, "head_chars": self.head_chars,
                "multilingual": self.multilingual,
                "replace_rare": self.replace_rare, "rare_fraction": self.rare_fraction, "scoring": self.scoring,
                "prior_strength": self.prior_strength, "prior_lift": self.prior_lift, "tau": self.tau,
                "neighbours": self.neighbours, "knn_tau": self.knn_tau, "topic": self.topic}

    # ---- loading -------------------------------------------------------------------------
    def set_profiles(self, profiles: dict[str, dict[str, float]]) -> None:
        """Use in-memory +1/-1 profiles (``scoring: paper`` only; the others need :meth:`set_rows`)."""
        if self.scoring != "paper":
            raise ConfigError(f"skill router: scoring {self.scoring!r} needs correctness rows, not net profiles",
                              hint="call set_rows(rows) or use scoring: paper")
        self._profiles = {e: dict(p) for e, p in profiles.items()}
        self._mapper = None

    def set_rows(self, rows: list[dict[str, Any]], questions: dict[str, str] | None = None) -> None:
        """Profile on in-memory correctness rows (evaluation on a recorded table)."""
        self._profiles = {e: dict(p) for e, p in build_profiles(rows).items()}
        self._scorer = SkillScorer.from_rows(self, rows, questions=questions)
        self._mapper = None

    def set_similarity(self, declared: Any) -> None:
        """Replace the declared-skill similarity (``(expert, keywords) -> [0..1]``; tests use fakes)."""
        self._load()
        self._scorer.declared = declared

    def warm_up(self, ctx: RunContext) -> None:
        self._load()
        if self._mapper is not None:
            self._mapper.load()
        if hasattr(self._extractor, "load"):
            self._extractor.load()
        if self._scorer is not None:
            self._scorer.load()
        if self.topic > 0 and any(spec.categories for spec in ctx.registry.experts.values()):
            self._topics().warm_up(ctx)

    def _load(self) -> None:
        if self._profiles is None:
            if self.scoring == "paper":
                self._profiles = load_profiles(self.profiles_dir)
            else:
                rows = read_rows(self.profiles_dir / ROWS_FILE)
                if not rows:
                    load_profiles(self.profiles_dir)  # raises the "run expertmix profile" error
                    raise ConfigError(f"skill router: {self.profiles_dir / ROWS_FILE} is missing or empty; "
                                      f"scoring {self.scoring!r} needs it", hint="use scoring: paper or re-profile")
                self.set_rows(rows)
        if self._scorer is None and self.scoring != "paper":
            raise ConfigError(f"skill router: scoring {self.scoring!r} has no correctness rows",
                              hint="call set_rows(rows) after set_profiles, or use scoring: paper")
        if self._mapper is None:
            self._mapper = KeywordMapper(sorted({kw for p in self._profiles.values() for kw in p}))
        if self._extractor is None:
            if self.extractor_name == "llm":
                self._extractor = make_extractor("llm", model=self.extractor_model)
            else:
                self._extractor = make_extractor("embedding", top_n=self.top_n, threshold=self.threshold,
                                                 head_chars=self.head_chars)

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
    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        experts = self.experts_for(ctx)
        vectors = self.encode([q.text for q in questions]) if self.scoring == "learned" else None
        if vectors is not None and isinstance(self._extractor, EmbeddingSkillExtractor):
            raw = self._extractor.keywords_from_vectors(vectors)  # one encode serves both
        else:
            raw = self._extractor.extract(questions, ctx)
        if self.multilingual and isinstance(self._extractor, EmbeddingSkillExtractor):
            foreign = [i for i, q in enumerate(questions) if is_foreign(q.text)]
            for i, kws in zip(foreign, self._multilingual().extract([questions[i].text for i in foreign])):
                raw[i] = kws
        return self.score_keywords(questions, self.map_keywords(raw), ctx, experts=experts, vectors=vectors)

    def _multilingual(self) -> MultilingualKeywords:
        if self._ml is None:
            self._ml = MultilingualKeywords(self._extractor.vocabulary, top_n=self.top_n)
        return self._ml

    def map_keywords(self, keywords: list[list[str]]) -> list[list[str]]:
        """``paper``: each keyword mapped onto the profile vocabulary (nearest by MiniLM cosine).

        The other scorings keep the keywords: one no profile has seen scores on its prior (declared
        skills) instead of borrowing a neighbour's counts ("python" -> "java" on a small profile).
        """
        self._load()
        if self.scoring != "paper":
            return [list(dict.fromkeys(kws)) for kws in keywords]
        return [self._mapper.map(kws) if kws else [] for kws in keywords]

    def encode(self, texts: list[str]) -> Any:
        """Normalised MiniLM embeddings of ``texts`` (what ``scoring: learned`` routes on)."""
        self._load()
        return self._scorer.encode(texts)

    def route_keywords(
        self, questions: list[Question], keywords: list[list[str]], ctx: RunContext, *,
        experts: list[str] | None = None, vectors: Any = None,
    ) -> list[RoutingDecision]:
        """Recruit for questions whose (profile-vocabulary) keywords are already known."""
        scored = self.score_keywords(questions, keywords, ctx, experts=experts, vectors=vectors)
        return [self.decide(q, s, ctx) for q, s in zip(questions, scored)]

    def score_keywords(
        self, questions: list[Question], keywords: list[list[str]], ctx: RunContext, *,
        experts: list[str] | None = None, vectors: Any = None,
    ) -> list[Scored]:
        """The drawn experts (best weight first) of each question whose keywords are known."""
        experts = experts or self.experts_for(ctx)
        topics, topic_notes, topic_cats = self.topic_scores(questions, experts, ctx)
        weights = self._weights(questions, keywords, experts, ctx, vectors, topics)
        plans = [self._draw(q, w, experts, ctx) for q, w in zip(questions, weights)]
        notes: list[list[str]] = [[] for _ in plans]
        if self.replace_rare and len(plans) > 1:
            notes = self._replace_rare(plans)
        out = []
        for kws, (drawn, weights), extra in zip(keywords, plans, notes):
            ranked = sorted(drawn, key=lambda e: -weights[e])  # best first so a budget keeps the best
            choices = [ExpertChoice(name=e, score=round(float(weights[e]), 4)) for e in ranked]
            conf = max(weights.values()) if weights else None
            note = [] if kws or self.scoring != "paper" else [
                "skill router: no skill keywords; drew experts uniformly at random"]
            out.append(Scored(choices, confidence=conf, skills=kws, notes=note + extra))
        for s, n, c in zip(out, topic_notes, topic_cats):
            s.notes.append(n)
            s.category = c
        return out

    def _topics(self) -> Any:
        if self._topic_router is None:
            from routers.category import CategoryRouter

            self._topic_router = CategoryRouter(k=1)
        return self._topic_router

    def topic_scores(
        self, questions: list[Question], experts: list[str], ctx: RunContext
    ) -> tuple[np.ndarray | None, list[str], list[str]]:
        """(questions, experts) P(the question's topic is one of the expert's registry categories), by the
        category router's classifier, with one trace note and the top topic per question; (None, [], [])
        when ``topic`` is 0.

        The skills say what a question needs; the topic says whose field it is. A long writing request
        about finance extracts finance skills, and the topic (writing) keeps the writer first.
        """
        if self.topic <= 0 or not questions:
            return None, [], []
        router = self._topics()
        classes = router.model.classes
        member = np.zeros((len(classes), len(experts)))
        for j, e in enumerate(experts):
            spec = ctx.registry.experts.get(e)
            for c in (spec.categories if spec else []):
                if c in classes:
                    member[classes.index(c), j] = 1.0
        if not member.any():  # no expert declares a category: the topic cannot tell them apart
            return None, [], []
        probs, _ = router.probabilities([q.text for q in questions])
        top = probs.argmax(axis=1)
        notes = [f"skill router: topic {classes[t]} ({probs[i, t]:.2f}) adds {self.topic:g} x P(topic) to its experts"
                 for i, t in enumerate(top)]
        return np.clip(probs @ member, 0.0, 1.0), notes, [classes[t] for t in top]

    def _weights(
        self, questions: list[Question], keywords: list[list[str]], experts: list[str], ctx: RunContext,
        vectors: Any, topics: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """One weight vector over ``experts`` per question (unnormalised for ``paper``)."""
        if self.scoring == "paper":
            glob = global_scores(self._profiles, experts, self.temperature)
            return [recruit_weights(local_scores(self._profiles, experts, kws), glob) if kws
                    else np.ones(len(experts)) for kws in keywords]
        self._scorer.bind(ctx.registry, experts)
        if self.scoring == "learned":
            if vectors is None:
                vectors = self._scorer.encode([q.text for q in questions]) if questions else None
            scores = self._scorer.learned(vectors, keywords, experts) if questions else np.zeros((0, len(experts)))
        else:
            scores = np.array([self._scorer.smoothed(kws, experts) for kws in keywords])
        if topics is not None and len(scores):
            scores = scores + self.topic * topics
        return [softmax_weights(row, self.tau) for row in scores]

    def _draw(
        self, q: Question, w: np.ndarray, experts: list[str], ctx: RunContext
    ) -> tuple[list[str], dict[str, float]]:
        """k experts drawn for one question and the normalised weights of all candidates."""
        rng = np.random.default_rng(stable_seed(ctx.seed, q.id))
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
