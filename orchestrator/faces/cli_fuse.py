"""``expertmix fuse train`` / ``expertmix fuse eval``: the learned latent fuser (docs/latent.md).

Example::

    expertmix fuse train --data arc_easy,sciq,boolq,piqa --per-task 40 --out fusers/default
    expertmix fuse eval --fuser fusers/default --data arc_easy,sciq --per-task 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError


def register(sub: Any) -> None:
    """Add the ``fuse`` subcommand group."""
    p = sub.add_parser("fuse", help="train or score a learned latent fuser (Mixture of Thoughts)")
    fsub = p.add_subparsers(dest="fuse_command", metavar="ACTION")
    fsub.required = True
    t = fsub.add_parser("train", help="train the interaction layers (experts frozen) and save the fuser")
    t.add_argument("--data", required=True, help="task names (arc_easy,sciq,boolq,piqa,basic_skills) or a JSONL "
                   "file of {question, choices, gold}")
    t.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the fuser, loss.png and report go")
    t.add_argument("--models", default="qwen-coder-0.5b,smollm2-135m,gemma3-270m",
                   help="registry models, primary first (default: %(default)s)")
    t.add_argument("--per-task", type=int, default=60, help="training items per task (train split; default 60)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--max-minutes", type=float, default=9.0, help="stop and save when spent (default 9)")
    t.add_argument("--points", type=int, default=3, help="interaction layers (default 3)")
    t.add_argument("--shared", type=int, default=256, help="shared latent width (default 256)")
    t.add_argument("--prompt-only", action="store_true", help="Cache-to-Cache style: fuse on the prompt only")
    t.add_argument("--eval-per-task", type=int, default=0, help="also score N held-out items per task")
    t.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    t.add_argument("--check-every", type=int, default=40, metavar="N",
                   help="score the dev items (1 in 5 train-split items, never trained on) every N items; the best "
                        "checkpoint is kept, the untrained one (= the primary) included (default 40)")
    t.add_argument("--no-dev", action="store_true", help="train on every item and keep the last state")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    e = fsub.add_parser("eval", help="held-out accuracy of a trained fuser vs its primary alone")
    e.add_argument("--fuser", type=Path, required=True, metavar="DIR")
    e.add_argument("--data", default="arc_easy,sciq,boolq,piqa")
    e.add_argument("--per-task", type=int, default=50)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from aggregators.latent.recipe import train_recipe
    from aggregators.latent.train import TrainConfig

    if args.per_task < 1 or args.epochs < 1 or args.max_minutes <= 0:
        raise InputError("--per-task and --epochs must be >= 1 and --max-minutes > 0")
    if args.check_every < 1:
        raise InputError("--check-every must be >= 1")
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, max_seconds=args.max_minutes * 60, seed=args.seed,
                      check_every=args.check_every)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = train_recipe(models, args.data, out=args.out, per_task=args.per_task, cfg=cfg, points=args.points,
                          shared=args.shared, prompt_only=args.prompt_only, device=args.device,
                          eval_per_task=args.eval_per_task, dev_checks=not args.no_dev)
    print(json.dumps(report, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from aggregators.latent.recipe import eval_recipe

    print(json.dumps(eval_recipe(args.fuser, args.data, per_task=args.per_task, device=args.device), indent=2))
    return 0
