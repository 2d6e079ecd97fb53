"""``expertmix fuse train`` / ``fuse eval`` end to end on FAKE models (unit): files, PNG, report."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.unit


@pytest.fixture()
def fake_models(monkeypatch):
    import workers.fusion.lm as lm_mod
    from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm, fake_sentencepiece

    made = {"qwen-coder-0.5b": fake_lm(fake_byte_bpe(), name="qwen-coder-0.5b", seed=1, layers=6),
            "gemma3-270m": fake_lm(fake_sentencepiece(), name="gemma3-270m", chat=False, seed=2)}
    monkeypatch.setattr(lm_mod, "load_lm", lambda spec, device="auto": made[spec.name])
    return made


def test_fuse_train_then_eval_from_the_cli(fake_models, tmp_path, capsys):
    from orchestrator.faces.cli import main

    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "choices": c, "gold": g}) for q, c, g in [
        ("Water boils at?", ["100 degrees", "5 degrees"], 0), ("2 + 2 =", ["3", "4"], 1)]) + "\n")
    out = tmp_path / "fuser"
    assert main(["fuse", "train", "--data", str(data), "--out", str(out), "--models", "qwen-coder-0.5b,gemma3-270m",
                 "--epochs", "2", "--shared", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 4 and report["trainable_parameters"] < 5_000_000
    assert {p.name for p in out.iterdir()} >= {"fuser.json", "interaction.safetensors", "loss.png", "train_report.json"}
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["fuse", "eval", "--fuser", str(out), "--data", str(data)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["items"] == 2 and set(scored) >= {"fused", "primary"}


def test_fuse_train_rejects_a_single_model(fake_models, tmp_path):
    from orchestrator.errors import InputError
    from aggregators.latent.recipe import train_recipe

    with pytest.raises(InputError, match="at least one peer"):
        train_recipe(["qwen-coder-0.5b"], "arc_easy", out=tmp_path / "f")
