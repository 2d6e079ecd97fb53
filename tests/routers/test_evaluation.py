"""Per-source evaluation and held-out-source calibration of the category classifier (unit, synthetic data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.faces.cli import main
from routers.category import CategoryModel
from routers.category_train import Example, expected_calibration_error, train_cross_source
from routers.evaluation import format_table, report, wilson
from tests.routers.conftest import FakeEmbedder

pytestmark = pytest.mark.unit


def test_report_breaks_down_by_source_and_category_with_intervals():
    truth = ["math"] * 8 + ["law"] * 2
    pred = ["math"] * 7 + ["law"] + ["law", "math"]
    r = report(truth, pred, ["a"] * 8 + ["b"] * 2, in_domain=[t == p for t, p in zip(truth, pred)])
    assert r["accuracy"] == 0.8 and r["by_source"]["a"]["accuracy"] == 0.875
    assert r["by_source"]["b"]["n"] == 2 and r["by_category"]["law"]["accuracy"] == 0.5
    lo, hi = r["accuracy_ci95"]
    assert lo < 0.8 < hi and (lo, hi) == wilson(8, 10)
    assert r["macro_f1_ci95"][0] <= r["macro_f1"] <= r["macro_f1_ci95"][1]
    assert "| a | 8 | 0.875" in format_table(r["by_source"], "source")


def test_wilson_interval_is_wide_on_small_samples():
    lo, hi = wilson(9, 10)
    assert hi - lo > 0.3 and wilson(900, 1000)[1] - wilson(900, 1000)[0] < 0.05


def _rows_and_features(n: int = 300, seed: int = 0):
    """Two well-separated classes in training sources; a shifted, noisier calibration source."""
    rng = np.random.default_rng(seed)
    rows, X = [], []
    for i in range(n):
        cat = ["math", "code"][i % 2]
        src = "naturalqs" if i % 3 == 0 else "train"
        centre = np.array([1.0, 0.0]) if cat == "math" else np.array([0.0, 1.0])
        noise = 1.2 if src == "naturalqs" else 0.1  # the held-out source looks different
        X.append(centre + rng.normal(0, noise, 2))
        rows.append(Example(id=str(i), text=f"t{i}", category=cat, source=src))
    return rows, np.array(X, dtype=np.float32)


def test_held_out_source_calibration_softens_an_overconfident_classifier(tmp_path):
    rows, X = _rows_and_features()
    model, rep = train_cross_source(rows, tmp_path, encoder="static", C=100.0, embeddings=X)
    assert rep["temperature"] > 1.0  # confident on its own sources, not on the held-out one
    assert rep["calibration_ece_after"] <= rep["calibration_ece_before"]
    again = CategoryModel.load(tmp_path, "category_router_static")
    assert again.temperature == rep["temperature"] and again.meta["threshold"] == rep["threshold"]


def test_ece_is_zero_for_perfectly_calibrated_certainty():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == 0.0


def test_eval_router_reports_per_source(tmp_path, capsys, monkeypatch):
    from routers.multilingual_embed import E5Embedder
    from routers.static_embed import StaticEmbedder
    from skills.embeddings import Embedder

    fake = FakeEmbedder()
    for cls in (Embedder, StaticEmbedder, E5Embedder):
        monkeypatch.setattr(cls, "_shared", fake)
    data = tmp_path / "l.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "1", "question": "What is 2 + 2?", "category": "math", "source": "quiz"},
        {"id": "2", "question": "Write a poem about rain", "category": "writing", "source": "chat"},
        {"id": "3", "question": "Напиши стихотворение о весне", "category": "writing", "source": "chat"}]))
    assert main(["eval-router", "--router", "category", "--data", str(data), "--png", str(tmp_path / "c.png"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["by_source"]) == {"quiz", "chat"} and out["by_source"]["chat"]["n"] == 2
    assert {"accuracy_ci95", "macro_f1_ci95", "in_domain_top1", "by_category"} <= set(out)
    assert (tmp_path / "c.png").stat().st_size > 1000
