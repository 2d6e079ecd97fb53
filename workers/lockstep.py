"""Run several systems' pipelines in lockstep so each model gets one batch per step for all of them.

Per-expert batching applied to evaluation: every system runs its own pipeline in its own thread
and calls :meth:`LockstepDispatcher.run_batches` as usual. A call waits until every live system is
either waiting too or finished; then the waiting calls' groups are merged per model and each model
gets ONE batch on the inner dispatcher (so one engine, loaded once, serves all systems). Requests
with identical content (model, prompt, sampling) are generated once and shared, also across steps:
a single expert and an ensemble that recruits it ask the same thing.

Cost accounting: a merged batch's time is shared among its distinct requests by tokens, and each
system is charged the share of every request it asked for (a shared request is charged to each
asker, as if it had run alone), so per-system times stay comparable.

Example::

    >>> lock = LockstepDispatcher(inner=None, systems=["a", "b"])   # inner: e.g. a LocalDispatcher
    >>> lock.participant("a").leave()                               # "a" is done; "b" no longer waits for it
    >>> lock.steps
    []
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from orchestrator.core import Completion, GenerationRequest


def content_key(req: GenerationRequest) -> str:
    """What makes two requests the same generation (their keys differ per system)."""
    body = {"model": req.model, "messages": req.messages, "prompt": req.prompt, "sampling": req.sampling.model_dump()}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class _Waiting:
    system: str
    groups: dict[str, list[GenerationRequest]]
    label: str
    result: dict[str, Completion] | None = None
    error: BaseException | None = None


@dataclass
class SystemCost:
    """What one system consumed: generation seconds charged to it, tokens, requests, waits."""

    generate_s: float = 0.0
    completion_tokens: int = 0
    requests: int = 0
    waited_s: float = 0.0
    per_model_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))


class LockstepDispatcher:
    """Barrier over the systems' dispatcher calls; one merged batch per model per step."""

    def __init__(self, inner, systems: list[str], *, progress: bool = False) -> None:
        self.inner = inner
        self.progress = progress
        self._live = set(systems)
        self._waiting: list[_Waiting] = []
        self._cond = threading.Condition()
        self._flushing = False
        self._cache: dict[str, Completion] = {}
        self._cache_cost: dict[str, float] = {}
        self.costs: dict[str, SystemCost] = {s: SystemCost() for s in systems}
        self.steps: list[dict[str, int]] = []  # per step: model -> distinct requests in its batch
        self.shared_requests = 0

    def participant(self, system: str) -> "Participant":
        """The dispatcher one system's pipeline uses (its ``run_batches`` joins the barrier)."""
        return Participant(self, system)

    # ---- barrier -------------------------------------------------------------------------
    def _call(self, system: str, groups: dict[str, list[GenerationRequest]], label: str) -> dict[str, Completion]:
        t0 = time.perf_counter()
        slot = _Waiting(system, groups, label)
        with self._cond:
            self._waiting.append(slot)
            self._maybe_flush_locked()
            while slot.result is None and slot.error is None:
                self._cond.wait()
        self.costs[system].waited_s += time.perf_counter() - t0
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _leave(self, system: str) -> None:
        with self._cond:
            self._live.discard(system)
            self._maybe_flush_locked()

    def _maybe_flush_locked(self) -> None:
        """Called with the lock held: the last system to arrive (or leave) runs the step."""
        waiting_systems = {w.system for w in self._waiting}
        if self._flushing or not self._waiting or not self._live <= waiting_systems:
            return
        batch, self._waiting, self._flushing = self._waiting, [], True
        self._cond.release()
        try:
            self._run_step(batch)
        except BaseException as exc:  # every waiting system sees the failure, none hangs
            for w in batch:
                if w.result is None:
                    w.error = exc
        finally:
            self._cond.acquire()
            self._flushing = False
            self._cond.notify_all()
        self._maybe_flush_locked()  # systems that arrived during the step

    # ---- one step ------------------------------------------------------------------------
    def _run_step(self, batch: list[_Waiting]) -> None:
        todo: dict[str, dict[str, GenerationRequest]] = defaultdict(dict)  # model -> content key -> request
        for w in batch:
            for model, reqs in w.groups.items():
                for r in reqs:
                    ck = content_key(r)
                    if ck in self._cache or ck in todo[model]:
                        self.shared_requests += 1
                    else:
                        todo[model][ck] = r
        groups = {m: list(reqs.values()) for m, reqs in todo.items() if reqs}
        self.steps.append({m: len(g) for m, g in groups.items()})
        label = "+".join(sorted({w.label for w in batch}))
        for model, reqs in groups.items():  # one inner call per model so its time is measured alone
            t0 = time.perf_counter()
            done = self.inner.run_batches({model: reqs}, label=f"{label} {model}", progress=self.progress)
            seconds = time.perf_counter() - t0
            weights = {ck: _tokens(done[r.key]) for ck, r in todo[model].items()}
            total = sum(weights.values()) or 1
            for ck, r in todo[model].items():
                self._cache[ck] = done[r.key]
                self._cache_cost[ck] = seconds * weights[ck] / total
        for w in batch:
            w.result = self._deliver(w)

    def _deliver(self, w: _Waiting) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        cost = self.costs[w.system]
        for model, reqs in w.groups.items():
            for r in reqs:
                ck = content_key(r)
                comp = self._cache[ck].model_copy(update={"key": r.key})
                out[r.key] = comp
                cost.generate_s += self._cache_cost[ck]
                cost.per_model_s[model] += self._cache_cost[ck]
                cost.completion_tokens += comp.completion_tokens
                cost.requests += 1
        return out

    # ---- the Dispatcher protocol's other methods -------------------------------------------
    def model_loads(self) -> dict[str, int]:
        return dict(self.inner.model_loads())

    def close(self) -> None:
        """The inner dispatcher's engines belong to the caller; nothing to release here."""

    def batches_per_model(self) -> Counter[str]:
        """How many batches each model got over all steps."""
        return Counter(m for step in self.steps for m in step)


def _tokens(c: Completion) -> int:
    return max(1, c.prompt_tokens + c.completion_tokens)


class Participant:
    """One system's view of the lockstep dispatcher (implements the Dispatcher protocol)."""

    def __init__(self, parent: LockstepDispatcher, system: str) -> None:
        self.parent, self.system = parent, system

    def run_batches(self, groups: dict[str, list[GenerationRequest]], *, label: str = "experts",
                    progress: bool = False) -> dict[str, Completion]:
        groups = {m: r for m, r in groups.items() if r}
        if not groups:
            return {}
        return self.parent._call(self.system, groups, label)

    def leave(self) -> None:
        """This system is done: the others no longer wait for it."""
        self.parent._leave(self.system)

    def model_loads(self) -> dict[str, int]:
        return self.parent.model_loads()

    def close(self) -> None:
        self.leave()
