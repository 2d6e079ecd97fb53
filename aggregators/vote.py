"""Majority vote over answers that can be extracted (a choice letter, a number, a boxed answer).

No model call. Ties go to the value whose voters have the larger total router score. When no
answer can be extracted, the top-scored expert's full answer is used, and the trace says so.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from aggregators.base import AGGREGATORS, Aggregated, AggregationItem
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError

ANSWER_TYPES = ("auto", "choice", "number", "boxed", "text")
_NUMERIC_QUESTION = re.compile(r"\d|how (?:many|much|long|far|old)|calculate|compute|solve|percent|average", re.I)


def question_kind(question: str) -> str:
    """``auto`` detection: choice / boxed / number from the grader, ``text`` for free-form questions."""
    from skills.grading import detect_answer_type

    kind = detect_answer_type(question)
    return "text" if kind == "number" and not _NUMERIC_QUESTION.search(question) else kind


def normalise_text(answer: str) -> str | None:
    """A free-form answer's first line, lowercased, without punctuation (the unit of a text vote)."""
    first = next((line for line in answer.strip().splitlines() if line.strip()), "")
    norm = " ".join(re.sub(r"[^\w\s]", " ", first.lower()).split())
    return norm or None


@AGGREGATORS.register("vote")
class VoteAggregator:
    """Majority vote. ``answer_type``: ``auto`` (detected from the question), ``choice``,
    ``number``, ``boxed`` or ``text`` (free-form answers agree when their normalised first lines
    match; when none agree, the top-scored expert's answer wins)."""

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
        from skills.grading import extract_answer

        kind = self.answer_type if self.answer_type != "auto" else question_kind(item.question.text)
        votes: dict[str, list[float]] = defaultdict(list)
        texts: dict[str, str] = {}
        for ans in item.answers:
            value = normalise_text(ans.text) if kind == "text" else extract_answer(ans.text, kind)
            if value is not None:
                votes[value].append(ans.score)
                texts.setdefault(value, ans.text.strip())
        if kind == "text" and votes and max(len(v) for v in votes.values()) < 2:
            votes = {}  # free-form answers that all differ: no majority to speak of
        if not votes:
            best = max(item.answers, key=lambda a: a.score) if item.answers else None
            return Aggregated(answer=best.text.strip() if best else "", aggregator=self.name,
                              notes=[f"vote: no extractable {kind} answer; used the top-scored expert's answer"])
        winner = max(votes, key=lambda v: (len(votes[v]), sum(votes[v])))
        tally = ", ".join(f"{v}: {len(s)}" for v, s in sorted(votes.items(), key=lambda kv: -len(kv[1])))
        answer = texts[winner] if kind == "text" else winner
        return Aggregated(answer=answer, aggregator=self.name, notes=[f"vote ({kind}): {tally}"])
