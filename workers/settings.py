"""Fleet settings from ``EXPERTMIX_*`` environment variables.

Every field ``foo_bar`` reads ``EXPERTMIX_FOO_BAR``; unset variables keep the default. The Redis
URL (``EXPERTMIX_REDIS_URL``) is both the Celery broker and the result/run store.

Example::

    >>> s = FleetSettings.from_env({"EXPERTMIX_MAX_BATCH": "8"})
    >>> s.max_batch, s.redis_url
    (8, 'redis://127.0.0.1:6379/0')
"""

from __future__ import annotations

import os
from typing import Mapping

from pydantic import BaseModel, Field, ValidationError

from orchestrator.errors import ConfigError

ENV_PREFIX = "EXPERTMIX_"


class FleetSettings(BaseModel):
    """How the Celery fleet connects, batches, retries and times out (all serialisable)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # coalescing: a batch task drains up to max_batch requests, waiting at most max_wait_ms for more
    max_batch: int = Field(64, ge=1)
    max_wait_ms: int = Field(100, ge=0)
    # delivery: a task not acked within visibility_timeout_s (worker lost) is redelivered
    visibility_timeout_s: int = Field(3600, ge=1)
    restore_interval_s: int = Field(10, ge=1)  # how often live workers sweep for lost tasks
    task_time_limit_s: int = Field(1800, ge=1)
    max_retries: int = Field(3, ge=0)
    retry_backoff_s: int = Field(2, ge=1)
    result_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    # liveness: workers beat every heartbeat_s; one silent for worker_ttl_s counts as gone
    heartbeat_s: float = Field(2.0, gt=0)
    worker_ttl_s: float = Field(10.0, gt=0)
    # dispatcher: give up when a model has had no live worker for no_worker_grace_s
    no_worker_grace_s: float = Field(60.0, ge=0)
    result_timeout_s: float = Field(3600.0, gt=0)
    poll_s: float = Field(0.05, gt=0)
    # a worker's child process may take this long to load its engines before Celery gives up on it
    worker_start_timeout_s: float = Field(600.0, gt=0)

    model_config = {"extra": "forbid"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "FleetSettings":
        """Read ``EXPERTMIX_<FIELD>`` variables; a malformed value raises :class:`ConfigError`."""
        env = os.environ if environ is None else environ
        raw = {name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields if ENV_PREFIX + name.upper() in env}
        try:
            return cls(**raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            var = ENV_PREFIX + str(err["loc"][0]).upper() if err.get("loc") else "EXPERTMIX_*"
            raise ConfigError(
                f"{var}={raw.get(str(err['loc'][0]) if err.get('loc') else '', '')!r}: {err['msg']}",
                hint=f"set {var} to a valid value or unset it to use the default",
            ) from None


def queue_name(model: str) -> str:
    """The Celery queue that carries batch tasks for ``model``."""
    return f"expertmix.model.{model}"


FUSED_QUEUE_MAX_MODELS = 4  # a worker listens for fused groups of up to this many of its models


def fused_queue_name(models: list[str]) -> str:
    """The Celery queue of fused groups over exactly this set of models (order does not matter)."""
    return "expertmix.fused." + "+".join(sorted(set(models)))


def fused_queues(models: list[str]) -> list[str]:
    """Every fused-group queue a worker serving ``models`` can answer: one per subset of them (up to
    :data:`FUSED_QUEUE_MAX_MODELS` models), so a group goes only to workers that hold all its models."""
    from itertools import combinations

    names = sorted(set(models))
    return [fused_queue_name(list(c)) for n in range(1, min(len(names), FUSED_QUEUE_MAX_MODELS) + 1)
            for c in combinations(names, n)]
