"""Run grouped expert calls on the Celery fleet (``--executor celery``).

For each model, the dispatcher records the requests under their run, appends those without an
answer yet to the model's pending list, and sends ``ceil(n / max_batch)`` batch tasks to the
model's queue; workers coalesce pending requests (of this and concurrent runs) into batches. It
then waits for every key's answer in Redis. It fails fast when a model has no live worker, and
gives up when a model's workers stay gone for ``no_worker_grace_s`` or a batch fails for good:
the run's finished answers stay stored, so ``expertmix jobs resume RUN`` (or running again with
the same run id) only redoes what is missing.

A fused group (token or latent fusion over several models) is one ``run_fused`` task on the queue
of its group's models, which only workers serving all of them consume (:meth:`run_fused`).

A streamed request whose client hung up (its ``on_delta`` returns False, for a delta or for the
empty-delta probe sent while it is still queued) is recorded cancelled in Redis, so the worker
generating it stops it (:mod:`workers.batching`), and it is answered at once with an empty
``finish_reason="cancelled"`` completion: the run waits only for the requests somebody wants.

Example::

    from orchestrator.config import ExpertRegistry
    from workers.celery_dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher.from_env(ExpertRegistry.default())   # EXPERTMIX_REDIS_URL
    completions = dispatcher.run_batches({"smollm2-135m": requests})
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Callable

from tqdm.auto import tqdm

from orchestrator.config import ExpertRegistry
from orchestrator.errors import DispatchError
from orchestrator.core import Completion, GenerationRequest
from workers.batching import CANCEL_CHECK_S
from workers.fleet import live_workers, require_live, worker_info
from workers.settings import FleetSettings
from workers.store import FleetStore

log = logging.getLogger(__name__)


class CeleryDispatcher:
    """A :class:`~workers.dispatch.Dispatcher` that sends each model's group to its queue.

    With ``on_delta`` (token streaming), the requests are marked in Redis before they are queued;
    the worker generating them publishes their text deltas on the run's channel, which
    :meth:`wait` reads between its polls for the finished answers. The requests ``on_delta``
    refuses are recorded cancelled for the workers and not waited for (module doc).
    """

    streams = True  # takes on_delta (orchestrator.streaming)

    def __init__(
        self,
        registry: ExpertRegistry | None,
        settings: FleetSettings,
        store: FleetStore,
        *,
        send: Callable[[str], Any] | None = None,
        send_fused: Callable[[Any], Any] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.store = store
        self._send = send  # sends one batch task for a model; default: the Celery task
        self._send_fused = send_fused  # sends one fused job; default: the Celery task
        self._models_used: set[str] = set()

    @classmethod
    def from_env(cls, registry: ExpertRegistry | None = None) -> "CeleryDispatcher":
        """Connect with ``EXPERTMIX_*`` settings; raises :class:`DispatchError` if Redis is down."""
        from workers.celery_app import configure

        settings = FleetSettings.from_env()
        store = FleetStore.from_url(settings.redis_url, ttl_s=settings.result_ttl_s)
        store.ping(settings.redis_url)
        configure(settings)
        return cls(registry, settings, store)

    # ---- Dispatcher protocol -----------------------------------------------------------
    def run_batches(
        self, groups: dict[str, list[GenerationRequest]], *, label: str = "experts", progress: bool = False,
        on_delta: Any = None,
    ) -> dict[str, Completion]:
        """Answers for every request of ``groups``, keyed by request key (``on_delta(key, text)``
        gets the text deltas the workers publish while they generate)."""
        groups = {m: g for m, g in groups.items() if g}
        if not groups:
            return {}
        self._check_models(list(groups))
        require_live(self.store, list(groups), ttl_s=self.settings.worker_ttl_s)
        deltas = _Deltas(self.store, groups, on_delta) if on_delta is not None else None
        try:
            self.submit(groups)
            return self.wait(groups, label=label, progress=progress, deltas=deltas)
        finally:
            if deltas is not None:
                deltas.close()

    def run_fused(self, jobs: list, *, label: str = "fuse", progress: bool = False) -> list:
        """Results of fused group jobs (``workers.fusion.group.FusedJob``), in job order. Each job goes
        to the queue of its group's models, which only workers serving ALL of them consume; none
        live is a clear error naming the worker to start. A job answered before (a rerun) is not sent again."""
        from workers.fusion.group import FusedResult

        if not jobs:
            return []
        for job in jobs:
            self._check_models(job.models)
            if not serving_all(self.store, job.models, self.settings.worker_ttl_s):
                raise DispatchError(
                    f"no live worker serves all of {', '.join(job.models)} together (fused group of {job.key!r})",
                    hint=f"start one: expertmix worker --models {','.join(job.models)}")
        keys = [job.key for job in jobs]
        out = {k: FusedResult.model_validate_json(v) for k, v in self.store.fused_results(keys).items()}
        self.store.clear_fused_errors([k for k in keys if k not in out])
        send = self._send_fused or _celery_send_fused
        for job in jobs:
            if job.key not in out:
                send(job)
        deadline = time.monotonic() + self.settings.result_timeout_s
        watch = _LivenessWatch(self.store, self.settings)
        by_key = {job.key: job for job in jobs}
        with tqdm(total=len(jobs), desc=label, unit="group", disable=not progress) as bar:
            bar.update(len(out))
            while len(out) < len(jobs):
                left = [k for k in keys if k not in out]
                got = {k: FusedResult.model_validate_json(v) for k, v in self.store.fused_results(left).items()}
                out.update(got)
                bar.update(len(got))
                left = [k for k in left if k not in got]
                if not left:
                    break
                failed = self.store.fused_errors(left)
                if failed:
                    key, message = sorted(failed.items())[0]
                    raise DispatchError(f"fused group {key!r} failed on its worker: {message}",
                                        hint=f"{len(failed)} fused group(s) failed; fix the cause and run again "
                                             "(answered groups are not redone)")
                watch.check_groups({tuple(by_key[k].models): k for k in left})
                _check_deadline(deadline, set(left), self.settings)
                time.sleep(self.settings.poll_s)
        return [out[k] for k in keys]

    def model_loads(self) -> dict[str, int]:
        """Loads the live workers serving this dispatcher's models did (they load once, at start)."""
        out: dict[str, int] = {}
        for model in sorted(self._models_used):
            for wid in live_workers(self.store, model, ttl_s=self.settings.worker_ttl_s):
                loads = worker_info(self.store, wid).get("loads") or {}
                out[model] = out.get(model, 0) + int(loads.get(model, 0))
        return out

    def close(self) -> None:
        try:
            self.store.r.close()
        except Exception as exc:  # closing a dead connection must not mask the run's own outcome
            log.debug("closing the Redis connection failed: %s", exc)

    # ---- steps ----------------------------------------------------------------------------
    def submit(self, groups: dict[str, list[GenerationRequest]]) -> dict[str, int]:
        """Record and enqueue the requests that have no answer yet; returns how many per model."""
        send = self._send or _celery_send
        all_reqs = [q for g in groups.values() for q in g]
        self.store.record_requests(all_reqs)
        sent: dict[str, int] = {}
        for model, reqs in groups.items():
            self._models_used.add(model)
            todo = self.unanswered(reqs)
            self.store.clear_errors_for(todo)
            self.store.enqueue(model, todo)
            for _ in range(math.ceil(len(todo) / self.settings.max_batch)):
                send(model)
            sent[model] = len(todo)
        log.info("submitted %s", ", ".join(f"{m}: {n}" for m, n in sent.items()))
        return sent

    def wait(
        self, groups: dict[str, list[GenerationRequest]], *, label: str = "experts", progress: bool = False,
        deltas: "_Deltas | None" = None,
    ) -> dict[str, Completion]:
        """Poll Redis until every request has an answer; raise on failures or a fleet that is gone."""
        model_of = {q.key: m for m, g in groups.items() for q in g}
        outstanding = set(model_of)
        out: dict[str, Completion] = {}
        deadline = time.monotonic() + self.settings.result_timeout_s
        watch = _LivenessWatch(self.store, self.settings)
        with tqdm(total=len(model_of), desc=label, unit="prompt", disable=not progress) as bar:
            while outstanding:
                got = deltas.resolve_cancelled(outstanding, model_of) if deltas is not None else {}
                try:
                    got.update(self._poll(outstanding - set(got), model_of, watch))
                except _redis_connection_errors() as exc:  # Redis restarting: its data persists, wait
                    log.warning("Redis unreachable while waiting (%s); retrying", exc)
                    time.sleep(1.0)
                out.update(got)
                outstanding -= set(got)
                bar.update(len(got))
                if outstanding:
                    _check_deadline(deadline, outstanding, self.settings)
                    if deltas is not None:
                        deltas.pump(self.settings.poll_s, outstanding)  # waits on the channel instead of sleeping
                    else:
                        time.sleep(self.settings.poll_s)
        return out

    # ---- internals ------------------------------------------------------------------------
    def _poll(self, outstanding: set[str], model_of: dict[str, str], watch: "_LivenessWatch") -> dict[str, Completion]:
        """Answers that arrived; raises if any outstanding request failed or lost its workers."""
        got = self._fetch(outstanding)
        left = outstanding - set(got)
        if left:
            self._raise_failures(left)
            watch.check({model_of[k] for k in left}, run=_runs(left))
        return got

    def _check_models(self, models: list[str]) -> None:
        if self.registry is not None:
            for model in models:
                self.registry.model(model)  # UnknownNameError with the valid choices

    def unanswered(self, reqs: list[GenerationRequest]) -> list[GenerationRequest]:
        """Requests with no real answer yet (what a submit sends); a stored ``cancelled`` answer is
        dropped so the request is generated again."""
        done = self._fetch({q.key for q in reqs})
        stale = [k for k, c in done.items() if c.cancelled]
        if stale:
            self.store.reopen(stale)
        return [q for q in reqs if q.key not in done or q.key in stale]

    def _fetch(self, keys: set[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        for run, run_keys in _group_runs(keys).items():
            out.update(self.store.results(run, run_keys))
        return out

    def _raise_failures(self, keys: set[str]) -> None:
        for run, run_keys in _group_runs(keys).items():
            errors = self.store.errors(run, run_keys)
            if errors:
                key, why = next(iter(sorted(errors.items())))
                raise DispatchError(
                    f"{len(errors)} request(s) of run {run} failed for good, e.g. {key}: {why}",
                    hint=f"see `expertmix jobs failed`; fix the cause, then `expertmix jobs resume {run}`",
                )


class _Deltas:
    """The run channels of a streamed call: subscribed before the requests are queued (pub/sub
    keeps nothing for late subscribers), read between polls. A lost message costs nothing but
    smoothness: the finished answer is the whole text and is sent once it is stored.

    It also notices hung-up clients: a request whose ``on_delta`` returns False, for one of its
    deltas or for the empty-delta probe (every ``CANCEL_CHECK_S``, which also reaches requests
    still queued), is recorded cancelled in Redis for the worker, then resolved here.
    """

    def __init__(self, store: FleetStore, groups: dict[str, list[GenerationRequest]], on_delta: Any) -> None:
        keys = [q.key for g in groups.values() for q in g]
        self.store, self.on_delta = store, on_delta
        self.keys = frozenset(keys)
        self.cancelled: set[str] = set()
        self._next_probe = 0.0
        self.pubsub = store.r.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*sorted({store.stream_channel(run) for run in _group_runs(keys)}))
        store.mark_streamed(keys)

    def pump(self, timeout_s: float, outstanding: set[str]) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is None:
                continue
            item = json.loads(message["data"])
            key = item["key"]
            if key not in self.cancelled and self.on_delta(key, item["delta"]) is False:
                self._cancel([key])
        self._probe(outstanding)

    def resolve_cancelled(self, outstanding: set[str], model_of: dict[str, str]) -> dict[str, Completion]:
        """Empty ``finish_reason="cancelled"`` completions for the outstanding cancelled requests."""
        return {key: Completion.cancelled_for(key, model_of[key])
                for key in sorted(self.cancelled & outstanding)}

    def _probe(self, outstanding: set[str]) -> None:
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + CANCEL_CHECK_S
        gone = [key for key in sorted((self.keys & outstanding) - self.cancelled) if self.on_delta(key, "") is False]
        if gone:
            self._cancel(gone)

    def _cancel(self, keys: list[str]) -> None:
        self.store.mark_cancelled(keys)
        self.cancelled.update(keys)
        log.info("cancelled %d streamed request(s) whose client hung up, e.g. %s", len(keys), keys[0])

    def close(self) -> None:
        try:
            self.pubsub.close()
        except Exception as exc:  # closing a dead connection must not mask the run's own outcome
            log.debug("closing the stream subscription failed: %s", exc)


class _LivenessWatch:
    """Tracks how long each model, or each group of models one worker must serve together (a fused
    group), has had no live worker while a dispatcher waits; checked at most once a heartbeat."""

    def __init__(self, store: FleetStore, settings: FleetSettings) -> None:
        self.store, self.settings = store, settings
        self.gone_since: dict[tuple[str, ...], float] = {}
        self.next_check = 0.0

    def check(self, models: set[str], *, run: str) -> None:
        for (model,), gone in self._gone({(m,) for m in models}):
            raise DispatchError(
                f"no live worker for model {model} for {gone:.0f}s; its requests of run {run} wait in Redis",
                hint=f"start `expertmix worker --models {model}`, then `expertmix jobs resume {run}`",
            )

    def check_groups(self, groups: dict[tuple[str, ...], str]) -> None:
        """``groups``: models -> the key of a fused job waiting for a worker that serves them all."""
        for group, gone in self._gone(set(groups)):
            name = ",".join(group)
            raise DispatchError(f"no live worker serves {name} together any more; fused group "
                                f"{groups[group]!r} waits in its queue",
                                hint=f"start `expertmix worker --models {name}` and run again")

    def _gone(self, groups: set[tuple[str, ...]]) -> list[tuple[tuple[str, ...], float]]:
        """The groups without a live worker for longer than ``no_worker_grace_s``, with how long."""
        now = time.monotonic()
        if now < self.next_check:
            return []
        self.next_check = now + min(1.0, self.settings.heartbeat_s)
        out = []
        for group in sorted(groups):
            if serving_all(self.store, group, self.settings.worker_ttl_s):
                self.gone_since.pop(group, None)
                continue
            since = self.gone_since.setdefault(group, now)
            if since == now:
                log.warning("no live worker for %s; waiting up to %.0fs for one", ",".join(group),
                            self.settings.no_worker_grace_s)
            if now - since > self.settings.no_worker_grace_s:
                out.append((group, now - since))
        return out


def serving_all(store: FleetStore, models: Any, ttl_s: float) -> bool:
    """Whether some live worker serves every one of ``models``."""
    return bool(set.intersection(*(set(live_workers(store, m, ttl_s=ttl_s)) for m in models)))


def _check_deadline(deadline: float, outstanding: set[str], settings: FleetSettings) -> None:
    if time.monotonic() > deadline:
        raise DispatchError(
            f"{len(outstanding)} request(s) still unanswered after {settings.result_timeout_s:.0f}s",
            hint=f"inspect with `expertmix jobs show {_runs(outstanding)}`; "
            "raise EXPERTMIX_RESULT_TIMEOUT_S for long runs",
        )


def _redis_connection_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _celery_send(model: str) -> str:
    from workers.tasks import send_batch_task

    return send_batch_task(model)


def _celery_send_fused(job: Any) -> str:
    from workers.tasks import send_fused_task

    return send_fused_task(job)


def _group_runs(keys: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in sorted(keys):
        out.setdefault(FleetStore.run_of(key), []).append(key)
    return out


def _runs(keys: set[str]) -> str:
    return ",".join(sorted(_group_runs(keys)))
