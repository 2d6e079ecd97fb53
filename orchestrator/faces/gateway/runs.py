"""How chat requests reach the engines: admission (a bounded queue) and merged local runs.

Local engines are one shared pool, so runs take turns on it. Requests that arrive while a run is
busy wait in per-(pipeline, budget) lists and join the next run together (up to ``max_batch``):
concurrent requests cost one batch per model instead of one run each. A request whose client
hangs up while it waits is taken off its list before any run sees it, and a list is dropped the
moment it is empty, so the waiting state is bounded by the queue limit, not by how many distinct
budgets were ever seen.

A merged run that fails is split in halves and each half rerun, down to single questions, so a
poisoned question fails alone with its own error and every other request still gets its answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core import Question, Result
from orchestrator.errors import BudgetError, ConfigError, DispatchError, ExpertmixError, OverloadedError
from orchestrator.streaming import RunStreams

# The run's fault, not one question's (a bad budget is shared by its whole group, no live
# worker fails every question alike): splitting the batch would repeat the same failure.
_SHARED_FAILURES = (ConfigError, BudgetError, DispatchError)


class Admission:
    """At most ``max_queue`` requests in the gateway at once (waiting or running); beyond it a
    request is refused at once with :class:`OverloadedError` (HTTP 429) and a ``Retry-After``
    estimated from recent request latency."""

    def __init__(self, max_queue: int) -> None:
        if max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {max_queue}", hint="use e.g. 128")
        self.max_queue = max_queue
        self.depth = 0
        self.refused = 0
        self._latency_s = 1.0  # exponentially weighted mean of admitted requests' latency

    def enter(self) -> float:
        """Admit one request (returns its start time) or raise :class:`OverloadedError`."""
        if self.depth >= self.max_queue:
            self.refused += 1
            retry = max(1, math.ceil(self._latency_s))
            raise OverloadedError(f"the gateway is at its queue limit ({self.max_queue} requests waiting or running)",
                                  retry_after_s=retry)
        self.depth += 1
        return time.monotonic()

    def leave(self, started: float) -> None:
        self.depth -= 1
        self._latency_s = 0.8 * self._latency_s + 0.2 * (time.monotonic() - started)


@dataclass(eq=False)
class _Entry:
    """One waiting request: its question, where its result goes, and its token stream (if any)."""

    question: Question
    future: asyncio.Future
    stream: Any = None


@dataclass
class _Group:
    """Requests for one (pipeline, budget) waiting for the next run."""

    orch: Any
    budget: Any
    sampling: Any
    waiting: list[_Entry] = field(default_factory=list)


class LocalRuns:
    """Merges concurrent requests into runs of up to ``max_batch`` on the shared local engines.

    Example::

        runs = LocalRuns(max_batch=32)
        result = await runs.ask(orch, Question.make("What is 6 * 7?", id="r1"), budget=None)
    """

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}", hint="use 1 to run requests one by one")
        self.max_batch = max_batch
        self.runs = 0  # runs started (split reruns included)
        self.abandoned = 0  # requests dropped because their client left before their run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._groups: dict[tuple[int, str, str], _Group] = {}
        self._scheduler: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        """Requests queued for a run that has not started yet."""
        return sum(len(g.waiting) for g in self._groups.values())

    @property
    def lists(self) -> int:
        """Waiting lists currently held (one per pipeline and budget that has waiting requests)."""
        return len(self._groups)

    async def ask(self, orch: Any, question: Question, budget: Any, *, sampling: Any = None,
                  stream: Any = None) -> Result:
        """The result for ``question``, answered in the next run of its pipeline, budget and
        sampling settings (``stream``, a token stream, gets the answer's text as it is made)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio objects belong to one event loop (tests make several)
            self._loop, self._groups, self._scheduler = loop, {}, None
        key = (id(orch), budget.model_dump_json() if budget is not None else "",
               sampling.key() if sampling is not None else "")
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(orch, budget, sampling)
        entry = _Entry(question, loop.create_future(), stream)
        group.waiting.append(entry)
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = loop.create_task(self._schedule())
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._forget(key, entry)
            raise

    def _forget(self, key: tuple[int, str, str], entry: _Entry) -> None:
        group = self._groups.get(key)
        if group is not None and entry in group.waiting:  # not taken into a run yet: drop it
            group.waiting.remove(entry)
            self.abandoned += 1
            if not group.waiting:
                del self._groups[key]

    async def _schedule(self) -> None:
        """Run batches one after another, round-robin over the waiting lists, until none is left."""
        while self._groups:
            key = next(iter(self._groups))
            group = self._groups.pop(key)
            batch = group.waiting[: self.max_batch]
            del group.waiting[: len(batch)]
            if group.waiting:  # the rest waits behind the other lists (fair across budgets)
                self._groups[key] = group
            await self._run(group, batch)

    async def _run(self, group: _Group, batch: list[_Entry]) -> None:
        batch = [e for e in batch if not e.future.done()]  # a client that left during a split rerun
        if not batch:
            return
        self.runs += 1
        extra = {"sampling": group.sampling} if group.sampling is not None else {}
        try:
            results = await group.orch.arun([e.question for e in batch], budget=group.budget, **extra, **_streams(batch))
        except asyncio.CancelledError:  # the gateway is shutting down
            _settle(batch, ExpertmixError("the gateway stopped before this request's run finished",
                                          hint="send it again"))
            raise
        except _SHARED_FAILURES as exc:
            _settle(batch, exc)
        except Exception as exc:  # a poisoned question fails alone: split and rerun the halves
            if len(batch) == 1:
                _settle(batch, exc)
                return
            half = len(batch) // 2
            await self._run(group, batch[:half])
            await self._run(group, batch[half:])
        else:
            by_id = {r.id: r for r in results}
            for e in batch:
                if not e.future.done():
                    e.future.set_result(by_id[e.question.id])


def _streams(batch: list[_Entry]) -> dict[str, Any]:
    """``{"stream": RunStreams}`` for a run whose requests stream, else nothing (no stream argument)."""
    streams = {e.question.id: e.stream for e in batch if e.stream is not None}
    return {"stream": RunStreams(streams)} if streams else {}


def _settle(batch: list[_Entry], exc: BaseException) -> None:
    for e in batch:
        if not e.future.done():
            e.future.set_exception(exc)
