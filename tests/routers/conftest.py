"""Fixtures for router tests: a fake embedder and run context (unit), the real embedder (integration)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from tests.fakes import FakeDispatcher

DATA = Path(__file__).parent / "data"
HELDOUT = DATA / "user_prompts_heldout.yaml"


class FakeEmbedder:
    """Deterministic bag-of-words hashing embeddings (384-d, L2-normalised): no model, instant.

    Texts sharing words get similar vectors, which is enough to test routing logic.
    """

    dim = 384

    def load(self) -> None:
        pass

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            h = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
            v[h % self.dim] += 1.0 if (h >> 12) % 2 else -1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode(self, texts, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_cached(self, texts) -> np.ndarray:
        return self.encode(texts)


def keyword_reply(request) -> str:
    """What a fake skill-extraction LLM says."""
    return "Keywords: algebra, arithmetic"


@pytest.fixture
def fake_embedder(monkeypatch):
    """Every ``Embedder``, ``StaticEmbedder`` and ``E5Embedder`` ``shared()`` user in this test gets a
    :class:`FakeEmbedder`."""
    from routers.multilingual_embed import E5Embedder
    from routers.static_embed import StaticEmbedder
    from skills.embeddings import Embedder

    fake = FakeEmbedder()
    monkeypatch.setattr(Embedder, "_shared", fake)
    monkeypatch.setattr(StaticEmbedder, "_shared", fake)
    monkeypatch.setattr(E5Embedder, "_shared", fake)
    return fake


@pytest.fixture
def registry() -> ExpertRegistry:
    return ExpertRegistry.default()


@pytest.fixture
def fake_ctx(fake_embedder, registry) -> RunContext:
    """A run context over the default registry, with a fake dispatcher and a fake embedder."""
    return RunContext(registry=registry, dispatcher=FakeDispatcher(keyword_reply), seed=0)


@pytest.fixture(scope="session")
def real_embedder():
    """The real all-MiniLM-L6-v2 embedder, loaded once per session."""
    from skills.embeddings import Embedder

    emb = Embedder.shared()
    emb.load()
    return emb


@pytest.fixture
def real_ctx(real_embedder, registry) -> RunContext:
    return RunContext(registry=registry, dispatcher=FakeDispatcher(keyword_reply), seed=0)


@pytest.fixture(scope="session")
def heldout_prompts() -> list[tuple[str, str]]:
    """(prompt, category) pairs of the hand-written held-out user-style prompts."""
    data = yaml.safe_load(HELDOUT.read_text())
    return [(text, cat) for cat, texts in data.items() for text in texts]
