"""Model pool: which engines are resident, under a memory budget; load, evict, count loads.

Every model is loaded at most once per run as long as the budget holds it; when a new model does
not fit, the least recently used resident engines are released first (really freed: the backend's
``unload`` drops the engine and collects garbage). ``loads`` counts every load, per model, which is
what the trace reports as ``model_loads``.

Example::

    >>> from orchestrator.config import ExpertRegistry
    >>> pool = ModelPool(ExpertRegistry.default().models, budget_gib=8)
    >>> pool.resident()
    []
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from typing import Callable, Mapping

from orchestrator.config import ModelSpec, env_number
from orchestrator.errors import UnknownNameError
from orchestrator.core import Completion, GenerationRequest
from orchestrator.streaming import DeltaCallback
from workers.backends.base import Backend, make_backend

log = logging.getLogger(__name__)


def default_budget_gib() -> float:
    """``EXPERTMIX_POOL_GIB`` or 12 GiB (three small engines fit; a 24 GiB machine keeps headroom)."""
    return env_number("EXPERTMIX_POOL_GIB", 12.0)


class ModelPool:
    """Resident backends under a memory budget (GiB, from each model's ``memory_gib``)."""

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        *,
        budget_gib: float | None = None,
        backend_factory: Callable[[ModelSpec], Backend] = make_backend,
    ) -> None:
        self.models = dict(models)
        self.budget_gib = default_budget_gib() if budget_gib is None else budget_gib
        self._factory = backend_factory
        self._resident: OrderedDict[str, Backend] = OrderedDict()
        self._lock = threading.RLock()
        self.loads: Counter[str] = Counter()
        self.batch_sizes: Counter[tuple[str, int]] = Counter()  # (model, prompts in one batch) -> batches
        self.load_seconds: Counter[str] = Counter()

    # ---- lifecycle -----------------------------------------------------------------------
    def acquire(self, model: str) -> Backend:
        """The loaded backend for ``model``, loading (and evicting others) if needed."""
        with self._lock:
            if model in self._resident:
                self._resident.move_to_end(model)
                return self._resident[model]
            spec = self._spec(model)
            self._make_room(spec.memory_gib)
            backend = self._factory(spec)
            t0 = time.perf_counter()
            backend.load()
            self.load_seconds[model] += time.perf_counter() - t0
            self.loads[model] += 1
            self._resident[model] = backend
            log.info("loaded %s in %.1fs (loads: %d)", model, time.perf_counter() - t0, self.loads[model])
            return backend

    def release(self, model: str) -> None:
        """Unload ``model`` if resident and free its memory."""
        with self._lock:
            backend = self._resident.pop(model, None)
            if backend is not None:
                backend.unload()
                log.info("released %s", model)

    def release_all(self) -> None:
        with self._lock:
            for name in list(self._resident):
                self.release(name)

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._resident)

    def used_gib(self) -> float:
        with self._lock:
            return sum(self.models[m].memory_gib for m in self._resident)

    # ---- work ----------------------------------------------------------------------------
    def generate(self, model: str, requests: list[GenerationRequest],
                 on_delta: DeltaCallback | None = None) -> list[Completion]:
        """One batch for one model (the model is loaded once and kept while the budget allows).

        With ``on_delta``, a backend that can stream (``generate_stream``) reports every request's
        text deltas as they are generated; other backends answer the batch whole.
        """
        if not requests:
            return []
        with self._lock:  # one batch per engine at a time; vLLM's offline engine is not re-entrant
            backend = self.acquire(model)
            self.batch_sizes[(model, len(requests))] += 1
            stream = getattr(backend, "generate_stream", None) if on_delta is not None else None
            return stream(requests, on_delta) if stream is not None else backend.generate(requests)

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_all()

    # ---- internals -----------------------------------------------------------------------
    def _spec(self, model: str) -> ModelSpec:
        try:
            return self.models[model]
        except KeyError:
            raise UnknownNameError("model", model, list(self.models)) from None

    def _make_room(self, need_gib: float) -> None:
        while self._resident and self.used_gib() + need_gib > self.budget_gib:
            oldest = next(iter(self._resident))
            log.info("evicting %s to fit %.1f GiB (budget %.1f GiB)", oldest, need_gib, self.budget_gib)
            self.release(oldest)
