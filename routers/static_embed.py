"""Static token embeddings distilled from all-MiniLM-L6-v2: a numpy-only, ~50x faster encoder.

Each vocabulary token is run through MiniLM once on its own (``[CLS] token [SEP]``, mean pooled);
a sentence is then the normalised mean of its tokens' vectors (the model2vec recipe, without the
PCA/Zipf extras). No transformer runs per question, so thousands of questions per second fit on
two cores, at a few points of routing accuracy (see the category router's ``encoder: static``).

The 30,522 x 384 table (float16, 23 MB) is built from the installed MiniLM on first use
(~30-100 s on 2 cores) and cached under ``<expertmix home>/.cache/``.

Example::

    >>> from routers.static_embed import StaticEmbedder
    >>> StaticEmbedder.shared().encode(["hello"]).shape   # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import expertmix_home
from orchestrator.files import write_atomic

log = logging.getLogger(__name__)

TABLE_FILE = "static_minilm_l6_v2.npy"


def table_path() -> Path:
    return expertmix_home() / ".cache" / TABLE_FILE


def build_table(batch_size: int = 2048) -> np.ndarray:
    """Run every vocabulary token through MiniLM alone; returns (vocab, dim) float32."""
    import torch

    from skills.embeddings import Embedder

    emb = Embedder.shared()
    emb.load()
    model = emb._model  # the SentenceTransformer: [0] is the transformer module
    tok, bert = model.tokenizer, model[0].auto_model
    vocab = tok.vocab_size
    out = np.zeros((vocab, bert.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, batch_size):
            ids = torch.arange(start, min(vocab, start + batch_size))
            inp = torch.stack([torch.full_like(ids, tok.cls_token_id), ids, torch.full_like(ids, tok.sep_token_id)], 1)
            hidden = bert(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            out[start:start + len(ids)] = hidden.mean(1).numpy()
    return out


class StaticEmbedder:
    """Mean of per-token static vectors, L2-normalised; ``shared()`` gives one per process."""

    _shared: "StaticEmbedder | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or table_path()
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> "StaticEmbedder":
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def load(self) -> None:
        with self._lock:
            if self._table is not None:
                return
            from transformers import AutoTokenizer

            from skills.embeddings import embedding_model_dir

            if not self.path.exists():
                log.warning("building the static MiniLM token table once (%s); this takes a minute", self.path)
                table = build_table().astype(np.float16)
                write_atomic(self.path, lambda fh: np.save(fh, table))
            self._table = np.load(self.path).astype(np.float32)
            self._tokenizer = AutoTokenizer.from_pretrained(str(embedding_model_dir()))

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        """Normalised sentence vectors, shape (len(texts), 384), float32."""
        self.load()
        if not texts:
            return np.zeros((0, self._table.shape[1]), dtype=np.float32)
        ids = self._tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=256)["input_ids"]
        X = np.stack([self._table[i].mean(0) if i else np.zeros(self._table.shape[1], np.float32) for i in ids])
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)
