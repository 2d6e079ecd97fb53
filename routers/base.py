"""The router contract: questions in, one routing decision per question out.

A router is one class registered by name in :data:`ROUTERS`; it loads anything heavy in
``warm_up`` (never in ``__init__``), is deterministic under ``seed``, honours a :class:`Budget`
(max experts, max total relative cost: MoE^2-style caps) and serialises its settings with
``config()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import ROUTERS, Budget, ExpertChoice, Question, RoutingDecision, check_question, make_router
from orchestrator.errors import BudgetError, ConfigError, RoutingError


@runtime_checkable
class Router(Protocol):
    name: str

    def warm_up(self, ctx: RunContext) -> None: ...

    def route(self, questions: list[Question], ctx: RunContext) -> list[RoutingDecision]:
        """One decision per question, in order. ``ctx.budget`` caps every decision."""
        ...

    def config(self) -> dict[str, Any]: ...


def apply_budget(
    ranked: list[ExpertChoice], registry: ExpertRegistry, budget: Budget | None, *, k: int | None = None
) -> list[ExpertChoice]:
    """Keep the best-ranked experts within ``k``, ``budget.max_experts`` and ``budget.max_cost``.

    ``ranked`` is best first and may repeat an expert (drawing with replacement); a repeat costs
    nothing extra because the same expert's answer is computed once per model batch anyway.
    Raises :class:`BudgetError` when not even the cheapest expert fits ``max_cost``.
    """
    limit = min(x for x in (k, budget.max_experts if budget else None, len(ranked)) if x is not None)
    max_cost = budget.max_cost if budget else None
    chosen: list[ExpertChoice] = []
    spent = 0.0
    seen: set[str] = set()
    for choice in ranked:
        if len(chosen) >= limit:
            break
        cost = 0.0 if choice.name in seen else registry.expert(choice.name).cost
        if max_cost is not None and spent + cost > max_cost + 1e-9:
            continue
        chosen.append(choice)
        spent += cost
        seen.add(choice.name)
    if not chosen:
        cheapest = min(registry.experts.values(), key=lambda e: e.cost)
        if max_cost is not None and cheapest.cost <= max_cost:
            return [ExpertChoice(name=cheapest.name, score=0.0)]
        raise BudgetError(
            f"no expert fits max_cost={max_cost} (cheapest is {cheapest.name!r} at cost {cheapest.cost})",
            hint=f"raise max_cost to at least {cheapest.cost}",
        )
    return chosen


@dataclass
class Scored:
    """What a router's scoring says about one question: experts best first, and why.

    ``ranked`` may be longer than ``k`` (the base cuts it to ``k`` and the budget, walking down the
    list) and may repeat an expert (drawing with replacement).
    """

    ranked: list[ExpertChoice]
    category: str | None = None
    confidence: float | None = None
    skills: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def ranked_by(scores: dict[str, float], registry: ExpertRegistry, digits: int = 4) -> list[ExpertChoice]:
    """Experts by descending score; ties go to the cheaper expert, then the name (deterministic)."""
    order = sorted(scores, key=lambda n: (-scores[n], registry.expert(n).cost, n))
    return [ExpertChoice(name=n, score=round(float(scores[n]), digits)) for n in order]


class BaseRouter:
    """The common part of every router: a router implements only :meth:`score`.

    The base checks the questions (:func:`check_question`: non-empty text, any length), calls
    ``score`` once per batch, cuts each ranking to ``k`` and the request's budget
    (:func:`apply_budget`) and builds the :class:`RoutingDecision`. ``config()`` returns
    :attr:`settings` (a subclass lists its constructor arguments there).

    Example::

        >>> class Cheapest(BaseRouter):
        ...     name = "cheapest"
        ...     def score(self, questions, ctx):
        ...         costs = {n: -e.cost for n, e in ctx.registry.experts.items()}
        ...         return [Scored(ranked_by(costs, ctx.registry)) for _ in questions]
        >>> Cheapest(k=2).config()
        {'k': 2, 'seed': 0}
    """

    name: ClassVar[str] = "base"

    def __init__(self, k: int = 1, seed: int = 0) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"{self.name} router: k must be an integer >= 1, got {k!r}")
        self.k, self.seed = k, seed

    @property
    def settings(self) -> dict[str, Any]:
        """Serialisable constructor arguments; subclasses extend it."""
        return {"k": self.k, "seed": self.seed}

    def config(self) -> dict[str, Any]:
        return dict(self.settings)

    def warm_up(self, ctx: RunContext) -> None:
        """Load what :meth:`score` needs (models, tables); the default loads nothing."""

    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        """One :class:`Scored` per question, in order. The only method a router must implement."""
        raise NotImplementedError

    def route(self, questions: list[Question], ctx: RunContext) -> list[RoutingDecision]:
        """One decision per question, in order, within ``k`` and ``ctx.budget``."""
        # a conversation routes on its last user turn with the earlier ones as context (Question.routing_text)
        checked = [q if q.text == (t := check_question(q.routing_text(), where=q.id)) else q.model_copy(update={"text": t})
                   for q in questions]
        if not checked:
            return []
        scored = self.score(checked, ctx)
        if len(scored) != len(checked):
            raise RoutingError(f"{self.name} router scored {len(scored)} of {len(checked)} questions",
                               hint="score() must return one Scored per question, in order")
        return [self.decide(q, s, ctx) for q, s in zip(checked, scored)]

    def decide(self, question: Question, scored: Scored, ctx: RunContext) -> RoutingDecision:
        """The decision for one scored question (the budget and ``k`` applied)."""
        if not scored.ranked:
            raise RoutingError(f"{self.name} router ranked no expert for {question.id!r}",
                               hint="check that the expert registry is not empty")
        chosen = apply_budget(scored.ranked, ctx.registry, ctx.budget, k=self.k)
        conf = None if scored.confidence is None else round(float(scored.confidence), 4)
        return RoutingDecision(question_id=question.id, experts=chosen, router=self.name, skills=list(scored.skills),
                               category=scored.category, confidence=conf, notes=list(scored.notes))


__all__ = ["ROUTERS", "BaseRouter", "Budget", "Router", "RoutingDecision", "Scored", "apply_budget", "make_router",
           "ranked_by"]
