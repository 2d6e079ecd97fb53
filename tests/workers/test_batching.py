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
