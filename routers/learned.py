"""Learned router: the experts most likely to answer correctly, predicted from the question's embedding.

After RouteLLM / RouterDC, trained on a profiling run's correctness table (see
:mod:`skills.learned`): a similarity-weighted kNN over the profiled questions' MiniLM embeddings
gives P(correct | question) per expert, with a Beta prior (the expert's base accuracy lifted by
its declared ``skills``/``categories`` on the question's skill keywords), so a question unlike
anything profiled routes on declared expertise. The top ``k`` distinct experts by P are returned,
best first (deterministic: no sampling). Symbolic-MoE with this scoring is
``{router: skill, scoring: learned}``.

Example::

    >>> from routers.base import make_router
    >>> make_router("learned", k=2).config()["k"]
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import ExpertChoice, Question
from routers.base import ROUTERS, BaseRouter, Scored
from routers.skill import DEFAULT_PROFILES
from skills.extract import EmbeddingSkillExtractor
from skills.profiles import ROWS_FILE, read_rows
from skills.scorer import SkillScorer


@ROUTERS.register("learned")
class LearnedRouter(BaseRouter):
    """Top-k experts by kNN-predicted P(correct | question) (see the module docstring)."""

    name = "learned"

    def __init__(
        self, k: int = 1, *, seed: int = 0, profiles: str | Path | None = None, neighbours: int = 32,
        prior_strength: float = 8.0, prior_lift: float = 0.6, knn_tau: float = 0.2, top_n: int = 3,
        threshold: float = 0.2,
    ) -> None:
        super().__init__(k=k, seed=seed)
        if neighbours < 1:
            raise ConfigError(f"learned router: neighbours must be >= 1, got {neighbours}")
        if prior_strength <= 0 or knn_tau <= 0 or not 0 <= prior_lift <= 1:
            raise ConfigError("learned router: need prior_strength > 0, knn_tau > 0 and 0 <= prior_lift <= 1")
        self.profiles_dir, self.neighbours = Path(profiles) if profiles else DEFAULT_PROFILES, neighbours
        self.prior_strength, self.prior_lift, self.knn_tau = prior_strength, prior_lift, knn_tau
        self.top_n, self.threshold = top_n, threshold
        self._scorer: SkillScorer | None = None
        self._extractor = EmbeddingSkillExtractor(top_n=top_n, threshold=threshold)

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "profiles": str(self.profiles_dir), "neighbours": self.neighbours,
                "prior_strength": self.prior_strength, "prior_lift": self.prior_lift, "knn_tau": self.knn_tau,
                "top_n": self.top_n, "threshold": self.threshold}

    def set_rows(self, rows: list[dict[str, Any]], questions: dict[str, str] | None = None) -> None:
        """Learn from in-memory correctness rows (and their question texts)."""
        self._scorer = SkillScorer.from_rows(self, rows, questions=questions)

    def _load(self) -> SkillScorer:
        if self._scorer is None:
            rows = read_rows(self.profiles_dir / ROWS_FILE)
            if not rows:
                raise ConfigError(f"learned router: no correctness table at {self.profiles_dir / ROWS_FILE}",
                                  hint="run `expertmix profile --data FILE --out DIR` and pass profiles=DIR")
            self.set_rows(rows)
        return self._scorer

    def warm_up(self, ctx: RunContext) -> None:
        scorer = self._load()
        scorer.load()
        scorer.knn()
        if scorer.encoder is None:
            self._extractor.load()

    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        scorer = self._load()
        experts = list(ctx.registry.experts)
        scorer.bind(ctx.registry, experts)
        vectors = scorer.encode([q.text for q in questions])
        keywords = self._extractor.keywords_from_vectors(vectors) if scorer.encoder is None else [[] for _ in questions]
        P = scorer.learned(vectors, keywords, experts)
        out = []
        for kws, row in zip(keywords, P):
            order = np.argsort(-row, kind="stable")
            ranked = [ExpertChoice(name=experts[j], score=round(float(row[j]), 4)) for j in order]
            out.append(Scored(ranked, confidence=float(row[order[0]]), skills=kws))
        return out
