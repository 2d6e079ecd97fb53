"""The skill router's ``smoothed`` and ``learned`` scoring over one correctness table.

Holds what both need: per-(expert, keyword) counts, per-expert base accuracy, the declared-skill
similarity of the registry (built lazily on the shared MiniLM; replaceable by a fake in tests) and,
for ``learned``, a :class:`skills.learned.KnnPredictor` over the profiled questions' embeddings.

Example::

    >>> rows = [{"id": "q1", "expert": "a", "keywords": ["algebra"], "correct": True}]
    >>> s = SkillScorer(rows, strength=8.0, lift=0.6)
    >>> s.declared = lambda e, kws: [1.0] * len(kws)
    >>> round(float(s.smoothed(["algebra"], ["a"])[0]), 3)
    0.893
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from skills.learned import KnnPredictor, correctness_matrix, item_embeddings, load_questions
from skills.scoring import DeclaredPrior, SkillSimilarity, base_accuracy, build_counts, declared_of, rank_weights, \
    smoothed_scores

log = logging.getLogger(__name__)


class SkillScorer:
    """Counts, base accuracy, declared prior and (lazily) the kNN predictor of one correctness table."""

    def __init__(
        self, rows: list[dict[str, Any]], *, strength: float, lift: float, neighbours: int = 32,
        knn_tau: float = 0.2, profiles_dir: Path | None = None, questions: dict[str, str] | None = None,
    ) -> None:
        self.rows = rows
        self.experts = sorted({r["expert"] for r in rows})
        self.counts = build_counts(rows, self.experts)
        self.base = base_accuracy(rows, self.experts)
        self.strength, self.lift = strength, lift
        self.neighbours, self.knn_tau = neighbours, knn_tau
        self.profiles_dir, self.questions = profiles_dir, questions
        self.declared: Callable[[str, list[str]], list[float]] | None = None
        self.encoder: Callable[[list[str]], np.ndarray] | None = None
        self._bound: tuple | None = None
        self._knn: KnnPredictor | None = None

    @classmethod
    def from_rows(cls, router: Any, rows: list[dict[str, Any]], *, questions: dict[str, str] | None = None) -> "SkillScorer":
        """A scorer with the router's settings (``prior_strength``, ``prior_lift``, ``neighbours``, ``knn_tau``)."""
        return cls(rows, strength=router.prior_strength, lift=router.prior_lift, neighbours=router.neighbours,
                   knn_tau=router.knn_tau, profiles_dir=router.profiles_dir, questions=questions)

    # ---- parts loaded on first use ---------------------------------------------------------
    def load(self) -> None:
        """Load the embedding model (memoised by the shared :class:`skills.embeddings.Embedder`)."""
        if self.encoder is None:
            from skills.embeddings import Embedder

            Embedder.shared().load()

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.encoder is not None:
            return self.encoder(texts)
        from skills.embeddings import Embedder

        return Embedder.shared().encode(texts)

    def bind(self, registry: Any, experts: list[str]) -> None:
        """Build the declared-skill similarity for this registry's experts (once per registry)."""
        if self.declared is not None and self._bound is None:
            return  # a similarity set by hand (tests) stays
        skills, categories = declared_of(registry, experts)
        key = tuple(sorted((e, tuple(skills[e]), tuple(categories[e])) for e in experts))
        if key == self._bound:
            return
        from skills.embeddings import Embedder

        self.declared = SkillSimilarity(skills, Embedder.shared().encode_cached, categories=categories)
        self._bound = key

    def prior(self) -> DeclaredPrior:
        declared = self.declared or (lambda e, kws: [0.0] * len(kws))
        return DeclaredPrior(self.base, declared)

    # ---- scores ----------------------------------------------------------------------------
    def smoothed(self, keywords: list[str], experts: list[str]) -> np.ndarray:
        """Mean Beta-posterior accuracy per expert over ``keywords``."""
        return smoothed_scores(self.counts, experts, keywords, self.prior(), strength=self.strength, lift=self.lift)

    def prior_means(self, keywords: list[list[str]], experts: list[str]) -> np.ndarray:
        """(questions, experts) prior mean accuracy: base accuracy lifted by the declared skills."""
        prior = self.prior()
        out = np.empty((len(keywords), len(experts)))
        for j, e in enumerate(experts):
            for i, kws in enumerate(keywords):
                out[i, j] = float(rank_weights(len(kws)) @ prior.means(e, kws, self.lift)) if kws else prior.base.get(e, 0.5)
        return out

    def learned(self, vectors: np.ndarray, keywords: list[list[str]], experts: list[str]) -> np.ndarray:
        """(questions, experts) kNN posterior P(correct); experts absent from the table get their prior."""
        knn = self.knn()
        prior = self.prior_means(keywords, experts)
        cols = [self.experts.index(e) if e in self.experts else -1 for e in experts]
        table_prior = np.full((len(keywords), len(self.experts)), 0.5)
        for j, c in enumerate(cols):
            if c >= 0:
                table_prior[:, c] = prior[:, j]
        P = knn.predict(vectors, table_prior)
        return np.stack([P[:, c] if c >= 0 else prior[:, j] for j, c in enumerate(cols)], axis=1)

    def knn(self) -> KnnPredictor:
        """The kNN predictor over the table's questions (embedded once; cached npz when shipped)."""
        if self._knn is None:
            questions = self.questions
            if questions is None:
                if self.profiles_dir is None:
                    from orchestrator.errors import ConfigError

                    raise ConfigError("learned scoring: no profiled questions to learn from",
                                      hint="pass questions to set_rows() or a profiles dir with items.jsonl")
                questions = load_questions(self.profiles_dir)
            ids = [i for i in dict.fromkeys(r["id"] for r in self.rows) if i in questions]
            texts = [questions[i] for i in ids]
            if self.encoder is not None or self.profiles_dir is None:
                X = self.encode(texts)
            else:
                X = item_embeddings(self.profiles_dir, ids, texts, self.encode)
            Y = correctness_matrix(self.rows, ids, self.experts)
            self._knn = KnnPredictor(self.neighbours, self.strength, self.knn_tau).fit(X, Y)
            log.info("learned scoring: kNN over %d profiled questions x %d experts", len(ids), len(self.experts))
        return self._knn
