"""Celery tasks: thin adapters over :mod:`workers.batching`.

``expertmix.generate_batch(model)`` runs on a worker that serves ``model`` (it is sent to the
queue ``expertmix.model.<model>``). ``expertmix.run_fused(job)`` answers one fused group on a
worker that serves all its models (queue ``expertmix.fused.<models>``). Policy, declared here: acknowledged late and requeued if its
worker process dies; transient backend errors retry with exponential backoff up to
``max_retries`` (keeping the batch's claim, so the retry runs the same requests); anything else,
or a retry budget spent, fails the batch for good: :meth:`BatchTask.on_failure` records the
error on each request and in the failed list, and the exception still propagates to Celery.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from orchestrator.errors import BackendError
from workers import batching
from workers.celery_app import FUSED_TASK_NAME, TASK_NAME, app
from workers.settings import FleetSettings, fused_queue_name, queue_name
from workers.worker import current_models, current_registry, current_runtime, current_settings, current_store

_DEFAULTS = FleetSettings()


class BatchTask(Task):
    """Records batches that fail for good or wait for a retry."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        model = kwargs.get("model") or (args[0] if args else "?")
        worker = current_runtime().worker_id if _started() else ""
        batching.fail_batch(current_store(), model, task_id, f"{type(exc).__name__}: {exc}", worker=worker)

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        batching.note_retry(current_store(), task_id, f"{type(exc).__name__}: {exc}")


@app.task(
    name=TASK_NAME,
    bind=True,
    base=BatchTask,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,  # answers live in the run store; failures still reach the result backend
    max_retries=_DEFAULTS.max_retries,
    time_limit=_DEFAULTS.task_time_limit_s,
    soft_time_limit=_DEFAULTS.task_time_limit_s - 30,
)
def generate_batch(self: Task, model: str) -> dict:
    """Claim a coalesced batch of ``model``'s pending requests, generate it once, store the answers."""
    settings = current_settings()
    runtime = current_runtime()
    try:
        summary = batching.run_batch(
            current_store(), runtime.generate, model, self.request.id,
            max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000, worker=runtime.worker_id,
        )
    except BackendError as exc:
        if not exc.transient:
            raise
        raise self.retry(exc=exc, countdown=min(300, settings.retry_backoff_s * 2 ** self.request.retries))
    if summary.more_pending:  # more requests than this batch could take: make sure a task drains them
        send_batch_task(model)
    return summary.as_dict()


def send_batch_task(model: str) -> str:
    """Enqueue one batch task on ``model``'s queue; returns its id (also the batch id)."""
    return generate_batch.apply_async(kwargs={"model": model}, queue=queue_name(model)).id


@app.task(
    name=FUSED_TASK_NAME,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,  # the result lives in the run store, like batch answers
    time_limit=_DEFAULTS.task_time_limit_s,
    soft_time_limit=_DEFAULTS.task_time_limit_s - 30,
)
def run_fused(job: dict) -> dict:
    """Answer one fused group job (``workers.fusion.group.FusedJob`` as a dict) in this worker child,
    which holds all the group's models; store the result, or the error, under the job's key."""
    from workers.fusion.group import FusedJob, run_fused_jobs

    fused = FusedJob.model_validate(job)
    store = current_store()
    try:
        missing = [m for m in fused.models if m not in current_models()]
        if missing:  # the queue routing rules this out; a hand-sent task must not load other models
            raise BackendError(f"this worker does not serve {', '.join(missing)} (it serves "
                               f"{', '.join(current_models())})")
        [result] = run_fused_jobs([fused], current_registry().model)
    except Exception as exc:
        store.store_fused_error(fused.key, f"{type(exc).__name__}: {exc}")
        raise
    store.store_fused(result.key, result.model_dump_json())
    return {"key": result.key}


def send_fused_task(job: Any) -> str:
    """Enqueue one fused job on the queue of its group's models; returns the task id."""
    return run_fused.apply_async(kwargs={"job": job.model_dump()}, queue=fused_queue_name(job.models)).id


def _started() -> bool:
    from workers import worker

    return worker._runtime is not None
