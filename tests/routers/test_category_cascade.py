"""Category router ``encoder: cascade``: static first, MiniLM only for low-confidence questions (unit, fakes)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from orchestrator.errors import ConfigError
from orchestrator.core import Question
from routers import category
from routers.category import CategoryModel, CategoryRouter

pytestmark = pytest.mark.unit

CLASSES = ["code", "general", "math"]


class FakeEncoders:
    """Stands in for ``routers.category.embed``: records which texts each encoder saw.

    A text ``"<class> <confidence>"`` embeds to a vector that the :class:`FakeClassifier` turns
    into that top-class probability, so a test decides each question's static confidence.
    """

    def __init__(self) -> None:
        self.calls: dict[str, list[list[str]]] = {"static": [], "minilm": [], "e5": []}

    def __call__(self, texts, *, cache=False, encoder="minilm", batch_size=128):
        self.calls[encoder].append(list(texts))
        X = np.zeros((len(texts), 2), dtype=np.float32)
        for i, t in enumerate(texts):
            cls, conf = t.rsplit(maxsplit=1)
            X[i] = [CLASSES.index(cls) if cls in CLASSES else 0, float(conf)]
        return X


class FakeClassifier(CategoryModel):
    """Top class from the fake vector, with the given probability (MiniLM answers ``minilm_class``)."""

    def __init__(self, minilm_class: str | None = None) -> None:
        super().__init__(CLASSES, np.zeros((3, 2)), np.zeros(3))
        self.minilm_class = minilm_class

    def predict_proba(self, X):
        p = np.zeros((len(X), len(CLASSES)), dtype=np.float32)
        for i, (j, conf) in enumerate(X):
            j = CLASSES.index(self.minilm_class) if self.minilm_class else int(j)
            conf = 0.99 if self.minilm_class else conf
            p[i] = (1 - conf) / (len(CLASSES) - 1)
            p[i, j] = conf
        return p


@pytest.fixture
def encoders(monkeypatch) -> FakeEncoders:
    fake = FakeEncoders()
    monkeypatch.setattr(category, "embed", fake)
    return fake


def cascade_router(threshold: float = 0.5) -> CategoryRouter:
    router = CategoryRouter(encoder="cascade", cascade_threshold=threshold, threshold=0.3)
    # no e5 stage unless a test adds one (the shipped e5 classifier has the real 9 classes)
    router._models = {"static": FakeClassifier(), "minilm": FakeClassifier(minilm_class="math"), "e5": None}
    return router


def test_only_low_confidence_questions_go_to_minilm_in_one_batch(encoders):
    router = cascade_router(0.5)
    texts = ["code 0.9", "code 0.4", "general 0.7", "code 0.49", "general 0.5"]
    cats, probs = router.classify(texts)
    assert encoders.calls["static"] == [texts]
    assert encoders.calls["minilm"] == [["code 0.4", "code 0.49"]]  # one batch, in order
    assert cats == ["code", "math", "general", "math", "general"]
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1.0)
    _, rerouted = router.probabilities(texts)
    assert rerouted == ["static", "minilm", "static", "minilm", "static"]


def test_non_english_questions_go_to_the_multilingual_stage(encoders, fake_ctx):
    router = cascade_router(0.5)
    router._models["e5"] = FakeClassifier(minilm_class="code")
    texts = ["code 0.9", "这段代码为什么报错 0.2", "Почему мой код падает 0.2"]
    probs, stages = router.probabilities(texts)
    assert stages == ["static", "e5", "e5"]
    assert encoders.calls["e5"] == [texts[1:]] and encoders.calls["minilm"] == []
    d = router.route([Question(id="zh", text=texts[1])], fake_ctx)[0]
    assert d.category == "code" and any("multilingual" in n for n in d.notes)


def test_cascade_encoder_e5_minilm_averages_both_classifiers(encoders):
    router = CategoryRouter(encoder="cascade", cascade_threshold=0.5, threshold=0.3, cascade_encoder="e5+minilm")
    router._models = {"static": FakeClassifier(), "minilm": FakeClassifier(minilm_class="math"),
                      "e5": FakeClassifier(minilm_class="code")}
    texts = ["general 0.9", "general 0.3", "这段代码为什么报错 0.2"]
    probs, stages = router.probabilities(texts)
    assert stages == ["static", "e5+minilm", "e5"]
    assert encoders.calls["e5"] == [[texts[2]], [texts[1]]] and encoders.calls["minilm"] == [[texts[1]]]
    # the ensemble is the mean of the two classifiers: e5 says code 0.99, MiniLM math 0.99
    assert np.allclose(probs[1], [0.4975, 0.005, 0.4975])
    assert router.config()["cascade_encoder"] == "e5+minilm"
    assert router.model is router._models["e5"]  # e5's classes and threshold decide


def test_unsure_english_questions_go_to_the_e5_second_stage_by_default(encoders):
    router = cascade_router(0.5)
    router._models["e5"] = FakeClassifier(minilm_class="code")
    texts = ["general 0.9", "general 0.3", "这段代码为什么报错 0.2"]
    cats, _ = router.classify(texts)
    assert cats == ["general", "code", "code"]
    assert encoders.calls["e5"] == [[texts[2]], [texts[1]]] and encoders.calls["minilm"] == []
    assert router.probabilities(texts)[1] == ["static", "e5", "e5"]
    assert router.config()["cascade_encoder"] == "e5"


def test_cascade_encoder_minilm_keeps_minilm_as_the_second_stage(encoders):
    router = CategoryRouter(encoder="cascade", cascade_threshold=0.5, threshold=0.3, cascade_encoder="minilm")
    router._models = {"static": FakeClassifier(), "minilm": FakeClassifier(minilm_class="math"),
                      "e5": FakeClassifier(minilm_class="code")}
    assert router.classify(["general 0.3", "Почему мой код падает 0.2"])[0] == ["math", "code"]
    assert encoders.calls["minilm"] == [["general 0.3"]]
    with pytest.raises(ConfigError, match="cascade_encoder"):
        CategoryRouter(cascade_encoder="static")


def test_confident_batch_never_runs_minilm(encoders):
    cats, _ = cascade_router(0.5).classify(["code 0.8", "general 0.95"])
    assert cats == ["code", "general"]
    assert encoders.calls["minilm"] == []


def test_threshold_extremes_are_static_only_and_minilm_only(encoders):
    assert cascade_router(0.0).classify(["code 0.35"])[0] == ["code"]  # 0.35 >= threshold 0.3
    assert encoders.calls["minilm"] == []
    assert cascade_router(1.0).classify(["code 0.99"])[0] == ["math"]
    assert encoders.calls["minilm"] == [["code 0.99"]]


def test_route_uses_the_cascade_decision(encoders, fake_ctx):
    d = cascade_router(0.5).route([Question(id="a", text="code 0.3"), Question(id="b", text="code 0.9")], fake_ctx)
    assert [x.category for x in d] == ["math", "code"]
    assert d[0].names == ["math-tutor"] and d[1].names == ["coder"]


def test_cascade_is_the_default_and_config_round_trips():
    router = CategoryRouter()
    assert router.config()["encoder"] == "cascade"
    assert CategoryRouter(**router.config()).config() == router.config()
    with pytest.raises(ConfigError, match="cascade_threshold"):
        CategoryRouter(cascade_threshold=1.5)
    with pytest.raises(ConfigError, match="cascade"):
        CategoryRouter(encoder="bogus")


def test_shipped_classifiers_agree_on_classes():
    router = CategoryRouter(encoder="cascade")
    assert router.model_for("static").classes == router.model_for("minilm").classes == router.model_for("e5").classes


def test_model_dir_without_static_weights_falls_back_to_minilm(tmp_path, encoders, caplog):
    FakeClassifier().save(tmp_path)  # MiniLM weights only
    router = CategoryRouter(model_dir=tmp_path, encoder="cascade", threshold=0.0)
    with caplog.at_level(logging.WARNING, logger="routers.category"):
        cats, _ = router.classify(["code 0.9"])
    assert encoders.calls["static"] == [] and encoders.calls["minilm"] == [["code 0.9"]]
    assert "no static classifier" in caplog.text
    assert len(cats) == 1
