"""Expert registry: defaults, YAML errors, references, serialisation."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.config import ExpertRegistry
from orchestrator.errors import ConfigError, UnknownNameError

pytestmark = pytest.mark.unit


def test_default_registry_has_five_plus_experts_over_three_models():
    reg = ExpertRegistry.default()
    assert len(reg.experts) >= 5
    assert set(reg.used_models()) == {"smollm2-135m", "qwen-coder-0.5b", "gemma3-270m"}
    per_model = {}
    for e in reg.experts.values():
        per_model.setdefault(e.model, []).append(e.name)
    assert any(len(v) > 1 for v in per_model.values()), "experts should share models"
    assert reg.models["gemma3-270m"].chat is False


def test_round_trip():
    reg = ExpertRegistry.default()
    again = ExpertRegistry.from_dict(yaml.safe_load(yaml.safe_dump(reg.to_dict())))
    assert again.to_dict() == reg.to_dict()


def test_unknown_model_reference_names_expert():
    with pytest.raises(UnknownNameError, match=r"unknown model 'ghost' in expert 'x'.*use one of: m"):
        ExpertRegistry.from_dict({"models": {"m": {"local": "m"}}, "experts": {"x": {"model": "ghost"}}})


@pytest.mark.parametrize("data,match", [
    ({"experts": {}}, "needs top-level `models:` and `experts:`"),
    ({"models": {"m": {"backend": "litellm"}}, "experts": {"x": {"model": "m"}}}, "needs `litellm_model`"),
    ({"models": {"m": {"local": "m"}}, "experts": {"x": {"model": "m", "cost": -1}}}, "cost"),
    ({"models": {"m": {"local": "m", "api_key": "sk-123"}}, "experts": {"x": {"model": "m"}}}, "api_key"),
])
def test_bad_registries(data, match):
    with pytest.raises(ConfigError, match=match):
        ExpertRegistry.from_dict(data)


def test_malformed_yaml(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("models: {a: [}\n")
    with pytest.raises(ConfigError, match=r"r.yaml: line 1, column \d+: malformed YAML"):
        ExpertRegistry.from_yaml(f)


def test_litellm_key_is_referenced_by_env_name_only():
    reg = ExpertRegistry.from_dict({"models": {"gpt": {"backend": "litellm", "litellm_model": "openai/gpt-4o-mini",
                                                       "api_key_env": "OPENAI_API_KEY"}},
                                    "experts": {"x": {"model": "gpt"}}})
    assert reg.to_dict()["models"]["gpt"]["api_key_env"] == "OPENAI_API_KEY"
