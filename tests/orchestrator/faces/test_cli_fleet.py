"""Unit tests of the fleet CLI: parsing, argument errors, and failures before any process starts."""

from __future__ import annotations

import argparse

import pytest

from orchestrator.faces import cli_fleet
from orchestrator.config import ExpertRegistry
from orchestrator.errors import ConfigError, DispatchError, InputError, ModelNotFoundError

pytestmark = pytest.mark.unit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="expertmix")
    cli_fleet.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_worker_and_jobs_parse():
    args = _parser().parse_args(["worker", "--models", "smollm2-135m,gemma3-270m", "--concurrency", "2"])
    assert (args.models, args.concurrency, args.func) == ("smollm2-135m,gemma3-270m", 2, cli_fleet._cmd_worker)
    for argv in (["jobs", "list"], ["jobs", "show", "r1", "--answers"], ["jobs", "failed", "--json"],
                 ["jobs", "workers"], ["jobs", "resume", "r1"]):
        assert _parser().parse_args(argv).func is cli_fleet._cmd_jobs


def test_jobs_needs_a_subcommand():
    with pytest.raises(SystemExit):
        _parser().parse_args(["jobs"])


def test_empty_models_is_an_input_error():
    with pytest.raises(InputError, match="--models"):
        cli_fleet._models_arg(" , ")


def test_worker_rejects_unknown_models_and_missing_folders(tmp_path, monkeypatch):
    from workers.worker import check_models

    reg = ExpertRegistry.default()
    with pytest.raises(ConfigError, match="expertmix models"):
        check_models(reg, ["nope"])
    monkeypatch.setenv("EXPERTMIX_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="setup-models"):
        check_models(reg, ["smollm2-135m"])


def test_jobs_against_an_unreachable_redis_says_how_to_fix(monkeypatch, capsys):
    monkeypatch.setenv("EXPERTMIX_REDIS_URL", "redis://127.0.0.1:1/0")
    assert cli_fleet.main(["jobs", "list"]) == DispatchError.exit_code
    assert "EXPERTMIX_REDIS_URL" in capsys.readouterr().err
