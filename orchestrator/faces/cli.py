"""The ``expertmix`` command line. Subcommands live in small modules that each ``register`` theirs.

``expertmix ask "What is 12 * 7?"`` answers one question through the built-in ``symbolic-moe``
pipeline on local vLLM engines; ``expertmix run Q.jsonl --out A.jsonl`` answers a file, resumably.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.errors import ExpertmixError, InputError

# Subcommand modules, each with register(sub). Order is the order of `expertmix --help`.
COMMAND_MODULES = (
    "orchestrator.faces.cli_models",
    "orchestrator.faces.cli_routing",
    "orchestrator.faces.cli_profile",
    "orchestrator.faces.cli_fleet",
    "orchestrator.faces.cli_pipelines",
    "orchestrator.faces.cli_gateway",
    "orchestrator.faces.cli_eval",
    "orchestrator.faces.cli_fuse",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests that check deploy/ commands exist)."""
    parser = argparse.ArgumentParser(prog="expertmix", description="Route questions to expert LLMs, batch per model, fuse the answers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show engine and library logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_ask(sub)
    _add_run(sub)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that run a pipeline."""
    from orchestrator.faces.sdk import DEFAULT_PIPELINE

    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"built-in name or YAML path (default {DEFAULT_PIPELINE})")
    p.add_argument("--experts", metavar="REGISTRY.yaml", help="expert registry (default: the built-in one)")
    p.add_argument("--executor", choices=["local", "celery"], default="local",
                   help="local: in-process engines (default); celery: the worker fleet (EXPERTMIX_REDIS_URL)")
    p.add_argument("--max-experts", type=int, help="budget: at most this many experts per question")
    p.add_argument("--max-cost", type=float, help="budget: at most this total relative cost per question")
    p.add_argument("--max-tokens", type=int, help="budget: lower every expert's max_tokens to at most this")
    p.add_argument("--seed", type=int, default=0)


def _add_ask(sub: Any) -> None:
    p = sub.add_parser("ask", help="answer one question and show the trace")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--server", metavar="URL",
                   help="ask a running gateway (`expertmix serve`) instead of starting engines here; "
                        "default $EXPERTMIX_SERVER. --pipeline names one of its pipelines (or expert/NAME)")
    add_pipeline_options(p)
    p.set_defaults(func=cmd_ask)


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="answer a JSONL file of {id, question}; resumes after an interruption")
    p.add_argument("questions", type=Path, metavar="QUESTIONS.jsonl")
    p.add_argument("--out", type=Path, required=True, metavar="ANSWERS.jsonl")
    p.add_argument("--chunk-size", type=int, default=64,
                   help="questions per batched run; finished chunks are saved (default 64)")
    add_pipeline_options(p)
    p.set_defaults(func=cmd_run)


def make_orchestrator(args: argparse.Namespace, *, progress: bool = False):
    from orchestrator.faces.sdk import Orchestrator

    return Orchestrator.from_defaults(args.pipeline, experts=args.experts, executor=args.executor,
                                      seed=args.seed, progress=progress)


def budget_of(args: argparse.Namespace) -> dict[str, Any] | None:
    pairs = (("max_experts", args.max_experts), ("max_cost", args.max_cost), ("max_tokens", args.max_tokens))
    budget = {k: v for k, v in pairs if v is not None}
    return budget or None


def cmd_ask(args: argparse.Namespace) -> int:
    from orchestrator.core import check_question

    from orchestrator.faces.remote import ask_server, server_url

    check_question(args.question)  # fail before any model loads
    url = server_url(args.server)
    if url:  # warm engines elsewhere: no engine start here
        result = ask_server(url, args.question, model=args.pipeline, budget=budget_of(args))
    else:
        with make_orchestrator(args, progress=not args.json) as orch:
            result = orch.ask(args.question, budget=budget_of(args))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_result(result))
    return 0


def format_result(result: Any) -> str:
    """Human-readable answer + trace."""
    t = result.trace
    lines = [result.answer, "", "--- trace ---"]
    lines.append(f"pipeline:    {t.pipeline}  (router: {t.router})")
    if t.category:
        lines.append(f"category:    {t.category} (confidence {t.confidence})")
    if t.skills:
        lines.append(f"skills:      {', '.join(t.skills)}")
    lines.append("experts:     " + ", ".join(f"{e.name} ({e.score:g})" for e in result.experts))
    lines.append(f"aggregator:  {result.aggregator}" + (f" on {t.aggregator_model}" if t.aggregator_model else ""))
    loads = ", ".join(f"{m}: {n}" for m, n in t.model_loads.items()) or "none (engines already resident)"
    lines.append(f"model loads: {result.model_loads} ({loads})")
    lines.append("timings:     " + ", ".join(f"{x.node} {x.seconds:.2f}s" for x in t.timings if x.type not in ("input", "output")))
    lines.extend(f"note:        {n}" for n in t.notes)
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    """Answer the file; exit 1 (after answering everything else) when some questions failed."""
    from orchestrator.faces.runfile import check_run_files, run_file

    if args.chunk_size < 1:
        raise InputError("--chunk-size must be >= 1")
    check_run_files(args.questions, args.out)  # refuse a bad input or --out before any model loads
    with make_orchestrator(args, progress=False) as orch:
        summary = run_file(orch, args.questions, args.out, chunk_size=args.chunk_size, budget=budget_of(args))
    print(json.dumps(summary), file=sys.stderr)
    if summary["failed"]:
        print(f"expertmix: {summary['failed']} of {summary['questions']} questions failed: their lines in "
              f"{args.out} have status \"error\" and the reason in `error`; the others are answered "
              "(fix them and rerun the same command: answered ones are kept)", file=sys.stderr)
        return 1
    return 0


def _quiet_libraries(verbose: bool) -> None:
    # vLLM logs to stdout by default, which would corrupt `--json` output: logs belong on stderr.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    for name in ("LiteLLM", "litellm", "httpx", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ExpertmixError as exc:
        print(f"expertmix: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("expertmix: interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
