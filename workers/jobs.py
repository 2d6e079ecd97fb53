"""Run records of the fleet: list runs, show one, list batches that failed for good, resume.

A run's status is derived from its stored requests, answers and errors: ``done`` when every
request has an answer, ``failed`` when the rest failed for good, ``running`` otherwise.

Example::

    >>> import fakeredis
    >>> from workers.store import FleetStore
    >>> list_runs(FleetStore(fakeredis.FakeRedis(decode_responses=True)))
    []
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UnknownNameError
from workers.dispatch import group_by_model
from workers.store import FleetStore

if TYPE_CHECKING:
    from workers.celery_dispatch import CeleryDispatcher


def run_summary(store: FleetStore, run: str) -> dict[str, Any]:
    """Counts and status of one run."""
    head = store.r.hgetall(store.k("run", run))
    requested = int(store.r.hlen(store.k("run", run, "requests")))
    done = int(store.r.hlen(store.k("run", run, "results")))
    failed = int(store.r.hlen(store.k("run", run, "errors")))
    cancelled = int(store.r.scard(store.k("run", run, "cancelled")))
    if requested and done >= requested:
        status = "done"
    elif failed and done + failed >= requested:
        status = "failed"
    else:
        status = "running"
    return {
        "run": run, "status": status, "requested": requested, "done": done, "failed": failed,
        "cancelled": cancelled, "duplicates_dropped": int(head.get("duplicates", 0)),
        "created": float(head.get("created", 0) or 0), "updated": float(head.get("updated", 0) or 0),
    }


def list_runs(store: FleetStore, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` runs, newest first."""
    runs = store.r.zrevrange(store.k("runs"), 0, limit - 1)
    return [run_summary(store, run) for run in runs]


def show_run(store: FleetStore, run: str) -> dict[str, Any]:
    """One run: its summary, its batches, and its failed requests."""
    if store.r.zscore(store.k("runs"), run) is None:
        known = store.r.zrevrange(store.k("runs"), 0, 9)
        raise UnknownNameError("run", run, known, where="this Redis (newest 10 shown)")
    out = run_summary(store, run)
    batch_ids = sorted(store.r.smembers(store.k("run", run, "batches")))
    batches = [{"id": b, **store.batch(b)} for b in batch_ids]
    for b in batches:
        b.pop("keys", None)
    out["batches"] = sorted(batches, key=lambda b: float(b.get("started", 0) or 0))
    out["errors"] = store.errors(run)
    return out


def failed_batches(store: FleetStore, *, limit: int = 50) -> list[dict[str, Any]]:
    """Batches that failed for good, newest first."""
    return [json.loads(x) for x in store.r.lrange(store.k("failed"), 0, limit - 1)]


def run_answers(store: FleetStore, run: str) -> dict[str, str]:
    """key -> answer text of every stored answer of ``run``."""
    raw = store.r.hgetall(store.k("run", run, "results"))
    return {k: json.loads(v)["text"] for k, v in sorted(raw.items())}


def resume_run(dispatcher: "CeleryDispatcher", run: str, *, progress: bool = False) -> dict[str, Any]:
    """Send a run's unanswered requests again and wait for them; answered ones are kept."""
    store = dispatcher.store
    show_run(store, run)  # raises for an unknown run
    missing = dispatcher.unanswered(store.run_requests(run))  # a cancelled (empty) answer counts as missing
    if missing:
        dispatcher.run_batches(group_by_model(missing), label=f"resume {run}", progress=progress)
    return {**run_summary(store, run), "resent": len(missing)}
