"""The aggregator contract: k expert answers per question in, one answer per question out.

Aggregators work on a whole run at once so an LLM aggregator sends its model one batch. The value
types (:class:`AggregationItem`, :class:`Aggregated`) and the registry live in the core
(:mod:`orchestrator.core`); built-in aggregators register through the ``expertmix.aggregators``
entry point group like third-party ones.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from orchestrator.context import RunContext
from orchestrator.core import AGGREGATORS, Aggregated, AggregationItem, make_aggregator


@runtime_checkable
class Aggregator(Protocol):
    name: str

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        """One result per item, in order."""
        ...

    def config(self) -> dict[str, Any]: ...


__all__ = ["AGGREGATORS", "Aggregated", "AggregationItem", "Aggregator", "make_aggregator"]
