"""CLI for the REST gateway: ``expertmix serve``.

::

    expertmix serve [--host 127.0.0.1] [--port 8000] [--executor local|celery]
                    [--experts REGISTRY.yaml] [--pipeline NAME|PATH.yaml] [--max-batch 32]
                    [--max-queue 128] [--max-connections 1024] [--header-timeout 10] [--body-timeout 10]

The default pipeline is built (and validated) before the server starts, so a bad option fails at
once with the usual one-line error; engines load on the first request that needs them and are
released when the server stops (Ctrl-C / SIGTERM). See docs/gateway.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.errors import InputError


def register(sub: Any) -> None:
    """Add ``serve`` to the ``expertmix`` subcommands."""
    from orchestrator.faces.sdk import DEFAULT_PIPELINE

    p = sub.add_parser("serve", help="run the OpenAI-compatible REST gateway (POST /v1/chat/completions)",
                       description="Serve pipelines over HTTP: the request's `model` names a pipeline "
                                   "(`expertmix` = --pipeline).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--executor", choices=["local", "celery"], default="local",
                   help="local: in-process engines (default); celery: the worker fleet (EXPERTMIX_REDIS_URL)")
    p.add_argument("--experts", metavar="REGISTRY.yaml", help="expert registry (default: the built-in one)")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE,
                   help=f"default pipeline, served as model `expertmix`: built-in name or YAML path (default {DEFAULT_PIPELINE})")
    p.add_argument("--max-batch", type=int, default=32,
                   help="local executor: requests arriving during a run are merged into the next one, "
                        "up to this many questions (default 32; 1 runs them one by one)")
    p.add_argument("--max-queue", type=int, default=128,
                   help="requests waiting or running at once; beyond it a request gets 429 with Retry-After "
                        "(default 128)")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="open connections at once; beyond it a new one gets 503 and is closed (default 1024)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a connection may take to send a request's headers (default 10)")
    p.add_argument("--body-timeout", type=float, default=10.0,
                   help="seconds a request body may stall between reads before 408 (default 10)")
    p.add_argument("--batch-dir", metavar="DIR",
                   help="where batch jobs (/v1/files, /v1/batches) are kept across restarts "
                        "(default $EXPERTMIX_BATCH_DIR or ~/.local/state/expertmix/batches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default info)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Build the default orchestrator, then serve until interrupted."""
    import uvicorn

    from orchestrator.faces.gateway import api_keys_from_env, create_app, guarded_protocol
    from orchestrator.faces.sdk import Orchestrator

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a port number", hint="use 1-65535 (0 picks a free one)")
    for option, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                          ("--max-connections", args.max_connections)):
        if value < 1:
            raise InputError(f"{option} {value} is below 1", hint=f"give {option} a positive number")
    for option, value in (("--header-timeout", args.header_timeout), ("--body-timeout", args.body_timeout)):
        if not value > 0:
            raise InputError(f"{option} {value} is not a positive number of seconds", hint="e.g. 10")
    keys = api_keys_from_env()  # a bad key file fails here, before the server starts
    orch = Orchestrator.from_defaults(args.pipeline, experts=args.experts, executor=args.executor, seed=args.seed)
    app = create_app(orch, max_batch=args.max_batch, max_queue=args.max_queue,  # closes the engines at shutdown
                     body_timeout_s=args.body_timeout, api_keys=keys, batch_dir=args.batch_dir)
    auth = f"{len(keys)} API key(s)" if keys else "no API key (open)"
    print(f"expertmix gateway on http://{args.host}:{args.port} (default pipeline {orch.pipeline.name}, "
          f"executor {args.executor}, {auth}); POST /v1/chat/completions", flush=True)
    protocol = guarded_protocol(header_timeout_s=args.header_timeout, max_connections=args.max_connections)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=protocol)
    return 0
