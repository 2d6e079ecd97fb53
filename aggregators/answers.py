"""What the fusing aggregators share: the question's answer kind, each answer's final value, a tally.

``tally`` groups the k expert answers by their extracted final answer (a choice letter, a number,
yes/no, or a free-form answer's normalised first line), summing the router's scores per value, so
vote, synthesis and select all reason over the same candidates.

Example::

    >>> from orchestrator.core import ExpertAnswer
    >>> answers = [ExpertAnswer(expert=e, model="m", text=t, score=s)
    ...            for e, t, s in [("a", "Answer: 36", 0.5), ("b", "so 36.", 0.2), ("c", "Answer: 32", 0.9)]]
    >>> [(c.value, c.count) for c in tally(answers, "number")]
    [('36', 2), ('32', 1)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestrator.core import ExpertAnswer

KINDS = ("auto", "choice", "number", "boxed", "boolean", "text")
_NUMERIC_QUESTION = re.compile(r"\d|how (?:many|much|long|far|old)|calculate|compute|solve|percent|average", re.I)
_BOOLEAN_QUESTION = re.compile(r"\byes or no\b|\byes/no\b|\btrue or false\b", re.I)


def question_kind(question: str) -> str:
    """The answer kind a question asks for: choice / boxed / boolean / number, else ``text``."""
    from skills.grading import detect_answer_type

    if _BOOLEAN_QUESTION.search(question):
        return "boolean"
    kind = detect_answer_type(question)
    return "text" if kind == "number" and not _NUMERIC_QUESTION.search(question) else kind


def normalise_text(answer: str) -> str | None:
    """A free-form answer's first line, lowercased, without punctuation (the unit of a text vote)."""
    first = next((line for line in answer.strip().splitlines() if line.strip()), "")
    norm = " ".join(re.sub(r"[^\w\s]", " ", first.lower()).split())
    return norm or None


def final_value(text: str, kind: str) -> str | None:
    """The final answer stated in ``text`` in canonical form for ``kind`` (None: states none)."""
    from skills.grading import extract_answer

    if kind == "text":
        return normalise_text(text)
    return extract_answer(text, kind)


@dataclass
class Candidate:
    """One distinct final answer among the experts', with its support."""

    value: str
    weight: float = 0.0
    count: int = 0
    texts: list[str] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)  # of each text's call
    scores: list[float] = field(default_factory=list)  # the router score of each text's expert

    def best(self) -> int:
        """Index of the best-scored response among this candidate's (the first on ties)."""
        return max(range(len(self.texts)), key=lambda i: (self.scores[i], -i))


def tally(answers: list[ExpertAnswer], kind: str, *, by: str = "count") -> list[Candidate]:
    """Candidates best first: by vote count (ties: score sum) or, with ``by="score"``, score sum."""
    cands: dict[str, Candidate] = {}
    for a in answers:
        v = final_value(a.text, kind)
        if v is None:
            continue
        c = cands.setdefault(v, Candidate(value=v))
        c.weight += a.score
        c.count += 1
        c.texts.append(a.text.strip())
        c.experts.append(a.expert)
        c.finish_reasons.append(a.finish_reason)
        c.scores.append(a.score)
    key = (lambda c: (c.weight, c.count)) if by == "score" else (lambda c: (c.count, c.weight))
    return sorted(cands.values(), key=key, reverse=True)


def format_final(value: str, kind: str) -> str:
    """How a fused answer states its final value (graders and users read ``Answer: X``)."""
    return value if kind == "text" else f"Answer: {value}"
