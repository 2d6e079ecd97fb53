"""CLI behaviour on bad input and file runs (fakes only; the real CLI runs in test_e2e_real)."""

from __future__ import annotations

import json

import pytest

from orchestrator.faces import cli
from orchestrator.config import ExpertRegistry
from orchestrator.errors import InputError
from orchestrator.pipeline import Pipeline
from orchestrator.faces.runfile import read_questions, run_file
from orchestrator.faces.sdk import Orchestrator
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit


def test_empty_question_is_a_one_line_error(capsys):
    assert cli.main(["ask", "   "]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("expertmix: error:") and "question is empty" in err and "\n" not in err


def test_unknown_pipeline(capsys):
    assert cli.main(["ask", "hi", "--pipeline", "nope"]) == 2
    assert "unknown pipeline 'nope'" in capsys.readouterr().err


def test_malformed_registry(tmp_path, capsys):
    bad = tmp_path / "experts.yaml"
    bad.write_text("models: [\n")
    assert cli.main(["ask", "hi", "--experts", str(bad)]) == 2
    assert "malformed YAML" in capsys.readouterr().err


def test_pipelines_list_and_validate(capsys):
    assert cli.main(["pipelines", "list"]) == 0
    out = capsys.readouterr().out
    assert "symbolic-moe" in out and "coe" in out
    assert cli.main(["pipelines", "validate", "symbolic-moe"]) == 0
    assert "input -> router -> experts -> aggregate -> output" in capsys.readouterr().out


@pytest.mark.parametrize("content,match", [
    ('{"id": 1, "question": "ok"}\nnot json\n', r":2: not valid JSON"),
    ('{"id": 1}\n', r":1: each line needs `id` and `question`"),
    ('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n', r":2: duplicate id '1'"),
    ('{"id": 1, "question": ""}\n', r":1: the question is empty"),
    ("\n", r"no questions"),
])
def test_bad_question_files_fail_before_any_work(tmp_path, content, match):
    f = tmp_path / "q.jsonl"
    f.write_text(content)
    with pytest.raises(InputError, match=match):
        read_questions(f)


class Interrupt(Exception):
    pass


def test_run_file_resume_after_interruption(tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"id": i, "question": f"question {i}?"}) + "\n" for i in range(5)))
    out = tmp_path / "out" / "a.jsonl"
    disp = FakeDispatcher()
    orch = Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=disp)
    real_run = orch.run
    calls = {"n": 0}

    def flaky_run(qs, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt()
        return real_run(qs, **kw)

    orch.run = flaky_run
    with pytest.raises(Interrupt):
        run_file(orch, qfile, out, chunk_size=2, progress=False)
    assert len(out.read_text().splitlines()) == 2
    orch.run = real_run
    summary = run_file(orch, qfile, out, chunk_size=2, progress=False)
    assert summary["answered_now"] == 3 and summary["skipped_already_done"] == 2
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["0", "1", "2", "3", "4"]


def test_build_parser_has_the_core_commands():
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"ask", "run", "pipelines"} <= set(choices)


@pytest.mark.parametrize("command", [["ask", "hi"], ["serve", "--port", "0"]])
def test_a_directory_as_experts_is_a_one_line_error(tmp_path, capsys, command):
    assert cli.main([*command, "--experts", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a directory" in err and "\n" not in err and "Traceback" not in err
