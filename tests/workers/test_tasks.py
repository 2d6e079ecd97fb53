"""Unit tests of the Celery task adapter, run eagerly on fakes: retry policy and failed-for-good records."""

from __future__ import annotations

import fakeredis
import pytest

from orchestrator.config import ExpertRegistry, ModelSpec
from orchestrator.errors import BackendError
from orchestrator.core import GenerationRequest
from workers import jobs, worker
from workers.backends.fake import FakeBackend
from workers.fleet import WorkerRuntime
from workers.pool import ModelPool
from workers.settings import FleetSettings
from workers.store import FleetStore

pytestmark = pytest.mark.unit

MODEL = "smollm2-135m"


@pytest.fixture
def fake_worker(monkeypatch):
    """This process as a started worker: FakeBackend engine, fakeredis store (tasks run with ``apply``).

    Celery's result backend is in memory, so failed tasks' records never reach a real Redis.
    """
    from workers import celery_app
    from workers.celery_app import configure

    store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    settings = FleetSettings(max_retries=2, max_wait_ms=0)
    backend = FakeBackend(ModelSpec(name=MODEL, backend="fake", path=MODEL))
    pool = ModelPool({MODEL: backend.spec}, budget_gib=4, backend_factory=lambda s: backend)
    runtime = WorkerRuntime(ExpertRegistry.default(), [MODEL], pool=pool)
    configure(settings)
    celery_app.app.conf.result_backend = "cache+memory://"
    celery_app._drop_connections()
    monkeypatch.setattr(worker, "_runtime", runtime)
    monkeypatch.setitem(worker._plan, "store", store)
    monkeypatch.setitem(worker._plan, "settings", settings)
    yield store, backend
    celery_app.app.conf.result_backend = settings.redis_url
    celery_app._drop_connections()


def _enqueue(store, n: int) -> None:
    reqs = [GenerationRequest(key=f"r/q{i}/e", model=MODEL, prompt=f"q{i}") for i in range(n)]
    store.record_requests(reqs)
    store.enqueue(MODEL, reqs)


def test_a_batch_task_stores_answers_and_returns_its_summary(fake_worker):
    from workers.tasks import generate_batch

    store, backend = fake_worker
    _enqueue(store, 3)
    summary = generate_batch.apply(kwargs={"model": MODEL}).get()
    assert summary["size"] == 3 and summary["written"] == 3
    assert backend.count("generate") == 1 and jobs.run_summary(store, "r")["status"] == "done"


def test_transient_errors_retry_then_fail_for_good_and_the_error_propagates(fake_worker):
    from workers.tasks import generate_batch

    store, backend = fake_worker
    backend.fail_on = "q1"  # FakeBackend raises a transient BackendError
    _enqueue(store, 2)
    result = generate_batch.apply(kwargs={"model": MODEL})
    assert result.failed() and isinstance(result.result, BackendError)  # not swallowed
    assert backend.count("generate") == 3  # first try + max_retries=2, same claimed batch each time
    assert set(store.errors("r")) == {"r/q0/e", "r/q1/e"}
    assert jobs.failed_batches(store)[0]["keys"] == ["r/q0/e", "r/q1/e"]


def test_non_transient_errors_fail_at_once(fake_worker, monkeypatch):
    from workers.tasks import generate_batch

    store, backend = fake_worker

    def broken(requests):
        raise BackendError("engine crashed", transient=False)

    monkeypatch.setattr(backend, "generate", broken)
    _enqueue(store, 1)
    assert generate_batch.apply(kwargs={"model": MODEL}).failed()
    assert jobs.run_summary(store, "r")["status"] == "failed"
