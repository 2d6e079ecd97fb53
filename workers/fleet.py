"""Worker liveness and the worker's resident models.

A worker process loads its models once (:class:`WorkerRuntime.start`), then beats every
``heartbeat_s``: its id goes into ``expertmix:workers:<model>`` (a sorted set scored by the time of
the last beat) for each model it serves, and ``expertmix:worker:<id>`` holds what it serves and how
many loads and batches it did. A worker silent for ``worker_ttl_s`` is not live, so a dispatcher
can say "no live worker for model X" at once instead of waiting forever.

Example::

    >>> import fakeredis
    >>> from workers.store import FleetStore
    >>> store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    >>> live_workers(store, "smollm2-135m", ttl_s=10)
    []
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from orchestrator.config import ExpertRegistry
from orchestrator.errors import ConfigError, DispatchError
from orchestrator.core import Completion, GenerationRequest
from workers.store import FleetStore, decode_hash

log = logging.getLogger(__name__)


def beat(store: FleetStore, worker_id: str, models: list[str], info: dict[str, Any], *, ttl_s: float) -> None:
    """Record one heartbeat of ``worker_id`` for each model it serves."""
    now = time.time()
    pipe = store.r.pipeline()
    for model in models:
        pipe.zadd(store.k("workers", model), {worker_id: now})
        pipe.zremrangebyscore(store.k("workers", model), 0, now - 10 * ttl_s)  # forget long-dead workers
    payload = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()}
    pipe.hset(store.k("worker", worker_id), mapping={**payload, "beat": now, "models": json.dumps(models)})
    pipe.expire(store.k("worker", worker_id), int(10 * ttl_s) + 1)
    pipe.execute()


def leave(store: FleetStore, worker_id: str, models: list[str]) -> None:
    """Remove a worker that stops cleanly, so dispatchers stop counting on it at once."""
    pipe = store.r.pipeline()
    for model in models:
        pipe.zrem(store.k("workers", model), worker_id)
    pipe.delete(store.k("worker", worker_id))
    pipe.execute()


def live_workers(store: FleetStore, model: str, *, ttl_s: float) -> list[str]:
    """Ids of workers that beat for ``model`` within the last ``ttl_s`` seconds."""
    return list(store.r.zrangebyscore(store.k("workers", model), time.time() - ttl_s, "+inf"))


def worker_info(store: FleetStore, worker_id: str) -> dict[str, Any]:
    """What a worker last reported (models, loads, batches, pid, host, beat time)."""
    return {"id": worker_id, **decode_hash(store.r.hgetall(store.k("worker", worker_id)))}


def all_workers(store: FleetStore, models: list[str], *, ttl_s: float) -> list[dict[str, Any]]:
    """Live workers of ``models`` with their reported info, sorted by id."""
    ids = sorted({w for m in models for w in live_workers(store, m, ttl_s=ttl_s)})
    return [worker_info(store, w) for w in ids]


def require_live(store: FleetStore, models: list[str], *, ttl_s: float) -> None:
    """Raise :class:`DispatchError` naming every model that no live worker serves."""
    missing = [m for m in models if not live_workers(store, m, ttl_s=ttl_s)]
    if missing:
        raise DispatchError(
            f"no live worker for model(s) {', '.join(missing)}",
            hint=f"start one: `expertmix worker --models {','.join(missing)}` (same EXPERTMIX_REDIS_URL)",
        )


class Heartbeat:
    """A daemon thread calling :func:`beat` every ``every_s`` until :meth:`stop`."""

    def __init__(self, store: FleetStore, worker_id: str, models: list[str], info: Any, *,
                 every_s: float, ttl_s: float) -> None:
        self._args = (store, worker_id, models)
        self._info, self._every, self._ttl = info, every_s, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="expertmix-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._beat_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every * 2)
        store, worker_id, models = self._args
        try:
            leave(store, worker_id, models)
        except Exception as exc:  # Redis gone at shutdown: the entry expires on its own
            log.warning("could not deregister worker %s: %s", worker_id, exc)

    def _beat_once(self) -> None:
        store, worker_id, models = self._args
        beat(store, worker_id, models, self._info(), ttl_s=self._ttl)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._beat_once()
            except Exception as exc:  # a Redis restart must not kill the worker; it beats again later
                log.warning("heartbeat failed (will retry): %s", exc)


class WorkerRuntime:
    """The models one worker process serves, loaded once and kept resident, plus its heartbeat."""

    def __init__(self, registry: ExpertRegistry, models: list[str], *, pool: Any = None) -> None:
        unknown = [m for m in models if m not in registry.models]
        if unknown:
            raise ConfigError(
                f"worker models {', '.join(unknown)} are not in the registry {registry.source}",
                hint=f"use model names from `expertmix models`: {', '.join(sorted(registry.models))}",
            )
        if not models:
            raise ConfigError("a worker needs at least one model", hint="pass --models A,B")
        self.registry, self.models = registry, list(models)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.pool = pool
        self.batches = 0
        self.heartbeat: Heartbeat | None = None

    def start(self, store: FleetStore, *, every_s: float, ttl_s: float) -> "WorkerRuntime":
        """Load every model (warm) and start beating; only then does the worker count as live."""
        if self.pool is None:
            from workers.pool import ModelPool

            need = sum(self.registry.models[m].memory_gib for m in self.models)
            self.pool = ModelPool({m: self.registry.models[m] for m in self.models}, budget_gib=max(need, 1.0))
        for model in self.models:
            self.pool.acquire(model)
        self.heartbeat = Heartbeat(store, self.worker_id, self.models, self.info, every_s=every_s, ttl_s=ttl_s)
        self.heartbeat.start()
        log.info("worker %s serving %s", self.worker_id, ", ".join(self.models))
        return self

    def generate(self, model: str, requests: list[GenerationRequest], on_delta: Any = None) -> list[Completion]:
        """One backend call for the batch on the resident engine (``on_delta``: token streaming)."""
        if model not in self.models:
            raise DispatchError(f"worker {self.worker_id} does not serve model {model!r}",
                                hint=f"it serves {', '.join(self.models)}; check the queue routing")
        self.batches += 1
        return self.pool.generate(model, requests, on_delta)

    def info(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "loads": dict(self.pool.loads),
                "batches": self.batches}

    def stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.pool is not None:
            self.pool.release_all()
