"""The router contract: questions in, one routing decision per question out.

A router is one class registered by name in :data:`ROUTERS`; it loads anything heavy in
``warm_up`` (never in ``__init__``), is deterministic under ``seed``, honours a :class:`Budget`
(max experts, max total relative cost: MoE^2-style caps) and serialises its settings with
``config()``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import BudgetError
from orchestrator.registry import Registry
from orchestrator.types import ExpertChoice, Question


class Budget(BaseModel):
    """Caps a request may put on routing: how many experts, how much total relative cost."""

    max_experts: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)

    model_config = {"extra": "forbid"}


class RoutingDecision(BaseModel):
    """Which experts answer one question, and why."""

    question_id: str
    experts: list[ExpertChoice]
    router: str
    skills: list[str] = Field(default_factory=list)
    category: str | None = None
    confidence: float | None = None
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _non_empty(self) -> "RoutingDecision":
        if not self.experts:
            raise ValueError(f"routing decision for {self.question_id!r} has no experts")
        return self

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]


@runtime_checkable
class Router(Protocol):
    name: str

    def warm_up(self, ctx: RunContext) -> None: ...

    def route(self, questions: list[Question], ctx: RunContext) -> list[RoutingDecision]:
        """One decision per question, in order. ``ctx.budget`` caps every decision."""
        ...

    def config(self) -> dict[str, Any]: ...


ROUTERS: Registry[type] = Registry("router", "expertmix.routers")


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


def make_router(name: str, **params: Any) -> Router:
    """Instantiate a registered router by name."""
    _register_builtin()
    cls = ROUTERS.get(name, where="router")
    return cls(**params)


def _register_builtin() -> None:
    import routers.builtin  # noqa: F401  (registers the built-in routers)
