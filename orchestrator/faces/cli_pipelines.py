"""``expertmix pipelines list|show|validate``: inspect and check pipeline YAML."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("pipelines", help="list, show or validate pipelines")
    psub = p.add_subparsers(dest="action", metavar="ACTION")
    psub.required = True
    psub.add_parser("list", help="built-in pipelines").set_defaults(func=_list)
    show = psub.add_parser("show", help="print a pipeline's YAML (copy it to make your own) or a picture of its graph")
    show.add_argument("pipeline", help="built-in name or YAML path")
    show.add_argument("--format", choices=("yaml", "mermaid", "png"), default="yaml",
                      help="yaml (default), mermaid (a flowchart for Markdown), png (an image; needs --out)")
    show.add_argument("--out", help="write to this file instead of stdout (required for png)")
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
    from pathlib import Path

    from orchestrator.draw import to_mermaid, to_png
    from orchestrator.errors import InputError
    from orchestrator.pipeline import Pipeline

    pipe = Pipeline.load(args.pipeline)
    if args.format == "png":
        if not args.out:
            raise InputError("--format png writes an image: give it a file", hint="add --out graph.png")
        pipe.validate()
        _write(Path(args.out), to_png(pipe))
        print(f"wrote {args.out}")
        return 0
    text = to_mermaid(pipe.validate()) if args.format == "mermaid" else pipe.to_yaml()
    if args.out:
        _write(Path(args.out), text.encode("utf-8"))
    else:
        print(text, end="")
    return 0


def _write(path, data: bytes) -> None:
    from orchestrator.errors import InputError

    if path.is_dir():
        raise InputError(f"{path}: is a directory", hint="give --out a file name, e.g. graph.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _validate(args: argparse.Namespace) -> int:
    from orchestrator.pipeline import Pipeline

    pipe = Pipeline.load(args.pipeline).validate()
    print(f"ok: {pipe.name}: " + " -> ".join(pipe.execution_order()))
    return 0
