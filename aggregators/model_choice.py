"""Which model an LLM aggregator runs on: pinned in the YAML, else Symbolic-MoE's validated choice.

Order: the node's ``model`` param; else ``aggregator.json`` in the skill profiles folder (written by
``expertmix profile``: the model that best fused 1 correct + 2 wrong validation answers), when it
names a model of the registry; else the registry's ``aggregator_model``; else its first model.

Example::

    >>> from orchestrator.config import ExpertRegistry
    >>> aggregator_model(None, ExpertRegistry.default(), profiles="/nonexistent")[1]
    'registry aggregator_model'
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.config import ExpertRegistry
from orchestrator.errors import ConfigError


def default_profiles_dir() -> Path:
    import skills

    return Path(skills.__file__).resolve().parent / "data" / "default_profiles"


def aggregator_model(pinned: str | None, registry: ExpertRegistry, *, profiles: str | Path | None = None) -> tuple[str, str]:
    """``(model name, where the choice came from)``."""
    if pinned:
        registry.model(pinned)
        return pinned, "pinned in the pipeline"
    path = Path(profiles or default_profiles_dir()) / "aggregator.json"
    if path.is_file():
        try:
            chosen = json.loads(path.read_text()).get("model")
        except (json.JSONDecodeError, AttributeError):
            raise ConfigError(f"{path}: not a valid aggregator choice", hint="rerun `expertmix profile` or delete it") from None
        if chosen in registry.models:
            return chosen, f"validated choice in {path.name}"
    if registry.aggregator_model:
        return registry.aggregator_model, "registry aggregator_model"
    return registry.used_models()[0], "first model of the registry"
