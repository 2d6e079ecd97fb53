"""What every component gets while a run executes: registry, dispatcher, seed, budget."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.config import ExpertRegistry

if TYPE_CHECKING:
    from orchestrator.core import Budget, Dispatcher
    from orchestrator.streaming import TokenStream


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
    stream: "TokenStream | None" = None  # receives the final answer's text as it is generated
    # Set by the executor for the node that is running: its name (part of every result key, so two
    # nodes asking the same model about the same question never share an answer) and the trace
    # parts it records per question id.
    node: str = ""
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def key(self, question_id: str, *parts: str) -> str:
        """A result key ``run/question/node/...``: redeliveries never duplicate, and the executor
        credits the completion's tokens to that question."""
        return "/".join((self.run_id, question_id, *((self.node,) if self.node else ()), *parts))

    def record(self, question_id: str, **part: Any) -> None:
        """Add to the running node's part of one question's trace (JSON-able values; ``notes``
        lists are appended, ``prompt_tokens``/``completion_tokens`` add to the node's count)."""
        mine = self.parts.setdefault(question_id, {})
        for name, value in part.items():
            if name == "notes":
                mine.setdefault("notes", []).extend(value)
            else:
                mine[name] = value
