"""token_fusion / latent_fusion nodes inside the built-in pipelines, on FAKE models (unit).

``workers.fusion.lm.load_lm`` is replaced by tiny random LMs over in-process tokenizers, one per
registry model, so the test shows the wiring (routing -> fused group -> final answer + notes),
not model quality. The real-model run is in test_latent_integration.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.context import RunContext  # noqa: E402
from orchestrator.core import Question  # noqa: E402
from orchestrator.errors import ConfigError, PipelineValidationError  # noqa: E402
from orchestrator.executor import execute  # noqa: E402
from orchestrator.pipeline import Pipeline  # noqa: E402
from tests.fakes import FakeDispatcher  # noqa: E402
from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm, fake_sentencepiece  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture()
def fake_models(monkeypatch):
    import workers.fusion.lm as lm_mod

    made = {
        "smollm2-135m": fake_lm(fake_byte_bpe(), name="smollm2-135m", chat=True, seed=1),
        "qwen-coder-0.5b": fake_lm(fake_byte_bpe(), name="qwen-coder-0.5b", chat=True, seed=3, layers=6),
        "gemma3-270m": fake_lm(fake_sentencepiece(), name="gemma3-270m", chat=False, seed=2),
    }
    monkeypatch.setattr(lm_mod, "load_lm", lambda spec, device="auto": made[spec.name])
    return made


def _run(pipeline: Pipeline, questions: list[Question]):
    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher(), run_id="r")
    return execute(pipeline, questions, ctx), ctx


def test_token_fusion_pipeline_fuses_the_routed_group(fake_models):
    qs = [Question(id="q0", text="Write a Python function that reverses a string."),
          Question(id="q1", text="Which is a planet?\nA. the Moon\nB. Mars\nC. the Sun")]
    results, ctx = _run(Pipeline.load("token-fusion"), qs)
    assert [r.aggregator for r in results] == ["token_fusion", "token_fusion"]
    free, mc = results
    assert len(free.experts) == 3 and any("steps fused over" in n for n in free.trace.notes)
    assert mc.answer[:3] in ("A. ", "B. ", "C. ") and any("exact multiple-choice" in n for n in mc.trace.notes)
    assert any("ran in this process" in n for n in ctx.notes)   # FakeDispatcher has no run_fused


def test_untrained_latent_fusion_node_is_the_primary_alone(fake_models):
    pipe = Pipeline.load("latent-fusion")
    data = pipe.to_dict()
    next(n for n in data["nodes"] if n["name"] == "fuse")["params"] = {"fuser": None, "max_tokens": 6}
    results, _ = _run(Pipeline.from_dict(data), [Question(id="q0", text="Write a Python function that reverses a string.")])
    r = results[0]
    assert r.aggregator == "latent_fusion" and any("UNTRAINED" in n for n in r.trace.notes)


def test_latent_fusion_without_a_trained_fuser_says_how_to_train_one(fake_models, tmp_path):
    data = Pipeline.load("latent-fusion").to_dict()
    next(n for n in data["nodes"] if n["name"] == "fuse")["params"] = {"fuser": str(tmp_path / "none")}
    with pytest.raises(ConfigError, match="expertmix fuse train"):
        _run(Pipeline.from_dict(data), [Question(id="q0", text="hi")])


def test_bad_token_fusion_params_are_rejected_before_any_model_runs():
    data = Pipeline.load("token-fusion").to_dict()
    next(n for n in data["nodes"] if n["name"] == "fuse")["params"] = {"weights": "loudest"}
    with pytest.raises(PipelineValidationError, match="weights must be"):
        Pipeline.from_dict(data).validate()
