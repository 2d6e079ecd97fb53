"""Embedding router (RouterRetriever): nearest expert by example similarity (unit, fake embedder)."""

from __future__ import annotations

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import Question
from routers.embedding import EmbeddingRouter, load_examples_file
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit


def with_chef(registry: ExpertRegistry) -> ExpertRegistry:
    data = registry.to_dict()
    data["experts"]["chef"] = {"model": "smollm2-135m", "cost": 1.0, "description": "cooking",
                               "examples": ["bake sourdough bread loaf oven", "knead dough flour yeast bread"]}
    return ExpertRegistry.from_dict(data, source="test")


def test_routes_to_the_expert_with_the_matching_example(fake_ctx):
    router = EmbeddingRouter(k=1, top_n=1)
    q = Question(id="q", text="Write a Python function that reverses a linked list.")  # a coder example verbatim
    d = router.route([q], fake_ctx)[0]
    assert d.names == ["coder"]
    assert d.experts[0].score == pytest.approx(1.0, abs=1e-5)
    assert d.category == "code"


def test_new_expert_in_the_registry_is_routed_to_without_training(fake_ctx):
    router = EmbeddingRouter(k=1, top_n=1)
    router.warm_up(fake_ctx)
    ctx = RunContext(registry=with_chef(fake_ctx.registry), dispatcher=FakeDispatcher())
    d = router.route([Question(id="q", text="how do I bake sourdough bread")], ctx)[0]
    assert d.names == ["chef"]


def test_add_examples_at_runtime_changes_the_routing(fake_ctx):
    router = EmbeddingRouter(k=1, top_n=1)
    q = [Question(id="q", text="zebra xylophone quokka")]
    before = router.route(q, fake_ctx)[0].names
    target = "counsel" if before != ["counsel"] else "physician"
    router.add_examples(target, ["zebra xylophone quokka"])
    assert router.route(q, fake_ctx)[0].names == [target]


def test_examples_file_adds_examples(fake_ctx, tmp_path):
    path = tmp_path / "ex.yaml"
    path.write_text("physician:\n  - zebra xylophone quokka\n")
    router = EmbeddingRouter(k=1, top_n=1, examples_files=[str(path)])
    assert router.route([Question(id="q", text="zebra xylophone quokka")], fake_ctx)[0].names == ["physician"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("physician: just a string\n")
    with pytest.raises(ConfigError, match="lists of example"):
        load_examples_file(bad)


def test_k_experts_ranked_by_score(fake_ctx):
    d = EmbeddingRouter(k=3).route([Question(id="q", text="What is 15% of 240?")], fake_ctx)[0]
    assert len(d.names) == 3 and len(set(d.names)) == 3
    scores = [e.score for e in d.experts]
    assert scores == sorted(scores, reverse=True)
    assert 0.0 <= d.confidence <= 1.0


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match="top_n"):
        EmbeddingRouter(top_n=0)


def test_default_examples_file_is_loaded_for_the_default_registry_only(registry):
    from routers.embedding import DEFAULT_EXAMPLES

    shipped = load_examples_file(DEFAULT_EXAMPLES)
    assert set(shipped) <= set(registry.experts) and all(len(v) >= 20 for v in shipped.values())
    with_file = EmbeddingRouter().examples_for(registry)
    without = EmbeddingRouter(default_examples=False).examples_for(registry)
    assert all(len(with_file[n]) > len(without[n]) for n in shipped)
    assert shipped["coder"][0] in with_file["coder"] and shipped["coder"][0] not in without["coder"]
    custom = with_chef(registry)  # another registry: names may mean other experts, so no default file
    assert EmbeddingRouter().examples_for(custom)["coder"] == EmbeddingRouter(default_examples=False).examples_for(custom)["coder"]


def test_default_examples_never_contain_heldout_prompts(heldout_prompts):
    from routers.embedding import DEFAULT_EXAMPLES

    shipped = {t.lower().strip() for texts in load_examples_file(DEFAULT_EXAMPLES).values() for t in texts}
    assert not [t for t, _ in heldout_prompts if t.lower().strip() in shipped]


def test_examples_files_are_parsed_once_not_per_route(fake_ctx, monkeypatch):
    import routers.embedding as embedding

    calls = []
    real = embedding.load_examples_file
    monkeypatch.setattr(embedding, "load_examples_file", lambda path: calls.append(path) or real(path))
    router = EmbeddingRouter(k=1)
    for i in range(3):
        router.route([Question(id=f"q{i}", text="What is 15% of 240?")], fake_ctx)
    assert calls == [str(embedding.DEFAULT_EXAMPLES)]
