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


def api_key_from_env(spec: ModelSpec) -> str | None:
    """The API key named by ``spec.api_key_env`` (None when the spec names none); a clear error
    when the variable is unset. Remote backends (litellm, openai) share this."""
    import os

    from orchestrator.errors import BackendError

    var = spec.api_key_env
    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise BackendError(f"model {spec.name!r}: the environment variable {var} (api_key_env) is not set",
                           hint=f"export {var}=<your API key>", transient=False)
    return key
