"""Experts and models as configuration: pydantic models loaded from a YAML registry.

A *model* is weights plus how to serve them (an in-process vLLM engine, or litellm for any hosted
provider / OpenAI-compatible server). An *expert* is a model plus a role: system prompt, sampling
defaults, a description, skills and a relative cost. Several experts may share one model; they then
share one engine.

Example::

    >>> from orchestrator.config import ExpertRegistry
    >>> reg = ExpertRegistry.default()
    >>> sorted(reg.models)[:2]
    ['gemma3-270m', 'qwen-coder-0.5b']
"""

from __future__ import annotations

import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import ConfigError, UnknownNameError
from orchestrator.core import Sampling

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_number(name: str, default: float) -> float:
    """A numeric setting from the environment, with a one-line error naming the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number", hint=f"unset it or give a number (default {default})") from None


def env_flag(name: str, default: bool) -> bool:
    """A boolean setting from the environment (1/true/yes/on are true)."""
    raw = os.environ.get(name)
    return default if raw is None else raw.strip().lower() in {"1", "true", "yes", "on"}


def expertmix_home() -> Path:
    """Where expertmix keeps converted models and run state (``EXPERTMIX_HOME``)."""
    env = os.environ.get("EXPERTMIX_HOME")
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "pyproject.toml").exists():  # a source checkout keeps everything inside it
        return REPO_ROOT
    return Path.home() / ".cache" / "expertmix"


def models_dir() -> Path:
    """Folder of converted model folders (``EXPERTMIX_MODELS_DIR``, default ``<home>/.models``)."""
    env = os.environ.get("EXPERTMIX_MODELS_DIR")
    return Path(env).expanduser() if env else expertmix_home() / ".models"


class ModelSpec(BaseModel):
    """How to serve one model.

    ``backend: vllm`` runs ``path`` (relative paths resolve under :func:`models_dir`) in-process;
    ``local`` names the PyPI-shipped GGUF recipe that ``expertmix setup-models`` converts into it.
    ``backend: litellm`` calls ``litellm_model`` (``api_base`` and the API key's *environment
    variable name* optional: secrets never live in YAML). ``backend: openai`` calls an
    OpenAI-compatible server at ``api_base`` directly, asking for ``served_model`` (default: ``name``).
    """

    name: str
    backend: str = "vllm"
    path: str | None = None
    local: str | None = None
    chat: bool = True
    litellm_model: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    served_model: str | None = None
    memory_gib: float = 2.0
    max_model_len: int = 2048
    description: str = ""

    model_config = {"extra": "forbid"}

    @model_validator(mode="after")
    def _check_backend_fields(self) -> "ModelSpec":
        if self.backend == "vllm" and not (self.path or self.local):
            raise ValueError(f"model {self.name!r}: a vllm model needs `path` or `local`")
        if self.backend == "litellm" and not self.litellm_model:
            raise ValueError(f"model {self.name!r}: a litellm model needs `litellm_model`")
        if self.backend == "openai" and not self.api_base:
            raise ValueError(f"model {self.name!r}: an openai model needs `api_base` (e.g. http://127.0.0.1:8000/v1)")
        return self

    def resolved_path(self) -> Path:
        """Absolute folder of a local model's weights."""
        raw = Path(self.path or self.local or self.name).expanduser()
        return raw if raw.is_absolute() else models_dir() / raw


class ExpertSpec(BaseModel):
    """A model plus a role."""

    name: str
    model: str
    description: str = ""
    system_prompt: str = "You are a helpful assistant."
    skills: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)
    cost: float = 1.0
    sampling: Sampling = Field(default_factory=Sampling)

    model_config = {"extra": "forbid"}

    @field_validator("cost")
    @classmethod
    def _positive_cost(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("cost must be > 0")
        return v


class ExpertRegistry(BaseModel):
    """All models and experts of a deployment, loaded from YAML (``models:`` and ``experts:``)."""

    models: dict[str, ModelSpec]
    experts: dict[str, ExpertSpec]
    aggregator_model: str | None = None
    source: str = "<memory>"

    model_config = {"extra": "forbid", "ignored_types": (cached_property,)}

    @model_validator(mode="after")
    def _check_references(self) -> "ExpertRegistry":
        for name, expert in self.experts.items():
            if expert.model not in self.models:
                raise UnknownNameError("model", expert.model, list(self.models), where=f"expert {name!r}")
        if self.aggregator_model and self.aggregator_model not in self.models:
            raise UnknownNameError("model", self.aggregator_model, list(self.models), where="aggregator_model")
        if not self.experts:
            raise ValueError("the registry has no experts")
        return self

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> "ExpertRegistry":
        if not isinstance(data, dict) or "experts" not in data or "models" not in data:
            raise ConfigError(f"{source}: an expert registry needs top-level `models:` and `experts:` mappings")
        try:
            models = {n: ModelSpec(name=n, **(v or {})) for n, v in data["models"].items()}
            experts = {n: ExpertSpec(name=n, **(v or {})) for n, v in data["experts"].items()}
            return cls(models=models, experts=experts, aggregator_model=data.get("aggregator_model"), source=source)
        except ValidationError as exc:
            raise ConfigError(f"{source}: invalid registry: {_first_error(exc)}") from None
        except (TypeError, AttributeError) as exc:
            raise ConfigError(f"{source}: invalid registry: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExpertRegistry":
        return cls.from_dict(load_yaml(path), source=str(path))

    @classmethod
    def default(cls) -> "ExpertRegistry":
        """The built-in registry: experts over the three small local models."""
        ref = resources.files("orchestrator.builtin") / "experts.yaml"
        return cls.from_dict(yaml.safe_load(ref.read_text()), source="builtin:experts.yaml")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "models": {n: m.model_dump(exclude={"name"}, exclude_defaults=True) for n, m in self.models.items()},
            "experts": {n: e.model_dump(exclude={"name"}, exclude_defaults=True) for n, e in self.experts.items()},
        }
        if self.aggregator_model:
            out["aggregator_model"] = self.aggregator_model
        return out

    # ---- lookups ------------------------------------------------------------------------
    def expert(self, name: str) -> ExpertSpec:
        try:
            return self.experts[name]
        except KeyError:
            raise UnknownNameError("expert", name, list(self.experts), where=self.source) from None

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownNameError("model", name, list(self.models), where=self.source) from None

    def model_of(self, expert: str) -> ModelSpec:
        return self.model(self.expert(expert).model)

    def used_models(self) -> list[str]:
        """Model names that at least one expert (or the aggregator) uses, sorted."""
        names = {e.model for e in self.experts.values()}
        if self.aggregator_model:
            names.add(self.aggregator_model)
        return sorted(names)


def load_yaml(path: str | Path) -> Any:
    """Read YAML with a one-line error naming the file and line on failure."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file", hint="check the path")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a YAML file", hint="pass the path of a .yaml file")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                          "is it a binary file?", hint="pass a YAML text file saved as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}:{where}: malformed YAML: {problem}", hint="fix the YAML syntax there") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))
