"""The default pipeline on questions whose answers are certain (real engines, real skill router)."""

from __future__ import annotations

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from skills.grading import is_correct
from workers.dispatch import LocalDispatcher

pytestmark = pytest.mark.integration

CERTAIN = [("What is 15% of 240?", "36", "number"),
           ("What is 7 * 8?", "56", "number"),
           ("A shop sells pencils at 3 for $1. How many dollars do 12 pencils cost?", "4", "number"),
           ("Which planet is known as the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn", "B", "choice")]


def test_symbolic_moe_answers_certain_questions_correctly(real_pool):
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.load("symbolic-moe"), dispatcher=LocalDispatcher(real_pool))
    results = orch.run([q for q, _, _ in CERTAIN])
    wrong = [(q, r.answer[-200:], [e.name for e in r.experts], r.trace.notes)
             for (q, gold, kind), r in zip(CERTAIN, results) if not is_correct(r.answer, gold, kind)]
    assert not wrong, wrong
