"""Lightweight routers with no model: ``keyword`` (lexical overlap) and ``fixed`` (a given list).

``keyword`` scores every expert by the IDF-weighted overlap between the question's words and the
expert's skills, description and example questions, and keeps the top ``k``. It needs nothing to
load, so it is the router of choice for tests and a reasonable default when no profile exists.

Example::

    >>> from routers.base import make_router
    >>> make_router("fixed", experts=["generalist"]).config()
    {'experts': ['generalist']}
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import ExpertChoice, Question
from routers.base import ROUTERS, BaseRouter, Scored, ranked_by
from routers.text import window

_WORD = re.compile(r"[a-z][a-z0-9+#]+")
_STOP = frozenset("the a an of to in on and or for is are was were be what which who how why does do did with "
                  "that this it its as at by from you your me my i can will would should could".split())


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


@ROUTERS.register("keyword")
class KeywordRouter(BaseRouter):
    """Top-k experts by IDF-weighted word overlap with each expert's profile text."""

    name = "keyword"

    def __init__(self, k: int = 3, seed: int = 0) -> None:
        super().__init__(k=k, seed=seed)
        self._index: tuple[int, dict[str, Counter], dict[str, float]] | None = None

    def warm_up(self, ctx: RunContext) -> None:
        self._vocab(ctx.registry)

    def _vocab(self, registry: ExpertRegistry) -> tuple[dict[str, Counter], dict[str, float]]:
        if self._index is None or self._index[0] != id(registry):
            bags = {name: Counter(words(" ".join([e.description, *e.skills, *e.categories, *e.examples])))
                    for name, e in registry.experts.items()}
            df = Counter(w for bag in bags.values() for w in bag)
            idf = {w: math.log(1 + len(bags) / n) for w, n in df.items()}
            self._index = (id(registry), bags, idf)
        return self._index[1], self._index[2]

    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        bags, idf = self._vocab(ctx.registry)
        out = []
        for q in questions:
            qwords = set(words(window(q.text, 4_000, 1_000)))
            scores = {name: sum(idf[w] for w in qwords if w in bag) for name, bag in bags.items()}
            ranked = ranked_by(scores, ctx.registry)  # ties (often all zero) go to the cheaper expert
            total = sum(scores.values())
            notes = [] if total > 0 else ["keyword router: no overlap with any expert; picked the cheapest"]
            matched = sorted(w for w in qwords if any(w in bag for bag in bags.values()))
            out.append(Scored(ranked, confidence=ranked[0].score / total if total > 0 else 0.0,
                              skills=matched[:5], notes=notes))
        return out


@ROUTERS.register("fixed")
class FixedRouter(BaseRouter):
    """Always the same experts (useful for ensembles, A/B tests and debugging)."""

    name = "fixed"

    def __init__(self, experts: list[str], seed: int = 0) -> None:
        if not experts:
            raise ConfigError("fixed router: `experts` is empty", hint="list at least one expert name")
        super().__init__(k=len(experts), seed=seed)
        self.experts = list(experts)

    def config(self) -> dict[str, Any]:
        return {"experts": self.experts}

    def warm_up(self, ctx: RunContext) -> None:
        for name in self.experts:
            ctx.registry.expert(name)

    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        choices = [ExpertChoice(name=ctx.registry.expert(n).name, score=1.0) for n in self.experts]
        return [Scored(list(choices), confidence=1.0) for _ in questions]
