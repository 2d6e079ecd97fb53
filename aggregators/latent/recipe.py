"""``expertmix fuse train`` / ``fuse eval`` as domain functions: data in, trained fuser + report out.

Example::

    >>> report = train_recipe(["qwen-coder-0.5b", "smollm2-135m", "gemma3-270m"], "arc_easy,sciq",
    ...                       out="fusers/default", per_task=60)                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aggregators.latent.data import MC_TASKS, McItem, load_mix
from aggregators.latent.train import TrainConfig, evaluate, plot_losses, train_fuser
from orchestrator.config import ExpertRegistry
from orchestrator.errors import InputError

DEFAULT_GROUP = ("qwen-coder-0.5b", "smollm2-135m", "gemma3-270m")


def read_items(data: str, *, split: str, per_task: int, seed: int) -> list[McItem]:
    """``data`` is a JSONL file of ``{question, choices, gold}`` or comma-separated task names."""
    path = Path(data).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise InputError(f"--data {data}: no such file", hint=f"give a JSONL file or task names from {', '.join(MC_TASKS)}")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        try:
            return [McItem(id=str(r.get("id", i)), task=str(r.get("task", path.stem)), question=r["question"],
                           choices=list(r["choices"]), gold=int(r["gold"])) for i, r in enumerate(rows)][: per_task]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"--data {data}: every line needs question, choices and gold ({exc})") from None
    tasks = [t.strip() for t in data.split(",") if t.strip()]
    return load_mix(tasks, split=split, per_task=per_task, seed=seed)  # type: ignore[arg-type]


def _load_group(models: list[str], device: str, registry: ExpertRegistry):
    from workers.fusion.lm import load_lm, set_torch_threads

    set_torch_threads()  # `expertmix fuse` runs fusion only in its process

    if len(models) < 2:
        raise InputError("latent fusion needs a primary and at least one peer", hint="--models PRIMARY,PEER[,PEER]")
    return [load_lm(registry.model(m), device) for m in models]


DEV_EVERY = 5


def train_recipe(models: list[str], data: str, *, out: str | Path, per_task: int = 60, cfg: TrainConfig | None = None,
                 points: int = 3, shared: int = 256, heads: int = 4, prompt_only: bool = False, device: str = "auto",
                 eval_per_task: int = 0, registry: ExpertRegistry | None = None, progress: bool = True,
                 dev_checks: bool = True) -> dict[str, Any]:
    """Train a fuser for ``models`` (primary first) on ``data``'s train split and save it to ``out``.

    ``dev_checks``: one train-split item in :data:`DEV_EVERY` is held out of training and picks the
    checkpoint (the untrained fuser, i.e. the primary, included): see :func:`train_fuser`."""
    from workers.fusion.mot import LatentFuser

    registry = registry or ExpertRegistry.default()
    cfg = cfg or TrainConfig()
    lms = _load_group(models, device, registry)
    items = read_items(data, split="train", per_task=per_task, seed=cfg.seed)
    # every DEV_EVERY-th train-split item is a dev item: never trained on, it picks the checkpoint
    dev = items[DEV_EVERY - 1::DEV_EVERY] if dev_checks else []
    fit = [it for i, it in enumerate(items) if not dev or (i + 1) % DEV_EVERY]
    fuser = LatentFuser(lms[0], lms[1:], points=points, shared=shared, heads=heads, prompt_only=prompt_only)
    try:
        report = train_fuser(fuser, fit, cfg, progress=progress, dev=dev)
        out_dir = Path(out).expanduser()
        fuser.save(out_dir, extra={"data": data, "train_items": len(fit), "dev_items": len(dev),
                                   "train_seconds": report["seconds"]})
        plot_losses(report["losses"], out_dir / "loss.png", title=f"{models[0]} + {', '.join(models[1:])}")
        summary = {k: v for k, v in report.items() if k != "losses"}
        summary.update(out=str(out_dir), loss_first20=_mean(report["losses"][:20]), loss_last20=_mean(report["losses"][-20:]))
        if eval_per_task:
            summary["eval"] = evaluate(fuser, read_items(data, split="test", per_task=eval_per_task, seed=cfg.seed + 1),
                                       progress=progress)
        (out_dir / "train_report.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        fuser.close()


def eval_recipe(fuser_dir: str | Path, data: str, *, per_task: int = 50, device: str = "auto", seed: int = 1,
                registry: ExpertRegistry | None = None, progress: bool = True) -> dict[str, Any]:
    """Held-out accuracy of a saved fuser and of its primary alone (95% Wilson CIs)."""
    from workers.fusion.mot import LatentFuser, read_config

    registry = registry or ExpertRegistry.default()
    cfg = read_config(fuser_dir)
    lms = _load_group([cfg["primary"], *cfg["peers"]], device, registry)
    fuser = LatentFuser.load(fuser_dir, {lm.name: lm for lm in lms})
    try:
        return {"fuser": str(fuser_dir), "data": data, **evaluate(fuser, read_items(data, split="test", per_task=per_task,
                                                                                      seed=seed), progress=progress)}
    finally:
        fuser.close()


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0
