"""Expert profiling on fake backends: per-model batching, grading into profiles, resume, aggregator choice."""

import json

import pytest

from orchestrator.errors import BackendError, ConfigError, InputError
from skills.aggregator_choice import choose_aggregator, synthetic_sets
from skills.profiles import (ProfileStore, ValidationItem, build_profiles, load_items, load_profiles,
                             run_profiling)
from tests.skills.fake_fleet import fake_ctx

pytestmark = pytest.mark.unit


def items(n=4, marker_at=None):
    out = []
    for i in range(n):
        text = f"Question {i}: which letter?\nA. x\nB. y"
        if i == marker_at:
            text += " BOOM"
        out.append(ValidationItem(id=f"q{i}", question=text, answer="B", answer_type="choice",
                                  keywords=["algebra", "geometry"] if i % 2 == 0 else ["history"]))
    return out


def reply_by_expert(req, i):
    """alpha always right, beta always wrong, gamma right on even questions only."""
    system = req.messages[0]["content"]
    if "alpha" in system:
        return "Let me think. Answer: B"
    if "beta" in system:
        return "Answer: A"
    return "Answer: B" if any(f"Question {j}:" in req.messages[-1]["content"] for j in (0, 2)) else "Answer: A"


def test_build_profiles_adds_and_subtracts_per_keyword():
    rows = [{"expert": "e", "keywords": ["a", "b"], "correct": True},
            {"expert": "e", "keywords": ["a"], "correct": False},
            {"expert": "e", "keywords": ["a"], "correct": False}]
    assert build_profiles(rows, ["e", "f"]) == {"e": {"a": -1, "b": 1}, "f": {}}


def test_profiling_batches_per_model_and_writes_profiles(tmp_path):
    ctx, fleet = fake_ctx(reply_by_expert)
    summary = run_profiling(items(), ctx, tmp_path)
    # m1 serves alpha and beta: ONE batch of 8; m2 (gamma): one batch of 4; each model loaded once
    sizes = sorted(len(b) for fake in fleet.made for b in fake.batches)
    assert sizes == [4, 8] and ctx.dispatcher.model_loads() == {"m1": 1, "m2": 1}
    assert summary["accuracy"] == {"alpha": 1.0, "beta": 0.0, "gamma": 0.5}
    profiles = load_profiles(tmp_path)
    assert profiles["alpha"] == {"algebra": 2, "geometry": 2, "history": 2}
    assert profiles["beta"] == {"algebra": -2, "geometry": -2, "history": -2}
    assert profiles["gamma"] == {"algebra": 2, "geometry": 2, "history": -2}
    rows = [json.loads(line) for line in (tmp_path / "correctness.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"id", "keywords", "expert", "correct", "answer"} <= set(rows[0])
    assert json.loads((tmp_path / "manifest.json").read_text())["answers"] == 12


def test_profiling_resumes_without_redoing_finished_pairs(tmp_path):
    ctx, fleet = fake_ctx(reply_by_expert, fail_on="BOOM")
    with pytest.raises(BackendError):
        run_profiling(items(marker_at=3), ctx, tmp_path, chunk_size=3)
    kept = ProfileStore(tmp_path).done
    assert len(kept) == 3  # m1's first chunk (alpha q0-q2) finished before alpha q3 failed
    ctx2, fleet2 = fake_ctx(reply_by_expert)
    summary = run_profiling(items(marker_at=3), ctx2, tmp_path, chunk_size=3)
    assert summary["resumed"] == 3 and fleet2.requests() == 12 - 3
    assert summary["answers"] == 12
    assert load_profiles(tmp_path)["alpha"] == {"algebra": 2, "geometry": 2, "history": 2}


def test_missing_keywords_are_extracted_once_and_saved(tmp_path):
    class FakeExtractor:
        name, calls = "fake", 0

        def extract(self, questions, ctx):
            FakeExtractor.calls += 1
            return [["logic"] for _ in questions]

    data = [it.model_copy(update={"keywords": None}) for it in items(2)]
    ctx, _ = fake_ctx(reply_by_expert)
    run_profiling(data, ctx, tmp_path, extractor=FakeExtractor())
    assert load_profiles(tmp_path)["alpha"] == {"logic": 2}
    again = [it.model_copy(update={"keywords": None}) for it in items(2)]
    run_profiling(again, fake_ctx(reply_by_expert)[0], tmp_path, extractor=FakeExtractor())
    assert FakeExtractor.calls == 1  # the rerun reused the saved keywords


def test_load_items_detects_types_and_rejects_bad_lines(tmp_path):
    p = tmp_path / "val.jsonl"
    p.write_text(json.dumps({"id": "a", "question": "Pick\nA. x\nB. y", "answer": 1}) + "\n"
                 + json.dumps({"id": "b", "question": "2+2?", "answer": "4"}) + "\n"
                 + json.dumps({"id": "c", "question": "code", "answer": "x", "answer_type": "code"}) + "\n")
    got = load_items(p)
    assert [(it.id, it.answer_type) for it in got] == [("a", "choice"), ("b", "number")]
    assert "Answer: <letter>" in got[0].prompt()
    assert got[0].prompt(chat=False) == "Pick\nA. x\nB. y"  # a base model would copy the placeholder
    p.write_text("{not json\n")
    with pytest.raises(InputError, match="val.jsonl:1: not a labelled item"):
        load_items(p)


def test_load_profiles_missing_dir_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="expertmix profile"):
        load_profiles(tmp_path / "none")


def test_synthetic_sets_one_correct_two_wrong_shuffled_and_seeded():
    rows = [{"id": f"q{i}", "expert": e, "correct": e == "alpha", "answer": f"{e}-{i}"}
            for i in range(20) for e in ("alpha", "beta", "gamma")]
    rows.append({"id": "only-right", "expert": "alpha", "correct": True, "answer": "x"})
    sets = synthetic_sets(rows, seed=1)
    assert len(sets) == 20
    for s in sets:
        assert s["answers"][s["correct_index"]].startswith("alpha-")
    assert len({s["correct_index"] for s in sets}) == 3  # the correct answer is not always first
    assert synthetic_sets(rows, seed=1) == sets


def test_aggregator_choice_picks_the_model_that_synthesises_best(tmp_path):
    def reply(req, i):
        if req.key.split("/")[1] == "aggregator":
            return "Answer: B" if req.model == "m1" else "Answer: A"
        return reply_by_expert(req, i)

    ctx, fleet = fake_ctx(reply)
    data = items()
    run_profiling(data, ctx, tmp_path)
    result = choose_aggregator(data, ctx, ProfileStore(tmp_path))
    assert result["model"] == "m1" and result["scores"] == {"m1": 1.0, "m2": 0.0} and result["prompts"] == 2
    assert json.loads((tmp_path / "aggregator.json").read_text())["model"] == "m1"
    synth = [r for fake in fleet.made for b in fake.batches for r in b if "/aggregator/" in r.key]
    assert "do not copy a response" in synth[0].messages[0]["content"]  # the synthesis aggregator's own prompt
    assert "(final answer: " in synth[0].messages[-1]["content"]


def test_offline_router_evaluation_on_a_synthetic_table():
    from routers.skill import SkillRouter
    from skills.profile_eval import evaluate_router, split_ids
    from tests.fakes import FakeDispatcher
    from tests.skills.fake_fleet import fake_registry
    from orchestrator.context import RunContext

    # alpha is right on algebra, beta on history, gamma never: routing should beat a random pick
    rows = [{"id": f"{topic}{i}", "expert": e, "keywords": [topic],
             "correct": (e, topic) in {("alpha", "algebra"), ("beta", "history")}}
            for i in range(30) for topic in ("algebra", "history") for e in ("alpha", "beta", "gamma")]
    train, test = split_ids(rows, holdout=0.3)
    assert not set(train) & set(test) and 10 <= len(test) <= 30
    ctx = RunContext(registry=fake_registry(), dispatcher=FakeDispatcher())
    report = evaluate_router(SkillRouter(), rows, ctx, map_keywords=False)
    assert report["routed"] == 1.0 and report["random"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["oracle"] == 1.0


def test_cross_validation_ranks_settings_by_routed_correctness():
    from routers.skill_cv import cross_validate
    from tests.skills.fake_fleet import fake_registry

    rows = [{"id": f"{topic}{i}", "expert": e, "keywords": [topic],
             "correct": (e, topic) in {("alpha", "algebra"), ("beta", "history")}}
            for i in range(30) for topic in ("algebra", "history") for e in ("alpha", "beta", "gamma")]
    grid = [{"scoring": "smoothed", "prior_strength": 2.0, "tau": 0.02},
            {"scoring": "smoothed", "prior_strength": 2.0, "tau": 50.0}]  # tau 50: weights ~uniform
    results = cross_validate(rows, {}, grid, registry=fake_registry(), splits=2)
    assert [r["tau"] for r in results] == [0.02, 50.0], "the sharp setting routes better and ranks first"
    assert results[0]["routed"] > results[1]["routed"] and results[0]["oracle"] == 1.0
    assert {"routed_sd", "best_single", "random", "heldout_questions"} <= set(results[0])


def test_import_eval_turns_generated_answers_into_profile_rows(tmp_path):
    from skills.default_profiles import step_import_eval
    from skills.evaluation import load_items
    from skills.model_profiling import ResultStore

    (item,) = [e.item for e in load_items(["sciq"], split="validation", limit=1)]
    eval_dir = tmp_path / "ev"
    eval_dir.mkdir()
    rows = [{"system": f"expert:{e}", "task": "sciq", "id": item.id, "correct": ok, "extracted": "A"}
            for e, ok in (("generalist", False), ("scientist", True), ("encyclopedia", False))]
    rows.append({"system": "symbolic-moe", "task": "sciq", "id": item.id, "correct": True})  # not an expert: skipped
    (eval_dir / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "profiles"
    out.mkdir()
    (out / "model_results.jsonl").write_text(json.dumps(
        {"id": item.id, "model": "qwen-coder-0.5b", "task": "sciq", "kind": "loglik", "correct": False}) + "\n")
    assert step_import_eval(out, eval_dir, ["sciq"], split="validation", limit=1, seed=0) == 3
    got = {r["model"]: r for r in ResultStore(out).rows}
    assert set(got) == {"smollm2-135m", "qwen-coder-0.5b", "gemma3-270m"}
    assert got["qwen-coder-0.5b"]["correct"] is True and got["qwen-coder-0.5b"]["kind"] == "generate"  # replaced
    saved = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in saved] == [item.id] and saved[0]["keywords"]
    with pytest.raises(SystemExit, match="test-split"):
        step_import_eval(out, eval_dir, ["sciq"], split="test", limit=1, seed=0)


def test_persona_answers_profile_only_their_persona_and_model_rows_fill_the_rest():
    """Personas of one model differ by role prompt and token budget: an answer imported per persona
    profiles that expert alone; the model's row stands for its personas without one of their own."""
    from orchestrator.config import ExpertRegistry
    from skills.model_profiling import persona_rows

    registry = ExpertRegistry.default()
    qwen = registry.model_of("scientist").name
    results = [{"id": "q1", "model": qwen, "task": "t", "correct": True},                      # model row
               {"id": "q1", "model": qwen, "task": "t", "correct": False, "expert": "math-tutor"},
               {"id": "q2", "model": qwen, "task": "t", "correct": False}]
    rows = persona_rows(results, registry, {"q1": ["k"], "q2": ["k"]}, {})
    got = {(r["id"], r["expert"]): r["correct"] for r in rows if r["model"] == qwen}
    personas = [e for e in registry.experts if registry.model_of(e).name == qwen]
    assert "math-tutor" in personas and len(personas) >= 2
    assert got[("q1", "math-tutor")] is False
    assert all(got[("q1", e)] is True for e in personas if e != "math-tutor")
    assert all(got[("q2", e)] is False for e in personas)
    assert len(got) == 2 * len(personas)  # one row per (item, persona): the own answer replaces the model's


def test_import_eval_per_persona_keeps_the_model_row_for_other_personas(tmp_path):
    from skills.default_profiles import step_import_eval
    from skills.evaluation import load_items
    from skills.model_profiling import ResultStore

    (item,) = [e.item for e in load_items(["sciq"], split="validation", limit=1)]
    eval_dir = tmp_path / "ev"
    eval_dir.mkdir()
    (eval_dir / "answers.jsonl").write_text(json.dumps(
        {"system": "expert:math-tutor", "task": "sciq", "id": item.id, "correct": True, "extracted": "B"}) + "\n")
    out = tmp_path / "profiles"
    out.mkdir()
    (out / "model_results.jsonl").write_text(json.dumps(
        {"id": item.id, "model": "qwen-coder-0.5b", "task": "sciq", "kind": "generate", "correct": False}) + "\n")
    assert step_import_eval(out, eval_dir, ["sciq"], split="validation", limit=1, seed=0, per_persona=True) == 1
    rows = ResultStore(out).rows
    assert sorted((r.get("expert") or "", r["correct"]) for r in rows) == [("", False), ("math-tutor", True)]
