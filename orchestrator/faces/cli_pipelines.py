"""``expertmix pipelines list|show|validate``: inspect and check pipeline YAML."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("pipelines", help="list, show or validate pipelines")
    psub = p.add_subparsers(dest="action", metavar="ACTION")
    psub.required = True
    psub.add_parser("list", help="built-in pipelines").set_defaults(func=_list)
    show = psub.add_parser("show", help="print a pipeline's YAML (copy it to make your own)")
    show.add_argument("pipeline", help="built-in name or YAML path")
    show.set_defaults(func=_show)
    val = psub.add_parser("validate", help="check a pipeline without running any model")
    val.add_argument("pipeline", help="built-in name or YAML path")
    val.set_defaults(func=_validate)


def _list(args: argparse.Namespace) -> int:
    from orchestrator.pipeline import Pipeline, builtin_pipelines

    for name in builtin_pipelines():
        print(f"{name:16s} {Pipeline.load(name).description}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from orchestrator.pipeline import Pipeline

    print(Pipeline.load(args.pipeline).to_yaml(), end="")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from orchestrator.pipeline import Pipeline

    pipe = Pipeline.load(args.pipeline).validate()
    print(f"ok: {pipe.name}: " + " -> ".join(pipe.execution_order()))
    return 0
