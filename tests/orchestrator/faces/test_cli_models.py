"""``expertmix models`` and ``expertmix setup-models`` (no model is loaded)."""

from __future__ import annotations

import json

import pytest
import yaml

from orchestrator.faces import cli_models
from orchestrator.faces.cli import main
from workers import model_setup

pytestmark = pytest.mark.unit


@pytest.fixture
def registry_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTMIX_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("FAKE_PROVIDER_KEY", raising=False)
    path = tmp_path / "experts.yaml"
    path.write_text(yaml.safe_dump({
        "models": {
            "local-one": {"backend": "vllm", "local": "smollm2-135m-instruct", "memory_gib": 1.5},
            "hosted": {"backend": "litellm", "litellm_model": "openai/gpt-4o-mini", "api_key_env": "FAKE_PROVIDER_KEY"},
            "unused": {"backend": "vllm", "path": "/nowhere"},
        },
        "experts": {
            "a": {"model": "local-one"},
            "b": {"model": "hosted"},
            "c": {"model": "local-one"},
        },
        "aggregator_model": "hosted",
    }))  # fmt: skip
    return path


def test_models_lists_used_models_with_state_and_experts(registry_file, capsys):
    assert main(["models", "--experts", str(registry_file), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"local-one", "hosted"}  # "unused" has no expert
    assert rows["local-one"]["state"] == "missing" and rows["local-one"]["experts"] == ["a", "c"]
    assert rows["hosted"]["state"] == "remote (no FAKE_PROVIDER_KEY)"
    assert rows["hosted"]["experts"] == ["b", "(aggregator)"]


def test_models_table_tells_how_to_fix_missing_ones(registry_file, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "x")
    assert main(["models", "--experts", str(registry_file)]) == 0
    out = capsys.readouterr().out
    assert "remote " in out and "missing: local-one - run `expertmix setup-models`" in out


def test_a_folder_with_its_marker_is_ready(registry_file, capsys, tmp_path):
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    (folder / model_setup.MARKER).write_text(json.dumps({"recipe_version": model_setup.RECIPE_VERSION}))
    main(["models", "--experts", str(registry_file), "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["local-one"]["state"] == "ready"


def test_setup_models_accepts_registry_names_and_rejects_unknown_ones(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(model_setup, "ensure_models", lambda names, progress: seen.append(names) or {})
    assert main(["setup-models", "--only", "smollm2-135m", "gemma3-270m", "--quiet"]) == 0
    assert seen == [["smollm2-135m-instruct", "gemma3-270m"]]
    assert main(["setup-models", "--only", "llama-70b"]) == 2
    assert "unknown local model 'llama-70b'" in capsys.readouterr().err
    assert cli_models._recipe_names(["qwen-coder-0.5b"]) == ["qwen2.5-coder-0.5b-instruct"]
