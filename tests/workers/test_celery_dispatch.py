"""Unit tests of the Celery dispatcher on fakes: liveness, resume, failures, the batch-task count,
token streaming and the cancellation of streamed requests whose client hung up.

The "worker" here is a FakeWorker thread that runs the real batching code on a FakeBackend.
"""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest

from orchestrator.config import ExpertRegistry, ModelSpec
from orchestrator.errors import DispatchError, UnknownNameError
from orchestrator.core import Completion, GenerationRequest
from workers import batching, jobs
from workers.backends.fake import FakeBackend
from workers.celery_dispatch import CeleryDispatcher
from workers.dispatch import Dispatcher
from workers.fleet import beat, live_workers, require_live
from workers.pool import ModelPool
from workers.settings import FleetSettings
from workers.store import FleetStore

pytestmark = pytest.mark.unit

MODEL = "smollm2-135m"


class FakeWorker:
    """Runs each sent batch task right away in a thread, like a worker serving ``MODEL``."""

    def __init__(self, store: FleetStore, *, alive: bool = True) -> None:
        self.store = store
        self.backend = FakeBackend(ModelSpec(name=MODEL, backend="fake", path=MODEL))
        self.pool = ModelPool({MODEL: self.backend.spec}, budget_gib=4, backend_factory=lambda s: self.backend)
        self.sent: list[str] = []
        self.threads: list[threading.Thread] = []
        if alive:
            beat(store, "fake-worker", [MODEL], {"loads": {MODEL: 1}}, ttl_s=10)

    def send(self, model: str) -> str:
        batch_id = f"b{len(self.sent)}"
        self.sent.append(batch_id)
        t = threading.Thread(target=batching.run_batch, args=(self.store, self.pool.generate, model, batch_id),
                             kwargs={"max_batch": 4, "max_wait_s": 0})
        t.start()
        self.threads.append(t)
        return batch_id


def _reqs(run: str, n: int) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"{run}/q{i}/generalist", model=MODEL, prompt=f"q{i}") for i in range(n)]


@pytest.fixture
def store() -> FleetStore:
    return FleetStore(fakeredis.FakeRedis(decode_responses=True))


def _dispatcher(store, worker=None, **settings) -> CeleryDispatcher:
    s = FleetSettings(max_batch=4, poll_s=0.01, **settings)
    return CeleryDispatcher(ExpertRegistry.default(), s, store, send=worker.send if worker else None)


def test_it_implements_the_dispatcher_protocol(store):
    assert isinstance(_dispatcher(store), Dispatcher)


def test_answers_every_request_and_sends_one_task_per_max_batch(store):
    worker = FakeWorker(store)
    out = _dispatcher(store, worker).run_batches({MODEL: _reqs("r1", 6)})
    assert sorted(out) == sorted(q.key for q in _reqs("r1", 6))
    assert out["r1/q0/generalist"].text == f"{MODEL}: q0"
    assert len(worker.sent) == 2  # ceil(6 / max_batch=4)
    assert _dispatcher(store, worker).model_loads() == {}  # nothing dispatched by this one yet


def test_no_live_worker_fails_fast_with_the_worker_command(store):
    t0 = time.monotonic()
    with pytest.raises(DispatchError, match=f"expertmix worker --models {MODEL}"):
        _dispatcher(store).run_batches({MODEL: _reqs("r1", 1)})
    assert time.monotonic() - t0 < 1.0
    assert store.pending_count(MODEL) == 0  # nothing was queued


def test_unknown_model_names_the_choices(store):
    with pytest.raises(UnknownNameError, match="smollm2-135m"):
        _dispatcher(store).run_batches({"nope": [GenerationRequest(key="r/q/e", model="nope", prompt="x")]})


def test_workers_that_vanish_while_waiting_give_up_after_the_grace(store):
    FakeWorker(store)  # beats once, then never again: gone after worker_ttl_s
    disp = _dispatcher(store, worker=None, worker_ttl_s=0.2, no_worker_grace_s=0.3, heartbeat_s=0.05)
    disp._send = lambda model: "lost"
    time.sleep(0.05)
    t0 = time.monotonic()
    with pytest.raises(DispatchError, match="jobs resume r1"):
        disp.run_batches({MODEL: _reqs("r1", 2)})
    assert time.monotonic() - t0 < 3
    assert store.pending_count(MODEL) == 2  # the requests still wait in Redis for a worker


def test_a_failed_batch_raises_with_the_run_and_resume_redoes_only_missing(store):
    worker = FakeWorker(store)
    worker.backend.fail_on = "q1"  # transient, but this fake worker does not retry
    disp = _dispatcher(store, worker)

    def send_and_fail(model: str) -> str:
        batch_id = f"b{len(worker.sent)}"
        worker.sent.append(batch_id)
        try:
            batching.run_batch(store, worker.pool.generate, model, batch_id, max_batch=4, max_wait_s=0)
        except Exception as exc:
            batching.fail_batch(store, model, batch_id, str(exc))
        return batch_id

    disp._send = send_and_fail
    store.store_completions(worker.pool.generate(MODEL, _reqs("r1", 1)))  # q0 answered earlier
    with pytest.raises(DispatchError, match="expertmix jobs resume r1"):
        disp.run_batches({MODEL: _reqs("r1", 3)})
    assert jobs.run_summary(store, "r1") | {"created": 0, "updated": 0} == {
        "run": "r1", "status": "failed", "requested": 3, "done": 1, "failed": 2,
        "cancelled": 0, "duplicates_dropped": 0, "created": 0, "updated": 0}
    assert jobs.failed_batches(store)[0]["keys"] == ["r1/q1/generalist", "r1/q2/generalist"]
    worker.backend.fail_on = None
    before = worker.backend.count("generate")
    result = jobs.resume_run(disp, "r1")
    assert result["status"] == "done" and result["resent"] == 2 and result["failed"] == 0
    assert worker.backend.count("generate") == before + 1


def test_an_answered_run_is_not_sent_again(store):
    worker = FakeWorker(store)
    disp = _dispatcher(store, worker)
    disp.run_batches({MODEL: _reqs("r1", 2)})
    sent = len(worker.sent)
    again = disp.run_batches({MODEL: _reqs("r1", 2)})
    assert len(again) == 2 and len(worker.sent) == sent


def _long(request: GenerationRequest, index: int) -> str:
    return " ".join(f"{request.prompt}-w{i}" for i in range(30))


def test_streamed_deltas_reach_on_delta_and_a_hung_up_client_stops_only_its_generation(store):
    worker = FakeWorker(store)
    worker.backend.answers, worker.backend.token_delay_s = _long, 0.01
    reqs = _reqs("r1", 2)  # one batch: the FakeBackend streams q0's answer, then q1's
    seen: dict[str, list[str]] = {}

    def on_delta(key: str, delta: str) -> bool:
        if delta:
            seen.setdefault(key, []).append(delta)
        return not (key == reqs[0].key and len(seen.get(key, [])) >= 2)  # q0's client leaves after 2 tokens

    out = _dispatcher(store, worker).run_batches({MODEL: reqs}, on_delta=on_delta)
    for t in worker.threads:
        t.join(timeout=10)
    assert out[reqs[0].key] == Completion(key=reqs[0].key, model=MODEL, text="", finish_reason="cancelled")
    assert out[reqs[1].key].text == _long(reqs[1], 0) and out[reqs[1].key].finish_reason == "stop"
    assert len(seen[reqs[1].key]) > 1, "q1's tokens streamed"
    assert store.cancelled([q.key for q in reqs]) == {reqs[0].key}
    stopped = store.results("r1", [reqs[0].key])[reqs[0].key]
    assert stopped.finish_reason == "cancelled" and len(stopped.text.split()) < 30, "the worker stopped generating q0"
    assert len(seen[reqs[0].key]) == 2, "nothing of q0 was forwarded after its client left"


def test_a_queued_streamed_request_whose_client_hung_up_is_neither_waited_for_nor_generated(store):
    worker = FakeWorker(store)
    disp = _dispatcher(store, worker, result_timeout_s=3)
    disp._send = lambda model: "not-yet"  # queued: no batch task has run yet, so no delta comes
    req = _reqs("r1", 1)[0]
    t0 = time.monotonic()
    out = disp.run_batches({MODEL: [req]}, on_delta=lambda key, delta: False)  # its client has left
    assert out[req.key] == Completion(key=req.key, model=MODEL, text="", finish_reason="cancelled")
    assert time.monotonic() - t0 < 2
    assert store.cancelled([req.key]) == {req.key}
    summary = batching.run_batch(store, worker.pool.generate, MODEL, "late", max_batch=4, max_wait_s=0)
    assert worker.backend.count("generate") == 0 and summary.cancelled == 1 and summary.written == 1


def test_a_request_cancelled_by_its_client_is_generated_again_on_resume_and_on_rerun(store):
    worker = FakeWorker(store)
    worker.backend.answers, worker.backend.token_delay_s = _long, 0.01
    disp = _dispatcher(store, worker)
    reqs = _reqs("r1", 2)
    out = disp.run_batches({MODEL: reqs}, on_delta=lambda key, delta: key != reqs[0].key)  # q0's client leaves
    for t in worker.threads:
        t.join(timeout=10)
    assert out[reqs[0].key].finish_reason == "cancelled" and out[reqs[1].key].finish_reason == "stop"
    assert jobs.run_summary(store, "r1")["cancelled"] == 1
    result = jobs.resume_run(disp, "r1")
    for t in worker.threads:
        t.join(timeout=10)
    assert result["resent"] == 1 and result["cancelled"] == 0
    answered = store.results("r1", [q.key for q in reqs])
    assert answered[reqs[0].key].finish_reason == "stop" and answered[reqs[0].key].text, "the empty answer was replaced"
    store.reopen([reqs[1].key])  # a stale cancelled answer is also regenerated by a plain rerun
    store.mark_cancelled([reqs[1].key])
    store.store_completions([Completion(key=reqs[1].key, model=MODEL, text="", finish_reason="cancelled")])
    again = disp.run_batches({MODEL: reqs})
    assert again[reqs[1].key].finish_reason == "stop" and again[reqs[1].key].text


def test_liveness_helpers(store):
    assert live_workers(store, MODEL, ttl_s=10) == []
    beat(store, "w1", [MODEL], {"loads": {MODEL: 1}}, ttl_s=10)
    assert live_workers(store, MODEL, ttl_s=10) == ["w1"]
    require_live(store, [MODEL], ttl_s=10)
    with pytest.raises(DispatchError, match="gemma3-270m"):
        require_live(store, [MODEL, "gemma3-270m"], ttl_s=10)


def test_jobs_show_unknown_run_lists_known_ones(store):
    worker = FakeWorker(store)
    _dispatcher(store, worker).run_batches({MODEL: _reqs("known", 1)})
    for t in worker.threads:  # the answer is stored before the batch record says done
        t.join()
    with pytest.raises(UnknownNameError, match="known"):
        jobs.show_run(store, "missing")
    shown = jobs.show_run(store, "known")
    assert shown["status"] == "done" and shown["batches"][0]["status"] == "done"
    assert [r["run"] for r in jobs.list_runs(store)] == ["known"]
