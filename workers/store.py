"""The fleet's shared state in Redis: pending requests, claimed batches, results, run records.

Key layout (all under ``expertmix:``)::

    pending:<model>        list   request records waiting for a batch task of that model
    processing:<batch>     list   records a batch task claimed (kept until its results are stored,
                                  so a redelivered or retried task finds its own batch again)
    batch:<batch>          hash   model, size, status, worker, runs, attempts, timings, error
    run:<run>              hash   created, updated, requested, done, failed, duplicates
    run:<run>:requests     hash   key -> GenerationRequest JSON (what `jobs resume` re-sends)
    run:<run>:results      hash   key -> Completion JSON, written with HSETNX: first answer wins
    run:<run>:errors       hash   key -> why the request failed for good
    run:<run>:batches      set    batch ids that carried the run's requests
    run:<run>:stream       set    request keys whose text deltas a dispatcher waits for
    run:<run>:cancelled    set    streamed request keys whose client hung up: workers stop them
    stream:<run>           pubsub channel: {"key", "delta"} messages while those requests generate
    runs                   zset   run -> creation time
    failed                 list   failed-for-good batch records, newest first

A request's run is the first ``/``-separated part of its key (``RunContext.key`` builds
``run/question/expert``), so every write for a key lands in its run's hashes.

Example::

    >>> import fakeredis
    >>> store = FleetStore(fakeredis.FakeRedis())
    >>> store.run_of("r1/q0/generalist")
    'r1'
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from orchestrator.errors import DispatchError
from orchestrator.core import Completion, GenerationRequest

PREFIX = "expertmix:"
FAILED_KEEP = 1000


def connect(url: str) -> Any:
    """A Redis client for ``url`` (imported lazily so ``import workers`` stays cheap)."""
    import redis

    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


class FleetStore:
    """Typed access to the fleet's Redis keys. Domain code talks to Redis only through this."""

    def __init__(self, client: Any, *, ttl_s: int = 7 * 24 * 3600) -> None:
        self.r = client
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, *, ttl_s: int = 7 * 24 * 3600) -> "FleetStore":
        return cls(connect(url), ttl_s=ttl_s)

    # ---- keys ---------------------------------------------------------------------------
    @staticmethod
    def run_of(key: str) -> str:
        return key.split("/", 1)[0]

    @staticmethod
    def k(*parts: str) -> str:
        return PREFIX + ":".join(parts)

    def ping(self, url_hint: str = "") -> None:
        """Fail fast with a fix when Redis is unreachable."""
        try:
            self.r.ping()
        except Exception as exc:  # redis raises ConnectionError / TimeoutError subclasses
            raise DispatchError(
                f"cannot reach Redis {url_hint}: {exc}".strip(),
                hint="start Redis (redis-server, or `docker compose up redis` in deploy/) "
                "and set EXPERTMIX_REDIS_URL",
            ) from None

    # ---- submitting ---------------------------------------------------------------------
    def record_requests(self, requests: Iterable[GenerationRequest]) -> None:
        """Remember every request under its run (idempotent) so a run can be resumed later."""
        now = time.time()
        pipe = self.r.pipeline()
        for run, reqs in _by_run(requests).items():
            pipe.hset(self.k("run", run, "requests"), mapping={q.key: q.model_dump_json() for q in reqs})
            pipe.hsetnx(self.k("run", run), "created", now)
            pipe.hset(self.k("run", run), "updated", now)
            pipe.zadd(self.k("runs"), {run: now}, nx=True)
            for suffix in ("", ":requests"):
                pipe.expire(self.k("run", run) + suffix, self.ttl_s)
        pipe.execute()

    def enqueue(self, model: str, requests: list[GenerationRequest]) -> None:
        """Append request records to ``model``'s pending list (a batch task will drain them)."""
        if requests:
            self.r.rpush(self.k("pending", model), *[_record(q) for q in requests])

    def pending_count(self, model: str) -> int:
        return int(self.r.llen(self.k("pending", model)))

    # ---- claiming (worker side) ---------------------------------------------------------
    def claimed(self, batch_id: str) -> list[GenerationRequest]:
        """Requests a batch already claimed (non-empty after a redelivery or a retry)."""
        return [_parse(x) for x in self.r.lrange(self.k("processing", batch_id), 0, -1)]

    def claim_one(self, model: str, batch_id: str) -> GenerationRequest | None:
        """Atomically move one pending record into the batch's processing list (None if none)."""
        raw = self.r.lmove(self.k("pending", model), self.k("processing", batch_id), "LEFT", "RIGHT")
        return None if raw is None else _parse(raw)

    def forget_batch(self, batch_id: str) -> None:
        self.r.delete(self.k("processing", batch_id))

    # ---- results ------------------------------------------------------------------------
    def store_completions(self, completions: list[Completion]) -> int:
        """Write each completion under its key unless one is there already; returns how many were new."""
        pipe = self.r.pipeline()
        for comp in completions:
            pipe.hsetnx(self.k("run", self.run_of(comp.key), "results"), comp.key, comp.model_dump_json())
        written = pipe.execute()
        pipe = self.r.pipeline()
        for comp, new in zip(completions, written):
            run = self.run_of(comp.key)
            pipe.hincrby(self.k("run", run), "done" if new else "duplicates", 1)
            pipe.hset(self.k("run", run), "updated", time.time())
            pipe.expire(self.k("run", run, "results"), self.ttl_s)
        pipe.execute()
        return sum(1 for new in written if new)

    def store_errors(self, keys: list[str], message: str) -> None:
        """Mark requests failed for good (never overwriting a result that made it)."""
        pipe = self.r.pipeline()
        for key in keys:
            run = self.run_of(key)
            pipe.hset(self.k("run", run, "errors"), key, message)
            pipe.expire(self.k("run", run, "errors"), self.ttl_s)
        pipe.execute()

    def results(self, run: str, keys: list[str]) -> dict[str, Completion]:
        """The stored completions among ``keys`` (all of one run)."""
        if not keys:
            return {}
        raw = self.r.hmget(self.k("run", run, "results"), keys)
        return {k: Completion.model_validate_json(v) for k, v in zip(keys, raw) if v is not None}

    def errors(self, run: str, keys: list[str] | None = None) -> dict[str, str]:
        if keys is None:
            return dict(self.r.hgetall(self.k("run", run, "errors")))
        if not keys:
            return {}
        raw = self.r.hmget(self.k("run", run, "errors"), keys)
        return {k: v for k, v in zip(keys, raw) if v is not None}

    def clear_errors_for(self, requests: Iterable[GenerationRequest]) -> None:
        """Forget earlier failures of requests that are being sent again (a resume)."""
        for run, reqs in _by_run(requests).items():
            self.r.hdel(self.k("run", run, "errors"), *[q.key for q in reqs])

    def reopen(self, keys: list[str]) -> None:
        """Drop the stored answers and cancellation marks of ``keys`` so they can be generated again.

        Used for requests answered only with ``finish_reason="cancelled"`` (their streaming client
        hung up) that a resume or a rerun of the run now asks for: the empty answer is not kept.
        """
        pipe = self.r.pipeline()
        for run, run_keys in _keys_by_run(keys).items():
            pipe.hdel(self.k("run", run, "results"), *run_keys)
            pipe.srem(self.k("run", run, "cancelled"), *run_keys)
        pipe.execute()

    # ---- fused groups (one job answered jointly by several models on one worker) -----------
    def store_fused(self, key: str, result_json: str) -> None:
        """A fused job's result (first writer wins, like completions)."""
        name = self.k("run", self.run_of(key), "fused")
        self.r.pipeline().hsetnx(name, key, result_json).expire(name, self.ttl_s).execute()

    def store_fused_error(self, key: str, message: str) -> None:
        name = self.k("run", self.run_of(key), "fused_errors")
        self.r.pipeline().hset(name, key, message).expire(name, self.ttl_s).execute()

    def fused_results(self, keys: list[str]) -> dict[str, str]:
        """The stored results (JSON) among ``keys``."""
        return self._hash_many("fused", keys)

    def fused_errors(self, keys: list[str]) -> dict[str, str]:
        return self._hash_many("fused_errors", keys)

    def clear_fused_errors(self, keys: list[str]) -> None:
        for run, ks in _keys_by_run(keys).items():
            self.r.hdel(self.k("run", run, "fused_errors"), *ks)

    def _hash_many(self, suffix: str, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for run, ks in _keys_by_run(keys).items():
            out.update({k: v for k, v in zip(ks, self.r.hmget(self.k("run", run, suffix), ks)) if v is not None})
        return out

    def run_requests(self, run: str) -> list[GenerationRequest]:
        """Every request recorded for ``run``, in key order."""
        raw = self.r.hgetall(self.k("run", run, "requests"))
        return [_parse(raw[k]) for k in sorted(raw)]

    # ---- token streaming (pub/sub) ------------------------------------------------------
    def mark_streamed(self, keys: list[str]) -> None:
        """Ask the workers to publish these requests' text deltas as they generate them."""
        self._add_members("stream", keys)

    def streamed(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` a dispatcher waits for token by token."""
        return self._members("stream", keys)

    def mark_cancelled(self, keys: list[str]) -> None:
        """Tell the workers nobody waits for these streamed requests any more: stop generating them."""
        self._add_members("cancelled", keys)

    def cancelled(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` their client gave up on (one round trip, whatever the runs)."""
        return self._members("cancelled", keys)

    def stream_channel(self, run: str) -> str:
        return self.k("stream", run)

    def publish_delta(self, key: str, delta: str) -> None:
        self.r.publish(self.stream_channel(self.run_of(key)), json.dumps({"key": key, "delta": delta}))

    def _add_members(self, suffix: str, keys: list[str]) -> None:
        """Add ``keys`` to their runs' ``run:<run>:<suffix>`` sets (which expire with the run)."""
        pipe = self.r.pipeline()
        for run, run_keys in _keys_by_run(keys).items():
            pipe.sadd(self.k("run", run, suffix), *run_keys)
            pipe.expire(self.k("run", run, suffix), self.ttl_s)
        pipe.execute()

    def _members(self, suffix: str, keys: list[str]) -> set[str]:
        by_run = _keys_by_run(keys)
        if not by_run:
            return set()
        pipe = self.r.pipeline()
        for run, run_keys in by_run.items():
            pipe.smismember(self.k("run", run, suffix), run_keys)
        flags = pipe.execute()
        return {k for run_keys, on in zip(by_run.values(), flags) for k, hit in zip(run_keys, on) if hit}

    # ---- batch records ------------------------------------------------------------------
    def update_batch(self, batch_id: str, **fields: Any) -> None:
        data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        pipe = self.r.pipeline()
        pipe.hset(self.k("batch", batch_id), mapping=data)
        pipe.expire(self.k("batch", batch_id), self.ttl_s)
        pipe.execute()

    def link_batch(self, batch_id: str, runs: Iterable[str]) -> None:
        pipe = self.r.pipeline()
        for run in set(runs):
            pipe.sadd(self.k("run", run, "batches"), batch_id)
            pipe.expire(self.k("run", run, "batches"), self.ttl_s)
        pipe.execute()

    def batch(self, batch_id: str) -> dict[str, Any]:
        return decode_hash(self.r.hgetall(self.k("batch", batch_id)))

    def push_failed(self, record: dict[str, Any]) -> None:
        pipe = self.r.pipeline()
        pipe.lpush(self.k("failed"), json.dumps(record))
        pipe.ltrim(self.k("failed"), 0, FAILED_KEEP - 1)
        pipe.execute()


def _keys_by_run(keys: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in keys:
        out.setdefault(FleetStore.run_of(key), []).append(key)
    return out


def _record(req: GenerationRequest) -> str:
    return req.model_dump_json()


def _parse(raw: str | bytes) -> GenerationRequest:
    return GenerationRequest.model_validate_json(raw)


def _by_run(requests: Iterable[GenerationRequest]) -> dict[str, list[GenerationRequest]]:
    out: dict[str, list[GenerationRequest]] = {}
    for req in requests:
        out.setdefault(FleetStore.run_of(req.key), []).append(req)
    return out


def decode_hash(data: dict[str, str]) -> dict[str, Any]:
    """A Redis hash whose values are JSON where they parse (plain strings otherwise)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out
