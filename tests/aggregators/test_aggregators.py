"""Vote and synthesis aggregators (fakes only)."""

from __future__ import annotations

import pytest

from aggregators.base import AGGREGATORS, AggregationItem, make_aggregator
from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import ExpertAnswer, Question
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit


def item(q, *answers):
    return AggregationItem(question=Question(id=q, text=q),
                           answers=[ExpertAnswer(expert=f"e{i}", model="m", text=t, score=s) for i, (t, s) in enumerate(answers)])


def ctx(disp=None):
    return RunContext(registry=ExpertRegistry.default(), dispatcher=disp or FakeDispatcher(), run_id="r")


def test_vote_majority_number():
    out = make_aggregator("vote").aggregate([item("What is 6*7?", ("It is 42", 1), ("Answer: 42", 1), ("41", 5))], ctx())
    assert out[0].answer == "42" and "42: 2" in out[0].notes[0]


def test_vote_choice_letters_and_tie_break_by_score():
    q = "Which is a mammal?\nA. trout\nB. whale\nC. shark\nD. squid"
    out = make_aggregator("vote").aggregate([item(q, ("The answer is B", 0.2), ("Answer: C", 0.9))], ctx())
    assert out[0].answer == "C"


def test_vote_falls_back_and_says_so():
    out = make_aggregator("vote", answer_type="number").aggregate([item("Say hi", ("hello", 0.1), ("hey there", 0.7))], ctx())
    assert out[0].answer == "hey there" and "no extractable" in out[0].notes[0]


def test_vote_rejects_unknown_answer_type():
    with pytest.raises(ConfigError, match="unknown answer_type"):
        make_aggregator("vote", answer_type="poem")


def test_synthesis_sends_one_batch_for_all_questions():
    disp = FakeDispatcher(reply=lambda r: "fused")
    items = [item(f"question number {i}", ("a", 1), ("b", 1)) for i in range(5)]
    out = make_aggregator("synthesis").aggregate(items, ctx(disp))
    assert [o.answer for o in out] == ["fused"] * 5
    assert disp.batches == [("aggregate", "qwen-coder-0.5b", 5)]
    assert out[0].model == "qwen-coder-0.5b"


def test_synthesis_prompt_lists_answers_and_strips_reasoning():
    seen = []
    disp = FakeDispatcher(reply=lambda r: seen.append(r.messages[-1]["content"]) or "ok")
    make_aggregator("synthesis").aggregate([item("q?", ("<think>secret</think>Paris", 1), ("Lyon", 1))], ctx(disp))
    assert "Response 1:\nParis" in seen[0] and "Response 2:\nLyon" in seen[0] and "secret" not in seen[0]


def test_synthesis_passes_single_answer_through():
    disp = FakeDispatcher()
    out = make_aggregator("synthesis").aggregate([item("q?", ("same", 1), ("same", 1))], ctx(disp))
    assert out[0].answer == "same" and disp.batches == [] and "skipped" in out[0].notes[0]


def test_registered_names():
    make_aggregator("vote")
    assert {"vote", "synthesis"} <= set(AGGREGATORS.names())


def test_vote_on_free_form_questions_matches_whole_answers():
    q = "What is the capital of Australia?"
    out = make_aggregator("vote").aggregate(
        [item(q, ("Canberra.", 0.2), ("canberra", 0.3), ("Sydney", 0.9))], ctx())
    assert out[0].answer == "Canberra." and "vote (text)" in out[0].notes[0]


def test_vote_on_free_form_answers_that_all_differ_uses_the_top_scored():
    q = "What is the difference between a list and a tuple in Python?"
    out = make_aggregator("vote").aggregate(
        [item(q, ("Lists are mutable; there are 2 kinds.", 0.2), ("Tuples are immutable; Python 3.", 0.9))], ctx())
    assert out[0].answer == "Tuples are immutable; Python 3." and "no extractable text" in out[0].notes[0]
