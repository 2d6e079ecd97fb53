"""Start a fleet worker: consume the queues of some models, with their engines loaded once.

It also listens on the fused-group queue of every subset of its models
(:func:`workers.settings.fused_queues`): a fused group (token or latent fusion) runs only on a
worker that holds all the group's models, loaded by transformers in the child that runs it.

The worker runs Celery's prefork pool: each child process loads the worker's models when it
starts (so engines never cross a fork), beats its liveness to Redis, and serves every batch on
those resident engines. ``concurrency`` is the number of such children (each holds its own
engines: on a GPU, keep 1 per device). A child killed by a time limit is replaced by a fresh one,
which loads the models again (counted in ``loads``).

Example (a shell)::

    EXPERTMIX_REDIS_URL=redis://127.0.0.1:6379/0 expertmix worker --models smollm2-135m
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from orchestrator.config import ExpertRegistry
from orchestrator.errors import DispatchError, ModelNotFoundError
from workers.fleet import WorkerRuntime
from workers.settings import FleetSettings, fused_queues, queue_name
from workers.store import FleetStore

log = logging.getLogger(__name__)

_plan: dict[str, Any] = {}  # set in the parent before forking; children read it
_runtime: WorkerRuntime | None = None


def current_runtime() -> WorkerRuntime:
    """The runtime of this worker child (raises if this process is not a started worker)."""
    if _runtime is None:
        raise DispatchError("this process is not a started expertmix worker",
                            hint="run batch tasks through `expertmix worker --models ...`")
    return _runtime


def current_store() -> FleetStore:
    return _plan["store"]


def current_settings() -> FleetSettings:
    return _plan["settings"]


def current_registry() -> ExpertRegistry:
    return _plan["registry"]


def current_models() -> list[str]:
    return _plan["models"]


def check_models(registry: ExpertRegistry, models: list[str]) -> None:
    """Fail before forking when a local model's folder is missing (a child would crash-loop)."""
    WorkerRuntime(registry, models)  # validates names
    for name in models:
        spec = registry.models[name]
        if spec.backend == "vllm" and not spec.resolved_path().exists():
            raise ModelNotFoundError(
                f"model {name!r}: folder {spec.resolved_path()} does not exist",
                hint="run `expertmix setup-models` (or set EXPERTMIX_MODELS_DIR)",
            )


def run_worker(
    models: list[str],
    *,
    registry: ExpertRegistry | None = None,
    concurrency: int = 1,
    settings: FleetSettings | None = None,
    loglevel: str = "INFO",
) -> int:
    """Run a worker in the foreground until it is stopped; returns its exit code."""
    from celery.signals import worker_process_init, worker_process_shutdown

    from workers.celery_app import configure

    settings = settings or FleetSettings.from_env()
    registry = registry or ExpertRegistry.default()
    check_models(registry, models)
    store = FleetStore.from_url(settings.redis_url, ttl_s=settings.result_ttl_s)
    store.ping(settings.redis_url)
    _plan.update(models=list(models), registry=registry, settings=settings, store=store)
    app = configure(settings)
    worker_process_init.connect(_start_child, weak=False)
    worker_process_shutdown.connect(_stop_child, weak=False)
    worker = app.Worker(
        queues=[queue_name(m) for m in models] + fused_queues(models),
        concurrency=concurrency,
        pool="prefork",
        loglevel=loglevel,
        hostname=f"expertmix-{os.getpid()}@{socket.gethostname()}",
    )
    worker.start()
    return int(worker.exitcode or 0)


def _start_child(**_: Any) -> None:
    global _runtime
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings: FleetSettings = _plan["settings"]
    # a fresh connection: the parent's sockets must not be shared across the fork
    _plan["store"] = FleetStore.from_url(settings.redis_url, ttl_s=settings.result_ttl_s)
    runtime = WorkerRuntime(_plan["registry"], _plan["models"])
    _runtime = runtime.start(_plan["store"], every_s=settings.heartbeat_s, ttl_s=settings.worker_ttl_s)


def _stop_child(**_: Any) -> None:
    if _runtime is not None:
        _runtime.stop()
