"""The router contract: questions in, one routing decision per question out.

A router is one class registered by name in :data:`ROUTERS`; it loads anything heavy in
``warm_up`` (never in ``__init__``), is deterministic under ``seed``, honours a :class:`Budget`
(max experts, max total relative cost: MoE^2-style caps) and serialises its settings with
``config()``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import BudgetError
from orchestrator.core import ROUTERS, Budget, ExpertChoice, Question, RoutingDecision, make_router


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


__all__ = ["ROUTERS", "Budget", "Router", "RoutingDecision", "apply_budget", "make_router"]
