"""``expertmix setup-models`` (convert the local models) and ``expertmix models`` (what is ready)."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from orchestrator.config import ExpertRegistry, ModelSpec


def register(sub: Any) -> None:
    """Add ``setup-models`` and ``models`` to the CLI."""
    p = sub.add_parser("setup-models", help="convert the small PyPI-shipped models for vLLM (cached)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="only these models (recipe names like gemma3-270m, or registry model names)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_setup_models)

    p = sub.add_parser("models", help="list the models the experts use, with ready/missing state")
    p.add_argument("--experts", metavar="REGISTRY.yaml", help="expert registry (default: the built-in one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)


def cmd_setup_models(args: argparse.Namespace) -> int:
    """Convert the requested (default: all) local models; print where they are."""
    from workers.model_setup import ensure_models

    names = _recipe_names(args.only) if args.only else None
    t0 = time.perf_counter()
    paths = ensure_models(names, progress=not args.quiet)
    for name, folder in paths.items():
        print(f"{name:30s} ready  {folder}")
    if not args.quiet:
        print(f"{len(paths)} model(s) ready in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """One row per model the registry's experts (or aggregator) use."""
    registry = ExpertRegistry.from_yaml(args.experts) if args.experts else ExpertRegistry.default()
    rows = model_rows(registry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'MODEL':18s} {'BACKEND':8s} {'STATE':16s} {'GiB':>4s}  EXPERTS")
    for r in rows:
        print(f"{r['name']:18s} {r['backend']:8s} {r['state']:16s} {r['memory_gib']:4.1f}  {', '.join(r['experts'])}")
    missing = [r["name"] for r in rows if r["state"] == "missing"]
    if missing:
        print(f"\nmissing: {', '.join(missing)} - run `expertmix setup-models`")
    return 0


def model_rows(registry: ExpertRegistry) -> list[dict[str, Any]]:
    """``[{name, backend, state, memory_gib, experts, where}]`` for every used model."""
    rows = []
    for name in registry.used_models():
        spec = registry.model(name)
        experts = sorted(e.name for e in registry.experts.values() if e.model == name)
        if registry.aggregator_model == name:
            experts.append("(aggregator)")
        rows.append({
            "name": name,
            "backend": spec.backend,
            "state": model_state(spec),
            "memory_gib": spec.memory_gib,
            "experts": experts,
            "where": spec.api_base or spec.litellm_model if spec.backend in _REMOTE else str(spec.resolved_path()),
        })  # fmt: skip
    return rows


_REMOTE = ("litellm", "openai")  # backends that call a server: no local folder


def model_state(spec: ModelSpec) -> str:
    """``ready`` / ``missing`` for local folders; ``remote`` or ``remote (no KEY)`` for litellm and openai."""
    if spec.backend in _REMOTE:
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            return f"remote (no {spec.api_key_env})"
        return "remote"
    from workers.model_setup import is_ready

    folder = spec.resolved_path()
    if spec.local and folder.name == spec.local:
        return "ready" if is_ready(folder) else "missing"
    return "ready" if (folder / "config.json").is_file() else "missing"


def _recipe_names(names: list[str]) -> list[str]:
    """Accept recipe names and default-registry model names (``smollm2-135m``)."""
    from orchestrator.errors import UnknownNameError
    from workers.model_setup import LOCAL_RECIPES

    aliases = {n: s.local for n, s in ExpertRegistry.default().models.items() if s.local}
    out = []
    for name in names:
        recipe = name if name in LOCAL_RECIPES else aliases.get(name)
        if recipe is None:
            raise UnknownNameError("local model", name, sorted({*LOCAL_RECIPES, *aliases}))
        out.append(recipe)
    return out
