"""Dispatchers: where grouped expert calls run.

The executor hands a dispatcher ``{model: [requests]}``; the dispatcher runs each model's requests
as ONE batch (Symbolic-MoE's batched inference: every model loaded once, one call per model) and
returns completions keyed by request key. :class:`LocalDispatcher` runs in-process on a
:class:`~workers.pool.ModelPool`; the Celery dispatcher (``workers.celery_dispatch``) sends each
group to that model's queue.
"""

from __future__ import annotations

import logging
from tqdm.auto import tqdm

from orchestrator.core import Completion, Dispatcher, GenerationRequest, group_by_model
from orchestrator.errors import UnknownNameError
from orchestrator.streaming import DeltaCallback
from workers.pool import ModelPool

log = logging.getLogger(__name__)


class LocalDispatcher:
    """In-process: each model's group is one ``generate`` call on its pooled engine.

    Models that are already resident go first, so a run never reloads what it still holds.
    """

    streams = True  # takes on_delta (orchestrator.streaming)

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    def run_batches(
        self, groups: dict[str, list[GenerationRequest]], *, label: str = "experts", progress: bool = False,
        on_delta: DeltaCallback | None = None,
    ) -> dict[str, Completion]:
        resident = set(self.pool.resident())
        order = sorted(groups, key=lambda m: (m not in resident, list(groups).index(m)))
        out: dict[str, Completion] = {}
        if not progress:  # no bar at all: even a disabled tqdm costs ~0.1 ms a call (the gateway's hot path)
            for model in order:
                for comp in self.pool.generate(model, groups[model], on_delta):
                    out[comp.key] = comp
            return out
        with tqdm(total=sum(len(g) for g in groups.values()), desc=label, unit="prompt") as bar:
            for model in order:
                bar.set_postfix_str(model)
                for comp in self.pool.generate(model, groups[model], on_delta):
                    out[comp.key] = comp
                bar.update(len(groups[model]))
        return out

    def run_fused(self, jobs: list, *, label: str = "fuse", progress: bool = False) -> list:
        """Fused groups (``workers.fusion.group.FusedJob``) run here: this process holds all
        their models (loaded by transformers, apart from the vLLM pool)."""
        from workers.fusion.group import run_fused_jobs

        return run_fused_jobs(jobs, self.pool._spec)

    def model_loads(self) -> dict[str, int]:
        return dict(self.pool.loads)

    def close(self) -> None:
        self.pool.release_all()


EXECUTORS = ("local", "celery")


def make_dispatcher(executor: str, registry, *, pool: ModelPool | None = None) -> Dispatcher:
    """The dispatcher for ``executor``: ``local`` (in-process pool) or ``celery`` (worker fleet)."""
    if executor == "local":
        return LocalDispatcher(pool or ModelPool(registry.models))
    if executor == "celery":
        from workers.celery_dispatch import CeleryDispatcher

        return CeleryDispatcher.from_env(registry)
    raise UnknownNameError("executor", executor, list(EXECUTORS))


__all__ = ["Dispatcher", "LocalDispatcher", "group_by_model", "make_dispatcher"]
