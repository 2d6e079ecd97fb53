"""A learned correctness predictor: P(expert answers correctly | question embedding), after RouteLLM / RouterDC.

Trained on a profiling run's correctness table (``correctness.jsonl``: one row per (question,
expert)) and the questions' MiniLM embeddings. Prediction is a similarity-weighted kNN with a
Beta prior, so a question unlike anything profiled falls back to the prior (the expert's base
accuracy lifted by its declared skills, :mod:`skills.scoring`)::

    w_j = exp((cos(q, x_j) - 1) / tau)        over the ``neighbours`` most similar profiled questions
    P(e | q) = (sum_j w_j * correct_je + strength * prior_e(q)) / (sum_j w_j + strength)

A near-duplicate counts as one answer, a question at cosine 0.6 as ``exp(-0.4 / tau)`` of one.

Example::

    >>> import numpy as np
    >>> X = np.eye(2, dtype=np.float32); Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> knn = KnnPredictor(neighbours=2, strength=1.0, tau=0.1).fit(X, Y)
    >>> P = knn.predict(X[:1], np.full((1, 2), 0.5))
    >>> bool(P[0, 0] > P[0, 1])
    True
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from orchestrator.errors import ConfigError
from orchestrator.files import write_atomic
from skills.profiles import ITEMS_FILE, ROWS_FILE, read_rows

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "item_embeddings.npz"


class KnnPredictor:
    """Similarity-weighted kNN over profiled questions with a Beta prior per prediction."""

    def __init__(self, neighbours: int = 32, strength: float = 4.0, tau: float = 0.2) -> None:
        if neighbours < 1 or strength <= 0 or tau <= 0:
            raise ConfigError(f"learned predictor: need neighbours >= 1, strength > 0, tau > 0; got "
                              f"neighbours={neighbours}, strength={strength}, tau={tau}")
        self.neighbours, self.strength, self.tau = neighbours, strength, tau
        self.X: np.ndarray | None = None
        self.Y: np.ndarray | None = None

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "KnnPredictor":
        """``X``: (n, d) normalised question embeddings; ``Y``: (n, experts) 1/0, NaN where unanswered."""
        if X.shape[0] != Y.shape[0] or X.shape[0] == 0:
            raise ConfigError(f"learned predictor: {X.shape[0]} embeddings for {Y.shape[0]} table rows")
        self.X, self.Y = np.asarray(X, dtype=np.float32), np.asarray(Y, dtype=float)
        return self

    def predict(self, Q: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """(m, experts) posterior P(correct); ``prior``: (m, experts) prior means."""
        if self.X is None:
            raise ConfigError("learned predictor: predict() before fit()")
        sims = np.asarray(Q, dtype=np.float32) @ self.X.T
        k = min(self.neighbours, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.exp((np.take_along_axis(sims, idx, axis=1) - 1.0) / self.tau)  # (m, k)
        y = self.Y[idx]  # (m, k, experts)
        seen = ~np.isnan(y)
        hits = np.einsum("mk,mke->me", w, np.where(seen, y, 0.0))
        mass = np.einsum("mk,mke->me", w, seen.astype(float))
        return (hits + self.strength * prior) / (mass + self.strength)


def correctness_matrix(rows: list[dict[str, Any]], ids: list[str], experts: list[str]) -> np.ndarray:
    """(ids, experts) matrix of 1/0 correctness, NaN where an expert did not answer a question."""
    pos = {q: i for i, q in enumerate(ids)}
    col = {e: j for j, e in enumerate(experts)}
    Y = np.full((len(ids), len(experts)), np.nan)
    for r in rows:
        if r["id"] in pos and r["expert"] in col:
            Y[pos[r["id"]], col[r["expert"]]] = 1.0 if r["correct"] else 0.0
    return Y


def load_questions(directory: Path) -> dict[str, str]:
    """``{item id: question text}`` from a profiles dir's ``items.jsonl``."""
    path = directory / ITEMS_FILE
    if not path.exists():
        raise ConfigError(f"{path}: no such file (the learned router needs the profiled questions)",
                          hint="profile with `expertmix profile` (it writes items.jsonl) or pass another profiles dir")
    return {r["id"]: r["question"] for r in read_rows(path)}


def item_embeddings(directory: Path, ids: list[str], texts: list[str],
                    encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Embeddings of the profiled questions: from ``item_embeddings.npz`` when it covers ``ids``, else encoded."""
    path = directory / EMBEDDINGS_FILE
    if path.exists():
        data = np.load(path, allow_pickle=False)
        cached = {str(i): v for i, v in zip(data["ids"], data["vectors"])}
        if all(i in cached for i in ids):
            return np.stack([cached[i] for i in ids]).astype(np.float32)
        log.warning("%s does not cover every profiled question; encoding them (%d texts)", path, len(ids))
    return encode(texts)


def save_item_embeddings(directory: Path, ids: list[str], vectors: np.ndarray) -> Path:
    """Cache question embeddings next to the table (float16: ~0.8 KB per question)."""
    return write_atomic(directory / EMBEDDINGS_FILE,
                        lambda fh: np.savez_compressed(fh, ids=np.array(ids), vectors=vectors.astype(np.float16)))


class CorrectnessTable:
    """A profiles dir's questions, experts and correctness matrix, loaded once."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        rows = read_rows(self.dir / ROWS_FILE)
        if not rows:
            raise ConfigError(f"{self.dir / ROWS_FILE}: no correctness rows",
                              hint="run `expertmix profile --data FILE --out DIR` and pass that DIR")
        questions = load_questions(self.dir)
        self.ids = [i for i in dict.fromkeys(r["id"] for r in rows) if i in questions]
        self.texts = [questions[i] for i in self.ids]
        self.experts = sorted({r["expert"] for r in rows})
        self.rows = rows
        self.Y = correctness_matrix(rows, self.ids, self.experts)

    def describe(self) -> str:
        return f"{len(self.ids)} questions x {len(self.experts)} experts from {self.dir}"

    def json(self) -> str:
        return json.dumps({"dir": str(self.dir), "questions": len(self.ids), "experts": self.experts})
