"""Unit tests of worker-side batching on fakes: coalescing, redelivery, idempotent answers, failures."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest

from orchestrator.config import ModelSpec
from orchestrator.errors import BackendError
from orchestrator.core import GenerationRequest
from workers import batching
from workers.backends.fake import FakeBackend
from workers.pool import ModelPool
from workers.store import FleetStore

pytestmark = pytest.mark.unit

MODEL = "m"


def _reqs(run: str, n: int, model: str = MODEL) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"{run}/q{i}/e", model=model, prompt=f"{run} question {i}") for i in range(n)]


@pytest.fixture
def store() -> FleetStore:
    return FleetStore(fakeredis.FakeRedis(decode_responses=True))


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(ModelSpec(name=MODEL, backend="fake", path=MODEL))


@pytest.fixture
def pool(fake: FakeBackend) -> ModelPool:
    return ModelPool({MODEL: fake.spec}, budget_gib=4, backend_factory=lambda spec: fake)


def test_two_runs_pending_together_are_one_generate_call(store, fake, pool):
    store.enqueue(MODEL, _reqs("runA", 3))
    store.enqueue(MODEL, _reqs("runB", 2))
    summary = batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=16, max_wait_s=0)
    assert fake.count("generate") == 1
    assert summary.size == 5 and summary.written == 5
    assert summary.runs == ["runA", "runB"]
    assert len(store.results("runA", [f"runA/q{i}/e" for i in range(3)])) == 3
    # the second batch task of the coalesced requests finds nothing left and generates nothing
    empty = batching.run_batch(store, pool.generate, MODEL, "b2", max_batch=16, max_wait_s=0)
    assert empty.size == 0 and fake.count("generate") == 1


def test_a_batch_waits_up_to_max_wait_for_a_concurrent_run(store, fake, pool):
    store.enqueue(MODEL, _reqs("runA", 2))
    late = threading.Timer(0.15, lambda: store.enqueue(MODEL, _reqs("runB", 2)))
    late.start()
    summary = batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=16, max_wait_s=1.0)
    late.join()
    assert summary.size == 4 and fake.count("generate") == 1
    assert fake.batches[0][-1].key == "runB/q1/e"


def test_max_wait_zero_does_not_wait_and_max_batch_caps_the_batch(store, fake, pool):
    store.enqueue(MODEL, _reqs("r", 5))
    t0 = time.monotonic()
    first = batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=3, max_wait_s=0)
    assert time.monotonic() - t0 < 0.5
    assert first.size == 3 and first.more_pending
    second = batching.run_batch(store, pool.generate, MODEL, "b2", max_batch=3, max_wait_s=0)
    assert second.size == 2 and not second.more_pending
    assert [n for kind, n in fake.calls if kind == "generate"] == [3, 2]


def test_a_redelivered_batch_reruns_its_claim_and_never_duplicates_answers(store, fake, pool):
    store.enqueue(MODEL, _reqs("r", 4))
    claimed = batching.claim_batch(store, MODEL, "b1", max_batch=8, max_wait_s=0)
    assert len(claimed) == 4 and store.pending_count(MODEL) == 0
    # the worker died after storing two answers; the broker redelivers task b1
    store.store_completions(pool.generate(MODEL, claimed[:2]))
    summary = batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=8, max_wait_s=0)
    assert summary.size == 4 and summary.generated == 2 and summary.written == 2
    assert len(store.r.hgetall(store.k("run", "r", "results"))) == 4
    # a duplicate delivery of an already finished batch writes nothing new
    assert store.store_completions(pool.generate(MODEL, claimed)) == 0
    assert int(store.r.hget(store.k("run", "r"), "duplicates")) == 4


def test_first_answer_wins(store):
    from orchestrator.core import Completion

    assert store.store_completions([Completion(key="r/q0/e", model=MODEL, text="first")]) == 1
    assert store.store_completions([Completion(key="r/q0/e", model=MODEL, text="second")]) == 0
    assert store.results("r", ["r/q0/e"])["r/q0/e"].text == "first"


def test_a_batch_failed_for_good_marks_its_requests_and_the_failed_list(store, fake, pool):
    fake.fail_on = "question 1"
    store.enqueue(MODEL, _reqs("r", 3))
    with pytest.raises(BackendError):
        batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=8, max_wait_s=0)
    # a retry keeps the claim: the same three requests come back for the same batch id
    assert len(store.claimed("b1")) == 3
    batching.note_retry(store, "b1", "BackendError: scripted")
    assert store.batch("b1")["status"] == "retrying"
    keys = batching.fail_batch(store, MODEL, "b1", "BackendError: scripted", worker="w1")
    assert keys == [f"r/q{i}/e" for i in range(3)]
    assert set(store.errors("r")) == set(keys)
    assert store.claimed("b1") == []
    failed = store.r.lrange(store.k("failed"), 0, -1)
    assert len(failed) == 1 and '"model": "m"' in failed[0]
    assert store.batch("b1")["status"] == "failed"


# ---- streamed requests whose client hung up (the dispatcher records them cancelled) ---------------
def _long(request: GenerationRequest, index: int) -> str:
    return " ".join(f"{request.key}-w{i}" for i in range(30))


def test_a_streamed_request_cancelled_mid_generation_stops_and_the_rest_of_its_batch_finishes(store, fake, pool):
    fake.answers, fake.token_delay_s = _long, 0.01  # FakeBackend streams the batch's answers one after another
    reqs = _reqs("r", 3)
    store.enqueue(MODEL, reqs)
    store.mark_streamed([reqs[0].key, reqs[1].key])  # q2 is not streamed
    published: dict[str, int] = {}
    publish, read = store.publish_delta, store.cancelled
    reads: list[float] = []

    def publish_and_hang_up(key: str, delta: str) -> None:
        published[key] = published.get(key, 0) + 1
        if key == reqs[0].key and published[key] == 3:  # the gateway saw its third token, then the client left
            store.mark_cancelled([key])
        publish(key, delta)

    def counted_read(keys):
        reads.append(time.monotonic())
        return read(keys)

    store.publish_delta, store.cancelled = publish_and_hang_up, counted_read
    t0 = time.monotonic()
    summary = batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=8, max_wait_s=0)
    took = time.monotonic() - t0
    done = store.results("r", [q.key for q in reqs])
    assert done[reqs[0].key].finish_reason == "cancelled"
    assert 3 <= published[reqs[0].key] < 30 and len(done[reqs[0].key].text.split()) < 30, "it stopped early"
    for q in reqs[1:]:
        assert done[q.key].text == _long(q, 0) and done[q.key].finish_reason == "stop", "the others went on"
    assert published[reqs[1].key] == 30 and reqs[2].key not in published
    assert summary.written == 3 and summary.cancelled == 1
    assert store.batch("b1")["cancelled"] == 1
    # throttled: one Redis read per CANCEL_CHECK_S at most (plus the first), not one per token
    assert len(reads) <= 2 + took / batching.CANCEL_CHECK_S
    assert len(reads) * 5 < sum(published.values())


def test_a_request_cancelled_before_its_batch_runs_is_answered_without_generating(store, fake, pool):
    reqs = _reqs("r", 2)
    store.enqueue(MODEL, reqs)
    store.mark_streamed([q.key for q in reqs])
    store.mark_cancelled([reqs[0].key])
    summary = batching.run_batch(store, pool.generate, MODEL, "b1", max_batch=8, max_wait_s=0)
    assert [q.key for q in fake.batches[0]] == [reqs[1].key], "only the wanted request was generated"
    done = store.results("r", [q.key for q in reqs])
    assert done[reqs[0].key].text == "" and done[reqs[0].key].finish_reason == "cancelled"
    assert done[reqs[1].key].finish_reason == "stop"
    assert summary.written == 2 and summary.cancelled == 1


def test_cancellations_are_kept_per_run_and_expire_with_it(store):
    store.mark_cancelled(["r1/q0/e", "r2/q3/e"])
    assert store.cancelled(["r1/q0/e", "r1/q1/e", "r2/q3/e"]) == {"r1/q0/e", "r2/q3/e"}
    assert store.cancelled([]) == set()
    assert 0 < store.r.ttl(store.k("run", "r1", "cancelled")) <= store.ttl_s
