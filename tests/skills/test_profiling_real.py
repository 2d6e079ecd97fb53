"""The profiling recipe on real engines (shared pool): log-likelihood multiple choice on SmolLM2 and
Qwen-Coder, chain-of-thought GSM8K and executed MBPP, then rows -> profiles -> the skill router."""

import pytest

from orchestrator.config import ExpertRegistry
from skills.default_profiles import accuracy_table, format_table
from skills.loglik import ChoiceItem, load_choice_task, score_items
from skills.model_profiling import ResultStore, load_gen_task, persona_rows, profile_choices, profile_generation

pytestmark = pytest.mark.integration

EASY = [  # one clearly right option each: a working scorer gets them
    ChoiceItem(id="t/paris", task="t", question="What is the capital of France?",
               context="Question: What is the capital of France?\nAnswer:", choices=["Berlin", "Paris", "Madrid"],
               gold=1, category="general"),
    ChoiceItem(id="t/sum", task="t", question="2 + 2 =", context="2 + 2 =", choices=["4", "7", "22"], gold=0,
               category="math"),
    ChoiceItem(id="t/legs", task="t", question="The number of legs of a dog is",
               context="The number of legs of a dog is", choices=["four", "nine", "one hundred"], gold=0,
               category="general"),
]


def test_loglikelihoods_rank_the_right_continuation(real_pool):
    backend = real_pool.acquire("qwen-coder-0.5b")
    paris, berlin = backend.loglikelihoods([("Question: What is the capital of France?\nAnswer:", " Paris"),
                                            ("Question: What is the capital of France?\nAnswer:", " Berlin")])
    assert paris > berlin and paris < 0
    assert [r["correct"] for r in score_items(backend, EASY)] == [True, True, True]


def test_recipe_on_a_few_real_items(real_pool, tmp_path):
    registry = ExpertRegistry.default()
    choice = load_choice_task("basic_skills/arithmetic", limit=6) + load_choice_task("arc_easy", limit=4)
    gen = load_gen_task("gsm8k", limit=2) + load_gen_task("mbpp", limit=2)
    assert all(it.split == "validation" for it in choice)
    store = ResultStore(tmp_path)
    for model in ("smollm2-135m", "qwen-coder-0.5b"):
        backend = real_pool.acquire(model)
        assert profile_choices(backend, model, choice, store) == len(choice)
        assert profile_generation(backend, registry.model(model), gen, store, max_tokens=256) == len(gen)
    again = ResultStore(tmp_path)  # resumable: a rerun finds everything done
    assert profile_choices(real_pool.acquire("smollm2-135m"), "smollm2-135m", choice, again) == 0
    code_rows = [r for r in again.rows if r["task"] == "mbpp"]
    assert all(r["extracted"] is not None for r in code_rows)  # code was extracted and run
    keywords = {it.id: ["arithmetic"] for it in [*choice, *gen]}
    rows = persona_rows(again.rows, registry, keywords, {})
    # every persona of a profiled model gets that model's rows; gemma's persona none (not run here)
    assert {r["expert"] for r in rows} == {"generalist", "physician", "counsel", "coder", "math-tutor", "scientist"}
    table = accuracy_table(rows)
    print(format_table(table, list(registry.experts)))
    assert set(table) == {"basic_skills/arithmetic", "arc_easy", "gsm8k", "mbpp"}
