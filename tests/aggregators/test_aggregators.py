"""Vote and synthesis aggregators (fakes only)."""

from __future__ import annotations

import json

import pytest

from aggregators.model_choice import default_profiles_dir
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
    chosen = json.loads((default_profiles_dir() / "aggregator.json").read_text())["model"]
    assert disp.batches == [("aggregate", chosen, 5)]  # Symbolic-MoE's validated choice, not the registry's
    assert out[0].model == chosen and "validated choice" in out[0].notes[0]
    pinned = make_aggregator("synthesis", model="gemma3-270m").aggregate(items[:1], ctx(disp))
    assert pinned[0].model == "gemma3-270m" and "pinned" in pinned[0].notes[0]


def test_synthesis_prompt_lists_answers_and_strips_reasoning():
    seen = []
    disp = FakeDispatcher(reply=lambda r: seen.append(r.messages[-1]["content"]) or "ok")
    make_aggregator("synthesis").aggregate([item("q?", ("<think>secret</think>Paris", 1), ("Lyon", 1))], ctx(disp))
    assert "Response 1:\nParis" in seen[0] and "Response 2:\nLyon" in seen[0] and "secret" not in seen[0]


def test_synthesis_weighs_stated_answers_and_ends_in_the_question_format():
    seen = []
    disp = FakeDispatcher(reply=lambda r: seen.append(r.messages[-1]["content"]) or "0.15 * 240 = 36.\nAnswer: 36")
    q = "What is 15% of 240?"
    out = make_aggregator("synthesis").aggregate(
        [item(q, ("15% of 240 is 32.\nAnswer: 32", 0.9), ("0.15 * 240 = 36. Answer: 36", 0.5))], ctx(disp))
    assert "Response 1 (final answer: 32)" in seen[0] and "Final answers proposed: 32 (1 of 2), 36 (1 of 2)" in seen[0]
    assert "Answer: <number>" in seen[0]
    assert out[0].answer.endswith("Answer: 36")


def test_synthesis_falls_back_to_the_weighted_vote_when_the_reply_states_nothing():
    disp = FakeDispatcher(reply=lambda r: "Let me check the first response step by step and")
    q = "Which is a mammal?\nA. trout\nB. whale\nC. shark"
    out = make_aggregator("synthesis").aggregate(
        [item(q, ("Answer: B", 0.3), ("Answer: B", 0.3), ("Answer: C", 0.5))], ctx(disp))
    assert out[0].answer.endswith("Answer: B") and "score-weighted vote (B)" in out[0].notes[-1]


def test_synthesis_skips_the_call_when_all_experts_state_the_same_value():
    disp = FakeDispatcher()
    out = make_aggregator("synthesis").aggregate(
        [item("What is 6*7?", ("6*7 = 42", 0.2), ("Answer: 42", 0.9))], ctx(disp))
    assert disp.batches == [] and out[0].answer == "Answer: 42" and "all 2 experts agree" in out[0].notes[0]


def test_vote_weighted_by_router_scores():
    q = "What is 6*7?"
    answers = [("Answer: 41", 0.2), ("Answer: 41", 0.2), ("Answer: 42", 0.9)]
    assert make_aggregator("vote").aggregate([item(q, *answers)], ctx())[0].answer == "41"
    assert make_aggregator("vote", weights="score").aggregate([item(q, *answers)], ctx())[0].answer == "42"
    with pytest.raises(ConfigError, match="unknown weights"):
        make_aggregator("vote", weights="votes")


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
    assert out[0].answer == "Canberra." and "vote (text, by count)" in out[0].notes[0]


def test_vote_on_free_form_answers_that_all_differ_uses_the_top_scored():
    q = "What is the difference between a list and a tuple in Python?"
    out = make_aggregator("vote").aggregate(
        [item(q, ("Lists are mutable; there are 2 kinds.", 0.2), ("Tuples are immutable; Python 3.", 0.9))], ctx())
    assert out[0].answer == "Tuples are immutable; Python 3." and "no extractable text" in out[0].notes[0]


def test_select_judge_picks_a_candidate_and_passes_it_unchanged():
    seen = []
    disp = FakeDispatcher(reply=lambda r: seen.append(r.messages[-1]["content"]) or "The second is right. Best: 2")
    q = "What is 15% of 240?"
    out = make_aggregator("select").aggregate(
        [item(q, ("15% of 240 is 32. Answer: 32", 0.9), ("0.15 * 240 = 36. Answer: 36", 0.5))], ctx(disp))
    assert "Candidate 1 (final answer 32; given by 1 of 2 experts)" in seen[0]
    assert out[0].answer == "0.15 * 240 = 36. Answer: 36" and "picked candidate 2" in out[0].notes[1]
    bad = make_aggregator("select").aggregate(
        [item(q, ("Answer: 32", 0.9), ("Answer: 36", 0.5))], ctx(FakeDispatcher(reply=lambda r: "hmm")))
    assert bad[0].answer == "Answer: 32" and "named no candidate" in bad[0].notes[1]
    agreed = make_aggregator("select").aggregate([item(q, ("Answer: 36", 0.1), ("so 36", 0.2))], ctx(disp))
    assert len(seen) == 1 and "no judge call" in agreed[0].notes[0]


def test_select_loglik_scores_the_candidates_options_and_keeps_the_judge_for_the_rest():
    q = "Which is a mammal?\nA. trout\nB. whale\nC. shark\nD. squid"
    seen = []

    def score(prompt, continuation):
        seen.append((prompt, continuation))
        return {" whale": -3.0, " shark": -9.0}[continuation]  # per character: -0.5 vs -1.5

    disp = FakeDispatcher(reply=lambda r: "Best: 1", score=score)
    sel = make_aggregator("select", method="loglik")
    out = sel.aggregate([item(q, ("Answer: C", 0.9), ("Answer: C", 0.8), ("I think B. Answer: B", 0.1)),
                         item("What is 15% of 240?", ("Answer: 32", 0.9), ("Answer: 36", 0.5))], ctx(disp))
    assert seen == [("Question: Which is a mammal?\nAnswer:", " shark"), ("Question: Which is a mammal?\nAnswer:", " whale")]
    assert out[0].answer == "I think B. Answer: B"  # the option the model finds likeliest beats the majority
    assert "log-likelihood per character" in out[0].notes[1] and "B -0.500" in out[0].notes[1]
    assert out[1].answer == "Answer: 32" and "judge picked candidate 1" in out[1].notes[1]  # a number: the judge
    assert disp.batches == [("aggregate", out[0].model, 2)]  # scoring and judging: one batch
    hinted = sel.aggregate([item(q + "\n\nAnswer with the letter of the correct option, as: Answer: <letter>",
                                 ("Answer: C", 0.9), ("Answer: B", 0.1))], ctx(disp))
    assert hinted[0].answer == "Answer: B" and seen[-1] == ("Question: Which is a mammal?\nAnswer:", " whale")
    yes_no = sel.aggregate([item("Is the sky blue? Answer yes or no.", ("Answer: no", 0.9), ("Answer: yes", 0.1))],
                           ctx(FakeDispatcher(score=lambda p, c: 0.0 if c == " yes" else -5.0)))
    assert yes_no[0].answer == "Answer: yes"
    with pytest.raises(ConfigError, match="unknown method"):
        make_aggregator("select", method="coin")


def test_select_loglik_needs_a_local_engine():
    from orchestrator.config import ModelSpec

    reg = ExpertRegistry.default()
    reg.models["hosted"] = ModelSpec(name="hosted", backend="litellm", litellm_model="openai/gpt-4o-mini")
    disp = FakeDispatcher(reply=lambda r: "Best: 2")
    q = "Which is a mammal?\nA. trout\nB. whale"
    out = make_aggregator("select", method="loglik", model="hosted").aggregate(
        [item(q, ("Answer: A", 0.9), ("Answer: B", 0.1))],
        RunContext(registry=reg, dispatcher=disp, run_id="r"))
    assert out[0].answer == "Answer: B" and "judge picked candidate 2" in out[0].notes[1]


def test_a_plugin_backend_that_declares_can_score_gets_the_loglik_path(monkeypatch):
    from orchestrator.config import ModelSpec
    import workers.backends.fake  # noqa: F401  (registers the `fake` backend)
    from orchestrator.core import BACKENDS, can_score

    class Scorer:  # a plug-in backend: only the class attribute matters here
        can_score = True

    monkeypatch.setitem(BACKENDS._items, "test-scorer", Scorer)
    assert can_score("vllm") and can_score("fake") and can_score("test-scorer")
    assert not can_score("litellm") and not can_score("openai")
    reg = ExpertRegistry.default()
    reg.models["mine"] = ModelSpec(name="mine", backend="test-scorer")
    disp = FakeDispatcher(reply=lambda r: "Best: 1", score=lambda p, c: 0.0 if "whale" in c else -5.0)
    out = make_aggregator("select", method="loglik", model="mine").aggregate(
        [item("Which is a mammal?\nA. trout\nB. whale", ("Answer: A", 0.9), ("Answer: B", 0.1))],
        RunContext(registry=reg, dispatcher=disp, run_id="r"))
    assert out[0].answer == "Answer: B"


def test_vote_can_return_the_best_scored_response_of_the_winning_answer():
    q = "What is 6 times 7?"
    answers = [("6 x 7 = 42. Answer: 42", 0.2), ("Seven sixes make 42.", 0.5), ("It is 41.", 0.3)]
    out = make_aggregator("vote", weights="score", answer="response").aggregate([item(q, *answers)], ctx())[0]
    assert out.answer == "Seven sixes make 42."  # the winner (42: 0.7) in its best-scored voter's words
    assert make_aggregator("vote").config()["answer"] == "value"
    with pytest.raises(ConfigError):
        make_aggregator("vote", answer="essay")
