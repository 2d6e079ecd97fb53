"""The backend contract: generate a batch of requests for ONE model.

A backend owns one model's engine or client. ``load()`` does the expensive work (never the
constructor), ``generate()`` runs a whole batch in one call, ``unload()`` really frees memory.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from orchestrator.config import ModelSpec
from orchestrator.registry import Registry
from orchestrator.types import Completion, GenerationRequest


@runtime_checkable
class Backend(Protocol):
    """Serves one model. Construct cheaply; ``load`` before ``generate``; ``unload`` to free."""

    spec: ModelSpec

    def load(self) -> None: ...

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Completions in the order of ``requests``, each carrying its request's ``key``."""
        ...

    def unload(self) -> None: ...


BACKENDS: Registry[type] = Registry("backend", "expertmix.backends")


def make_backend(spec: ModelSpec) -> Backend:
    """Instantiate (without loading) the backend ``spec.backend`` names."""
    _register_builtin()
    cls = BACKENDS.get(spec.backend, where=f"model {spec.name!r}")
    return cls(spec)


def _register_builtin() -> None:
    # Imported here, not at module import: the vllm backend module itself imports vllm lazily,
    # but keeping registration lazy keeps `import workers` cheap.
    from workers.backends import litellm_backend, vllm_backend  # noqa: F401
