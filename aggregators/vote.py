"""Majority vote over answers that can be extracted (a choice letter, a number, a boxed answer).

No model call. Ties go to the value whose voters have the larger total router score. When no
answer can be extracted, the top-scored expert's full answer is used, and the trace says so.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aggregators.base import AGGREGATORS, Aggregated, AggregationItem
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError

ANSWER_TYPES = ("auto", "choice", "number", "boxed")


@AGGREGATORS.register("vote")
class VoteAggregator:
    """Majority vote. ``answer_type``: ``auto`` (detected from the question), ``choice``,
    ``number`` or ``boxed``."""

    name = "vote"

    def __init__(self, answer_type: str = "auto") -> None:
        if answer_type not in ANSWER_TYPES:
            raise ConfigError(f"vote aggregator: unknown answer_type {answer_type!r}", hint=f"use one of {ANSWER_TYPES}")
        self.answer_type = answer_type

    def config(self) -> dict[str, Any]:
        return {"answer_type": self.answer_type}

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        return [self._one(item) for item in items]

    def _one(self, item: AggregationItem) -> Aggregated:
        from skills.grading import detect_answer_type, extract_answer

        kind = self.answer_type if self.answer_type != "auto" else detect_answer_type(item.question.text)
        votes: dict[str, list[float]] = defaultdict(list)
        for ans in item.answers:
            value = extract_answer(ans.text, kind)
            if value is not None:
                votes[value].append(ans.score)
        if not votes:
            best = max(item.answers, key=lambda a: a.score) if item.answers else None
            return Aggregated(answer=best.text.strip() if best else "", aggregator=self.name,
                              notes=[f"vote: no extractable {kind} answer; used the top-scored expert's answer"])
        winner = max(votes, key=lambda v: (len(votes[v]), sum(votes[v])))
        tally = ", ".join(f"{v}: {len(s)}" for v, s in sorted(votes.items(), key=lambda kv: -len(kv[1])))
        return Aggregated(answer=winner, aggregator=self.name, notes=[f"vote ({kind}): {tally}"])
