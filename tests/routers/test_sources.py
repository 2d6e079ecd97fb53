"""Training-row sampling of the category router's package sources (fake loaders, no packages read)."""

from __future__ import annotations

from collections import Counter

import pytest

from routers import sources
from routers.category_train import Example

pytestmark = pytest.mark.unit


def _rows(source: str, category: str, n: int) -> list[Example]:
    return [Example(id=f"{source}-{category}-{i}", text=f"{category} {i}", category=category, source=source)
            for i in range(n)]


def test_per_group_caps_each_dataset_and_category_and_keeps_every_group(monkeypatch):
    fake = {"benchmarks": lambda: _rows("mmlu/anatomy", "medicine", 30) + _rows("mmlu/law", "law", 5)
            + _rows("gsm8k", "math", 50),
            "user": lambda: _rows("user", "writing", 12)}
    monkeypatch.setattr(sources, "TRAIN_SOURCES", fake)
    monkeypatch.setattr(sources, "TRAIN_CAP", {})
    assert len(sources.train_rows()) == 97
    capped = sources.train_rows(per_group=10)
    groups = Counter((r.source.split("/")[0], r.category) for r in capped)
    assert groups == {("mmlu", "medicine"): 10, ("mmlu", "law"): 5, ("gsm8k", "math"): 10, ("user", "writing"): 10}
    assert [r.id for r in sources.train_rows(per_group=10)] == [r.id for r in capped]  # seeded
