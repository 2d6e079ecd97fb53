"""CLI for the Celery fleet: ``expertmix worker`` and ``expertmix jobs``.

::

    expertmix worker --models smollm2-135m,gemma3-270m [--concurrency 1] [--experts my.yaml]
    expertmix jobs list | show RUN | failed | workers | resume RUN

Every command reads ``EXPERTMIX_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and the other
``EXPERTMIX_*`` fleet settings (see ``workers/settings.py``). Runs standalone as
``python -m orchestrator.faces.cli_fleet ...`` too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from orchestrator.errors import ExpertmixError


def register(sub: Any) -> None:
    """Add ``worker`` and ``jobs`` to the ``expertmix`` subcommands."""
    w = sub.add_parser("worker", help="serve some models' queues on the Celery fleet (loads them once)",
                       description="Consume the queues of --models, with their engines loaded once at start.")
    w.add_argument("--models", required=True, help="comma-separated model names (see `expertmix models`)")
    w.add_argument("--concurrency", type=int, default=1,
                   help="worker processes, each holding its own engines (default 1: one per GPU)")
    w.add_argument("--experts", default=None, help="expert registry YAML (default: the built-in one)")
    w.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")
    w.set_defaults(func=_cmd_worker)

    j = sub.add_parser("jobs", help="inspect and resume runs on the Celery fleet")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True, metavar="{list,show,failed,workers,resume}")
    ls = jsub.add_parser("list", help="recent runs with their status")
    ls.add_argument("--limit", type=int, default=20)
    show = jsub.add_parser("show", help="one run: counts, batches, errors")
    show.add_argument("run")
    show.add_argument("--answers", action="store_true", help="also print every stored answer")
    failed = jsub.add_parser("failed", help="batches that failed for good")
    failed.add_argument("--limit", type=int, default=50)
    workers = jsub.add_parser("workers", help="live workers and the models they serve")
    workers.add_argument("--experts", default=None, help="expert registry YAML (default: the built-in one)")
    resume = jsub.add_parser("resume", help="send a run's unanswered requests again and wait for them")
    resume.add_argument("run")
    resume.add_argument("--experts", default=None, help="expert registry YAML (default: the built-in one)")
    for p in (ls, show, failed, workers, resume):
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=_cmd_jobs)


def _registry(path: str | None) -> Any:
    from orchestrator.config import ExpertRegistry

    return ExpertRegistry.from_yaml(path) if path else ExpertRegistry.default()


def _models_arg(raw: str) -> list[str]:
    from orchestrator.errors import InputError

    models = [m.strip() for m in raw.split(",") if m.strip()]
    if not models:
        raise InputError("--models is empty", hint="pass model names, e.g. --models smollm2-135m,gemma3-270m")
    return models


def _cmd_worker(args: argparse.Namespace) -> int:
    from workers.worker import run_worker

    return run_worker(_models_arg(args.models), registry=_registry(args.experts),
                      concurrency=args.concurrency, loglevel=args.loglevel)


def _cmd_jobs(args: argparse.Namespace) -> int:
    from workers import jobs
    from workers.settings import FleetSettings
    from workers.store import FleetStore

    settings = FleetSettings.from_env()
    store = FleetStore.from_url(settings.redis_url, ttl_s=settings.result_ttl_s)
    store.ping(settings.redis_url)
    if args.jobs_cmd == "list":
        data: Any = jobs.list_runs(store, limit=args.limit)
    elif args.jobs_cmd == "show":
        data = jobs.show_run(store, args.run)
        if args.answers:
            data["answers"] = jobs.run_answers(store, args.run)
    elif args.jobs_cmd == "failed":
        data = jobs.failed_batches(store, limit=args.limit)
    elif args.jobs_cmd == "workers":
        from workers.fleet import all_workers

        data = all_workers(store, _registry(args.experts).used_models(), ttl_s=settings.worker_ttl_s)
    else:
        from workers.celery_dispatch import CeleryDispatcher

        dispatcher = CeleryDispatcher.from_env(_registry(args.experts))
        try:
            data = jobs.resume_run(dispatcher, args.run, progress=sys.stderr.isatty())
        finally:
            dispatcher.close()
    print(json.dumps(data, indent=2) if args.json else _table(args.jobs_cmd, data))
    return 0


def _table(cmd: str, data: Any) -> str:
    if cmd in ("show", "resume"):
        return "\n".join(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in data.items())
    if not data:
        return {"list": "no runs", "failed": "no failed batches", "workers": "no live workers"}[cmd]
    if cmd == "list":
        rows = [f"{r['run']:<24} {r['status']:<8} {r['done']}/{r['requested']} answered, {r['failed']} failed, "
                f"updated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['updated']))}" for r in data]
    elif cmd == "failed":
        rows = [f"{f['batch']} {f['model']}: {len(f['keys'])} request(s): {f['error']}" for f in data]
    else:
        rows = [f"{w['id']:<32} models={','.join(w.get('models', []))} loads={w.get('loads')} "
                f"batches={w.get('batches')}" for w in data]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m orchestrator.faces.cli_fleet``)."""
    parser = argparse.ArgumentParser(prog="expertmix")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ExpertmixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
