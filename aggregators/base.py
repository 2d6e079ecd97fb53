"""The aggregator contract: k expert answers per question in, one answer per question out.

Aggregators work on a whole run at once so an LLM aggregator sends its model one batch.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from orchestrator.context import RunContext
from orchestrator.registry import Registry
from orchestrator.types import ExpertAnswer, Question


class AggregationItem(BaseModel):
    question: Question
    answers: list[ExpertAnswer]


class Aggregated(BaseModel):
    answer: str
    aggregator: str
    model: str | None = None
    notes: list[str] = Field(default_factory=list)


@runtime_checkable
class Aggregator(Protocol):
    name: str

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        """One result per item, in order."""
        ...

    def config(self) -> dict[str, Any]: ...


AGGREGATORS: Registry[type] = Registry("aggregator", "expertmix.aggregators")


def make_aggregator(name: str, **params: Any) -> Aggregator:
    _register_builtin()
    cls = AGGREGATORS.get(name, where="aggregator")
    return cls(**params)


def _register_builtin() -> None:
    import aggregators.builtin  # noqa: F401  (registers the built-in aggregators)
