"""Worker-side batching: claim a coalesced batch for one model, generate it once, store it once.

A dispatcher appends requests to the model's pending list and sends one batch task per
``max_batch`` requests. A batch task claims up to ``max_batch`` pending requests, waiting at most
``max_wait`` for more when the list runs dry, so concurrent runs' requests for one model share one
``generate`` call. Claimed requests stay in the batch's processing list until their results are
stored: a batch task that is redelivered (worker lost) or retried (transient backend error) keeps
the same id and finds exactly its batch again. Results are written with first-writer-wins
semantics under their keys, so a redelivered batch never duplicates an answer.

Streamed requests (a gateway waits for their tokens) publish their text deltas as they are
generated. When the dispatcher records one of them cancelled (its client hung up), the worker
stops it: a request cancelled before its batch runs is not generated at all, and one cancelled
while it streams is stopped at its next delta (its ``on_delta`` returns False, so the backend
aborts that request only; vLLM aborts it in the engine, litellm/openai close its stream). The
cancellations are read from Redis at most every ``CANCEL_CHECK_S``, not once per token. Either
way the request gets a completion with ``finish_reason="cancelled"``, so nothing waits for it.

Example::

    >>> import fakeredis
    >>> from orchestrator.core import Completion, GenerationRequest
    >>> from workers.store import FleetStore
    >>> store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    >>> store.enqueue("m", [GenerationRequest(key="r/q0/e", model="m", prompt="hi")])
    >>> echo = lambda model, reqs: [Completion(key=q.key, model=model, text=q.prompt) for q in reqs]
    >>> run_batch(store, echo, "m", "b1", max_batch=8, max_wait_s=0).written
    1
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from orchestrator.core import Completion, GenerationRequest
from workers.store import FleetStore

log = logging.getLogger(__name__)

CLAIM_POLL_S = 0.005
CANCEL_CHECK_S = 0.1  # how late a worker may notice a hung-up client: one Redis read per interval
GenerateFn = Callable[[str, list[GenerationRequest]], list[Completion]]


@dataclass
class BatchSummary:
    """What one batch task did (JSON-able through :meth:`as_dict`, the task's return value)."""

    batch_id: str
    model: str
    size: int = 0
    generated: int = 0
    written: int = 0
    cancelled: int = 0
    runs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    more_pending: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def claim_batch(
    store: FleetStore, model: str, batch_id: str, *, max_batch: int, max_wait_s: float
) -> list[GenerationRequest]:
    """The batch's requests: those it already claimed, else up to ``max_batch`` pending ones."""
    already = store.claimed(batch_id)
    if already:
        log.info("batch %s: resuming %d claimed requests (redelivered or retried)", batch_id, len(already))
        return already
    first = store.claim_one(model, batch_id)
    if first is None:
        return []
    batch = [first]
    deadline = time.monotonic() + max_wait_s
    while len(batch) < max_batch:
        nxt = store.claim_one(model, batch_id)
        if nxt is not None:
            batch.append(nxt)
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, CLAIM_POLL_S))  # a concurrent run's requests may still be arriving
    return batch


def run_batch(
    store: FleetStore,
    generate: GenerateFn,
    model: str,
    batch_id: str,
    *,
    max_batch: int,
    max_wait_s: float,
    worker: str = "",
) -> BatchSummary:
    """Claim, generate (one call) and store one batch; safe to run again for the same ``batch_id``."""
    summary = BatchSummary(batch_id, model)
    batch = claim_batch(store, model, batch_id, max_batch=max_batch, max_wait_s=max_wait_s)
    if not batch:
        return summary  # another batch task already took these requests: coalesced
    summary.size = len(batch)
    summary.runs = sorted({store.run_of(q.key) for q in batch})
    store.link_batch(batch_id, summary.runs)
    attempts = int(store.batch(batch_id).get("attempts", 0)) + 1
    store.update_batch(
        batch_id, model=model, size=summary.size, status="running", worker=worker,
        started=time.time(), runs=summary.runs, attempts=attempts, keys=[q.key for q in batch],
    )
    todo = _without_results(store, batch)
    t0 = time.perf_counter()
    completions = _generate(store, generate, model, todo)
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.generated = len(completions)
    summary.cancelled = sum(1 for c in completions if c.cancelled)
    summary.written = store.store_completions(completions)
    store.update_batch(
        batch_id, status="done", finished=time.time(), seconds=summary.seconds,
        generated=summary.generated, written=summary.written, cancelled=summary.cancelled,
    )
    store.forget_batch(batch_id)
    summary.more_pending = store.pending_count(model) > 0
    log.info("batch %s (%s): %d requests, %d new answers (%d cancelled) in %.2fs", batch_id, model,
             summary.size, summary.written, summary.cancelled, summary.seconds)
    return summary


def _generate(store: FleetStore, generate: GenerateFn, model: str, todo: list[GenerationRequest]) -> list[Completion]:
    """One ``generate`` call for ``todo``; streamed requests publish their deltas and stop once
    their client hung up (those cancelled before the call are answered without generating)."""
    if not todo:
        return []
    streamed = store.streamed([q.key for q in todo])
    if not streamed:
        return generate(model, todo)
    cancelled = Cancellations(store, streamed)
    before = {q.key for q in todo if q.key in cancelled}  # one reading splits todo: every request lands once
    skipped = [Completion.cancelled_for(q.key, model) for q in todo if q.key in before]
    live = [q for q in todo if q.key not in before]

    def on_delta(key: str, delta: str) -> bool:
        if key not in streamed:
            return True
        if key in cancelled:
            return False  # the backend stops this request only
        store.publish_delta(key, delta)
        return True

    return skipped + (generate(model, live, on_delta) if live else [])


class Cancellations:
    """The streamed requests of one batch whose client hung up, as the dispatcher recorded them.

    ``key in cancellations`` is asked once per generated token, from the backend's threads; it
    reads Redis (one round trip for all keys) at most every ``every_s`` and answers from memory
    in between.

    >>> import fakeredis
    >>> store = FleetStore(fakeredis.FakeRedis(decode_responses=True))
    >>> store.mark_cancelled(["r/q1/e"])
    >>> gone = Cancellations(store, ["r/q0/e", "r/q1/e"])
    >>> "r/q0/e" in gone, "r/q1/e" in gone
    (False, True)
    """

    def __init__(self, store: FleetStore, keys: Iterable[str], *, every_s: float = CANCEL_CHECK_S) -> None:
        self.store, self.keys, self.every_s = store, frozenset(keys), every_s
        self.gone: frozenset[str] = frozenset()
        self._next_read = 0.0
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        if key in self.gone:
            return True
        now = time.monotonic()
        # one thread reads; the others answer from what was last read rather than wait for it
        if now >= self._next_read and self._lock.acquire(blocking=False):
            try:
                self._next_read = now + self.every_s
                self.gone = self.gone | self.store.cancelled(sorted(self.keys - self.gone))
            finally:
                self._lock.release()
        return key in self.gone


def fail_batch(store: FleetStore, model: str, batch_id: str, error: str, *, worker: str = "") -> list[str]:
    """Record a batch that failed for good: its requests get the error, the failed list a record."""
    keys = [q.key for q in store.claimed(batch_id)]
    store.store_errors(keys, error)
    store.update_batch(batch_id, model=model, status="failed", error=error, finished=time.time())
    store.push_failed({"batch": batch_id, "model": model, "keys": keys, "error": error,
                       "worker": worker, "time": time.time()})
    store.forget_batch(batch_id)
    log.error("batch %s (%s) failed for good: %s", batch_id, model, error)
    return keys


def note_retry(store: FleetStore, batch_id: str, error: str) -> None:
    """Mark a batch as waiting for a retry after a transient error (its claim is kept)."""
    store.update_batch(batch_id, status="retrying", error=error)


def _without_results(store: FleetStore, batch: list[GenerationRequest]) -> list[GenerationRequest]:
    by_run: dict[str, list[str]] = {}
    for q in batch:
        by_run.setdefault(store.run_of(q.key), []).append(q.key)
    done: set[str] = set()
    for run, keys in by_run.items():
        done.update(store.results(run, keys))
    return [q for q in batch if q.key not in done]
