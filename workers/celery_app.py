"""The Celery app: Redis as broker and result backend, one queue per model.

Creating the app connects to nothing; :func:`configure` applies :class:`FleetSettings` (from
``EXPERTMIX_*``) before a worker starts or a dispatcher sends. Delivery policy lives here and on
the task: late acknowledgement (a batch is acked only after its results are stored), a task whose
worker process dies is rejected and requeued, one message reserved per worker process, and a task
unacknowledged for ``visibility_timeout_s`` (its whole worker was lost) is redelivered by a live
worker's periodic sweep. ``visibility_timeout_s`` must exceed the longest batch, or a slow batch is
redelivered while it still runs (harmless for answers, which are stored first-writer-wins, but
wasted work).

Example::

    >>> from workers.settings import FleetSettings
    >>> configure(FleetSettings()).conf.task_acks_late
    True
"""

from __future__ import annotations

import sys

from celery import Celery

from workers.settings import FleetSettings

app = Celery("expertmix", include=["workers.tasks"])

TASK_NAME = "expertmix.generate_batch"
FUSED_TASK_NAME = "expertmix.run_fused"


def configure(settings: FleetSettings) -> Celery:
    """Apply ``settings`` to the shared app and return it."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
        # the sweep's lock: one left behind by a worker killed mid-sweep (or a Redis restart
        # mid-sweep) would stall redelivery for kombu's default 300 s; a sweep takes milliseconds
        "unacked_mutex_expire": max(30, 3 * settings.restore_interval_s),
    }
    if app.conf.broker_url and app.conf.broker_url != settings.redis_url:
        _drop_connections()  # pools made for another broker would keep sending there
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=settings.redis_url,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        result_expires=settings.result_ttl_s,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_store_errors_even_if_ignored=True,
        task_default_queue="expertmix.default",
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(1, settings.task_time_limit_s - 30),
        worker_proc_alive_timeout=settings.worker_start_timeout_s,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_annotations={TASK_NAME: task_policy(settings), FUSED_TASK_NAME: task_policy(settings)},
    )
    tasks = sys.modules.get("workers.tasks")
    if tasks is not None:  # annotations apply once, when the task is bound: update a bound task too
        for name, value in task_policy(settings).items():
            setattr(tasks.generate_batch, name, value)
            setattr(tasks.run_fused, name, value)
    app.expertmix_settings = settings
    return app


def task_policy(settings: FleetSettings) -> dict[str, int]:
    """Retry and time-limit attributes of the batch task under ``settings``."""
    return {
        "max_retries": settings.max_retries,
        "time_limit": settings.task_time_limit_s,
        "soft_time_limit": max(1, settings.task_time_limit_s - 30),
    }


def _drop_connections() -> None:
    # Celery caches its result backend and connection pools per app; one process that talks to
    # two Redis servers in turn (tests, benchmarks) must drop them or keep using the first one.
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    amqp = app.__dict__.get("amqp")  # only if it was ever built
    if amqp is not None:
        amqp._producer_pool = None


def settings_of(celery_app: Celery) -> FleetSettings:
    """The settings :func:`configure` applied (defaults from the environment if never configured)."""
    found = getattr(celery_app, "expertmix_settings", None)
    return found if found is not None else FleetSettings.from_env()
