"""Unit tests of fleet settings and the Celery app configuration."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from workers.settings import FleetSettings, queue_name

pytestmark = pytest.mark.unit


def test_defaults_and_env_override():
    assert FleetSettings.from_env({}).redis_url == "redis://127.0.0.1:6379/0"
    s = FleetSettings.from_env({"EXPERTMIX_REDIS_URL": "redis://h:1/2", "EXPERTMIX_MAX_WAIT_MS": "5"})
    assert (s.redis_url, s.max_wait_ms) == ("redis://h:1/2", 5)
    assert FleetSettings.model_validate(s.model_dump()) == s


def test_bad_value_names_the_variable():
    with pytest.raises(ConfigError, match="EXPERTMIX_MAX_BATCH"):
        FleetSettings.from_env({"EXPERTMIX_MAX_BATCH": "zero"})
    with pytest.raises(ConfigError, match="EXPERTMIX_MAX_BATCH"):
        FleetSettings.from_env({"EXPERTMIX_MAX_BATCH": "0"})


def test_queue_per_model():
    assert queue_name("smollm2-135m") == "expertmix.model.smollm2-135m"


def test_celery_delivery_policy():
    from workers.celery_app import TASK_NAME, configure

    app = configure(FleetSettings(visibility_timeout_s=42, task_time_limit_s=100, max_retries=5))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 42
    assert conf.broker_transport_options["unacked_mutex_expire"] == 30
    assert conf.task_annotations[TASK_NAME] == {"max_retries": 5, "time_limit": 100, "soft_time_limit": 70}
    from workers.tasks import generate_batch

    assert generate_batch.name == TASK_NAME and generate_batch.acks_late and generate_batch.ignore_result
    assert conf.task_store_errors_even_if_ignored


def test_reconfiguring_for_another_redis_drops_cached_connections():
    from workers.celery_app import configure

    app = configure(FleetSettings(redis_url="redis://127.0.0.1:1/0"))
    first = app.backend
    app = configure(FleetSettings(redis_url="redis://127.0.0.1:2/0"))
    assert app.backend is not first and app.conf.broker_url == "redis://127.0.0.1:2/0"


def test_policy_follows_the_latest_settings():
    from workers.celery_app import configure
    from workers.tasks import generate_batch

    configure(FleetSettings(max_retries=7, task_time_limit_s=300))
    assert (generate_batch.max_retries, generate_batch.time_limit, generate_batch.soft_time_limit) == (7, 300, 270)
