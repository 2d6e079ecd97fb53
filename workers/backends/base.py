"""The backend contract: generate a batch of requests for ONE model.

A backend owns one model's engine or client. ``load()`` does the expensive work (never the
constructor), ``generate()`` runs a whole batch in one call, ``unload()`` really frees memory.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from orchestrator.config import ModelSpec
from orchestrator.core import BACKENDS, SCORED, Completion, GenerationRequest
from orchestrator.errors import BackendError


@runtime_checkable
class Backend(Protocol):
    """Serves one model. Construct cheaply; ``load`` before ``generate``; ``unload`` to free."""

    spec: ModelSpec
    # True when ``generate`` answers scoring requests (``continuations`` set) with log-likelihoods;
    # a plug-in backend without the attribute counts as False (``orchestrator.core.can_score``).
    can_score: bool

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


def with_scoring(
    requests: list[GenerationRequest],
    generate: Callable[[list[GenerationRequest]], list[Completion]],
    score: Callable[[list[tuple[str, str]]], list[float]],
    model: str,
) -> list[Completion]:
    """Run a mixed batch: generation requests through ``generate`` (one call), scoring requests
    (``continuations`` set) through ``score`` (one call over every (prompt, continuation) pair);
    completions come back in request order."""
    scoring = [r for r in requests if r.continuations is not None]
    if not scoring:
        return generate(requests)
    for r in scoring:
        if not r.prompt or not r.continuations:
            raise BackendError(f"scoring request {r.key!r} needs a prompt and at least one continuation")
    gen = iter(generate([r for r in requests if r.continuations is None]) if len(scoring) < len(requests) else [])
    sums = iter(score([(r.prompt, c) for r in scoring for c in r.continuations]))  # type: ignore[union-attr]
    out = []
    for r in requests:
        if r.continuations is None:
            out.append(next(gen))
        else:
            out.append(Completion(key=r.key, model=model, text="", finish_reason=SCORED,
                                  scores=[next(sums) for _ in r.continuations]))
    return out


def refuse_scoring(requests: list[GenerationRequest], model: str) -> None:
    """Hosted APIs return no prompt log-probabilities: say so instead of generating."""
    if any(r.continuations is not None for r in requests):
        raise BackendError(f"model {model!r}: this backend cannot score continuations (no prompt log-probabilities)",
                           hint="score with a local vllm model, or use a judge (select method: judge)")
