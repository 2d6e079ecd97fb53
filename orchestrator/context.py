"""What every component gets while a run executes: registry, dispatcher, seed, budget."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.config import ExpertRegistry

if TYPE_CHECKING:
    from orchestrator.core import Budget, Dispatcher


@dataclass
class RunContext:
    """Shared state of one run. Components must not keep it beyond the run."""

    registry: ExpertRegistry
    dispatcher: "Dispatcher"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seed: int = 0
    budget: "Budget | None" = None
    progress: bool = False
    notes: list[str] = field(default_factory=list)

    def key(self, *parts: str) -> str:
        """A result key derived from (run, question, expert, ...): redeliveries never duplicate."""
        return "/".join((self.run_id, *parts))
