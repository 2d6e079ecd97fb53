"""`expertmix profile` end to end on fake-backend models: files written, resume, errors."""

import json

import pytest
import yaml

import workers.backends.fake  # noqa: F401  (registers the "fake" backend)
from orchestrator.faces.cli import main

pytestmark = pytest.mark.unit


@pytest.fixture
def setup(tmp_path):
    registry = tmp_path / "experts.yaml"
    registry.write_text(yaml.safe_dump({
        "models": {"m1": {"backend": "fake", "path": "m1"}, "m2": {"backend": "fake", "path": "m2", "chat": False}},
        "experts": {"a": {"model": "m1"}, "b": {"model": "m2"}},
    }))
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"{i} + 1 = ?", "answer": str(i + 1),
                                        "keywords": ["arithmetic"]}) + "\n" for i in range(5)))
    return registry, data, tmp_path / "out"


def test_profile_command_writes_profiles_table_and_aggregator(setup, capsys):
    registry, data, out = setup
    assert main(["profile", "--data", str(data), "--experts", str(registry), "--out", str(out), "--limit", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["questions"] == 4 and summary["answers"] == 8
    assert sorted(p.name for p in out.glob("*.profile.json")) == ["a.profile.json", "b.profile.json"]
    assert len((out / "correctness.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "aggregator.json").read_text())["prompts"] == 0  # echoes: no 1-right/2-wrong sets
    # a rerun resumes: nothing left to answer
    assert main(["profile", "--data", str(data), "--experts", str(registry), "--out", str(out), "--limit", "4",
                 "--no-aggregator"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] == 8


def test_profile_command_reports_bad_input(setup, capsys):
    registry, data, out = setup
    assert main(["profile", "--data", "missing.jsonl", "--experts", str(registry), "--out", str(out)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(["profile", "--data", str(data), "--experts", str(registry), "--out", str(out), "--only", "zz"]) == 2
    assert "unknown expert 'zz'" in capsys.readouterr().err
