"""Per-request sampling settings (an OpenAI request's ``temperature``, ``top_p``, ``stop``,
``seed``, ``max_tokens``) applied to every model call of one run.

Every generation of a run goes through its dispatcher, so the override wraps the dispatcher:
expert answers and the aggregator's own generation alike get the request's settings, and
``max_tokens`` is a cap (it only lowers a call's own limit), so it bounds the final answer and
every expert answer. Nodes and aggregators need to know nothing about it.

Example::

    override = SamplingOverride(temperature=0.7, max_tokens=64, seed=3)
    results = orch.run(["What is 6 * 7?"], sampling=override)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.core import Completion, GenerationRequest, Sampling


class SamplingOverride(BaseModel):
    """Settings a request imposes on every model call of its run; ``None`` keeps the node's own."""

    model_config = {"extra": "forbid"}
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = Field(default=None, max_length=4)
    max_tokens: int | None = Field(default=None, ge=1)

    def apply(self, sampling: Sampling) -> Sampling:
        """``sampling`` with this override's settings (``max_tokens`` as a cap)."""
        update: dict[str, Any] = {k: v for k, v in (("temperature", self.temperature), ("top_p", self.top_p),
                                                     ("seed", self.seed), ("stop", self.stop)) if v is not None}
        if self.max_tokens is not None:
            update["max_tokens"] = min(sampling.max_tokens, self.max_tokens)
        return sampling.model_copy(update=update) if update else sampling

    def key(self) -> str:
        """Equal for overrides that may share one run."""
        return self.model_dump_json(exclude_none=True)


class OverridingDispatcher:
    """``inner`` with ``override`` applied to every request it is given (other attributes pass through)."""

    def __init__(self, inner: Any, override: SamplingOverride) -> None:
        self.inner, self.override = inner, override

    def run_batches(self, groups: dict[str, list[GenerationRequest]], **kw: Any) -> dict[str, Completion]:
        changed = {model: [r.model_copy(update={"sampling": self.override.apply(r.sampling)}) for r in reqs]
                   for model, reqs in groups.items()}
        return self.inner.run_batches(changed, **kw)

    def model_loads(self) -> dict[str, int]:
        return self.inner.model_loads()

    def close(self) -> None:  # the orchestrator owns the dispatcher, not one run
        pass

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)
