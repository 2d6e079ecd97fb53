"""Fakes for unit tests (never used outside tests/)."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from orchestrator.core import Completion, GenerationRequest


class FakeDispatcher:
    """Records every batch it gets; answers with ``reply(request)`` (default: a fixed text).

    ``loads`` counts a model's first batch, like a pool that never evicts.
    """

    def __init__(self, reply: Callable[[GenerationRequest], str] | None = None) -> None:
        self.reply = reply or (lambda r: f"Answer: 84 ({r.model})")
        self.batches: list[tuple[str, str, int]] = []  # (label, model, size)
        self.loads: Counter[str] = Counter()
        self.closed = False

    def run_batches(self, groups, *, label: str = "experts", progress: bool = False):
        out = {}
        for model, reqs in groups.items():
            if not reqs:
                continue
            self.batches.append((label, model, len(reqs)))
            if model not in self.loads:
                self.loads[model] += 1
            for r in reqs:
                out[r.key] = Completion(key=r.key, model=model, text=self.reply(r), completion_tokens=3)
        return out

    def model_loads(self) -> dict[str, int]:
        return dict(self.loads)

    def close(self) -> None:
        self.closed = True
