"""The backend contract: generate a batch of requests for ONE model.

A backend owns one model's engine or client. ``load()`` does the expensive work (never the
constructor), ``generate()`` runs a whole batch in one call, ``unload()`` really frees memory.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from orchestrator.config import ModelSpec
from orchestrator.core import BACKENDS, Completion, GenerationRequest


@runtime_checkable
class Backend(Protocol):
    """Serves one model. Construct cheaply; ``load`` before ``generate``; ``unload`` to free."""

    spec: ModelSpec

    def load(self) -> None: ...

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Completions in the order of ``requests``, each carrying its request's ``key``."""
        ...

    def unload(self) -> None: ...


def make_backend(spec: ModelSpec) -> Backend:
    """Instantiate (without loading) the backend ``spec.backend`` names (built-ins and plug-ins
    register through the ``expertmix.backends`` entry point group)."""
    cls = BACKENDS.get(spec.backend, where=f"model {spec.name!r}")
    return cls(spec)
