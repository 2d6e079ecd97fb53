"""deploy/: the compose file and Kubernetes manifests parse, and every command they run exists in the CLI."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Commands other engineers are still landing (gateway, model setup): checked as soon as they are
# registered; until then the test warns instead of failing.
NOT_LANDED = {"serve", "setup-models"}


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _k8s_docs() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("containers", [])


def _commands() -> list[tuple[str, list[str]]]:
    """Commands of every service/container built from the expertmix image (Redis runs its own)."""
    out = [(f"compose:{name}", svc["command"]) for name, svc in _compose()["services"].items()
           if svc.get("image", "").startswith("expertmix")]
    for doc in _k8s_docs():
        for c in _containers(doc):
            if c["image"].startswith("expertmix"):
                out.append((f"k8s:{doc['kind']}/{doc['metadata']['name']}", c["command"]))
    return out


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_compose_has_persistent_redis_gateway_and_cpu_and_gpu_workers():
    services = _compose()["services"]
    assert "--appendonly" in services["redis"]["command"] and services["redis"]["volumes"]
    assert services["gateway"]["command"][:2] == ["expertmix", "serve"]
    workers = {n: s for n, s in services.items() if s.get("command", [None, None])[1] == "worker"}
    gpu = [s for s in workers.values() if "deploy" in s]
    assert len(workers) >= 3 and gpu
    assert gpu[0]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_k8s_has_redis_gateway_and_a_gpu_worker_deployment_per_model_group():
    docs = _k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "expertmix-redis") in kinds and ("Deployment", "expertmix-gateway") in kinds
    workers = [d for d in docs if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]]
    groups = [c["command"][c["command"].index("--models") + 1] for d in workers for c in _containers(d)]
    assert len(set(groups)) == len(groups) >= 2
    for d in workers:
        assert _containers(d)[0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_every_command_is_a_real_expertmix_subcommand_with_valid_arguments():
    from orchestrator.faces.cli import build_parser
    from orchestrator.config import ExpertRegistry

    parser = build_parser()
    subs = _subcommands(parser)
    models = set(ExpertRegistry.default().models)
    checked = 0
    for where, cmd in _commands():
        assert cmd[0] == "expertmix", f"{where}: runs {cmd[0]!r}, not the expertmix CLI"
        if cmd[1] in NOT_LANDED and cmd[1] not in subs:
            warnings.warn(f"{where}: `expertmix {cmd[1]}` is not registered yet; not checked", stacklevel=1)
            continue
        assert cmd[1] in subs, f"{where}: `expertmix {cmd[1]}` is not a CLI subcommand ({sorted(subs)})"
        args = parser.parse_args(cmd[1:])  # argparse exits (SystemExit) on unknown options
        assert callable(getattr(args, "func", None)), where
        if cmd[1] == "worker":
            assert set(args.models.split(",")) <= models, f"{where}: unknown model in {args.models}"
        checked += 1
    assert checked >= 5


def test_unknown_commands_are_caught():
    from orchestrator.faces.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--no-such-flag", "x"])
