"""Majority vote over answers that can be extracted (a choice letter, a number, yes/no, a boxed answer).

No model call. ``weights: count`` (default): most votes wins, ties go to the larger total router
score; ``weights: score``: the value whose voters have the largest total router score wins (a
Symbolic-MoE expert drawn twice counts twice). ``answer: value`` (default) returns the winning
extracted value ("36", "B"); ``answer: response`` returns the best-scored response that states it,
unchanged (its reasoning included: what a chat user reads). When no answer can be extracted, the
top-scored expert's full answer is used, and the trace says so.
"""

from __future__ import annotations

from typing import Any

from aggregators.answers import KINDS, question_kind, tally
from aggregators.base import AGGREGATORS, Aggregated, AggregationItem
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError

ANSWER_TYPES = KINDS
WEIGHTS = ("count", "score")
ANSWERS = ("value", "response")


@AGGREGATORS.register("vote")
class VoteAggregator:
    """Majority vote. ``answer_type``: ``auto`` (detected from the question), ``choice``,
    ``number``, ``boxed``, ``boolean`` or ``text`` (free-form answers agree when their normalised
    first lines match; when none agree, the top-scored expert's answer wins). ``weights``:
    ``count`` or ``score`` (router scores). ``answer``: ``value`` (the extracted final answer) or
    ``response`` (the best-scored response stating it)."""

    name = "vote"

    def __init__(self, answer_type: str = "auto", weights: str = "count", answer: str = "value") -> None:
        if answer_type not in ANSWER_TYPES:
            raise ConfigError(f"vote aggregator: unknown answer_type {answer_type!r}", hint=f"use one of {ANSWER_TYPES}")
        if weights not in WEIGHTS:
            raise ConfigError(f"vote aggregator: unknown weights {weights!r}", hint=f"use one of {WEIGHTS}")
        if answer not in ANSWERS:
            raise ConfigError(f"vote aggregator: unknown answer {answer!r}", hint=f"use one of {ANSWERS}")
        self.answer_type, self.weights, self.answer = answer_type, weights, answer

    def config(self) -> dict[str, Any]:
        return {"answer_type": self.answer_type, "weights": self.weights, "answer": self.answer}

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        return [self._one(item) for item in items]

    def _one(self, item: AggregationItem) -> Aggregated:
        kind = self.answer_type if self.answer_type != "auto" else question_kind(item.question.text)
        cands = tally(item.answers, kind, by=self.weights)
        if kind == "text" and cands and max(c.count for c in cands) < 2:
            cands = []  # free-form answers that all differ: no majority to speak of
        if not cands:
            best = max(item.answers, key=lambda a: a.score) if item.answers else None
            return Aggregated(answer=best.text.strip() if best else "", aggregator=self.name, confidence=0.0,
                              finish_reason=best.finish_reason if best else None,
                              notes=[f"vote: no extractable {kind} answer; used the top-scored expert's answer"])
        ranked = sorted(cands, key=lambda c: -c.count)
        shown = ", ".join(f"{c.value}: {c.count}" + (f" ({c.weight:.3g})" if self.weights == "score" else "") for c in ranked)
        winner = cands[0]
        if kind == "text" or self.answer == "response":
            i = winner.best() if kind != "text" else 0
            answer, finish = winner.texts[i], winner.finish_reasons[i]
        else:
            answer, finish = winner.value, None  # an extracted value is not cut
        agreement = winner.count / max(1, len(item.answers))  # what a cascade escalates on
        return Aggregated(answer=answer, aggregator=self.name, confidence=round(agreement, 4), finish_reason=finish,
                          notes=[f"vote ({kind}, by {self.weights}): {shown}"])
