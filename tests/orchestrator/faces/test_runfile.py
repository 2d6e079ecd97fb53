"""`expertmix run` never destroys a user's file, and one bad line fails alone (fakes only)."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.errors import InputError
from orchestrator.faces import cli
from orchestrator.faces.runfile import AnswersFile, run_file
from orchestrator.faces.sdk import Orchestrator
from orchestrator.pipeline import Pipeline
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit


def orch() -> Orchestrator:
    return Orchestrator(ExpertRegistry.default(), Pipeline.load("ensemble-vote"), dispatcher=FakeDispatcher())


def questions_file(tmp_path, lines=None):
    f = tmp_path / "q.jsonl"
    lines = lines or [{"id": i, "question": f"What is {i} + {i}?"} for i in range(3)]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return f


@pytest.fixture(autouse=True)
def fake_engines(monkeypatch):
    """`expertmix run` on the fake dispatcher: no engine ever starts in these tests."""
    monkeypatch.setattr(cli, "make_orchestrator", lambda args, progress=False: orch())


def run_cli(capsys, *args) -> tuple[int, str]:
    code = cli.main(["run", *map(str, args), "--pipeline", "ensemble-vote"])
    return code, capsys.readouterr().err.strip()


def test_an_out_file_that_is_not_an_answers_file_is_refused_untouched(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text('my notes\n{"id": 1, "answer": "x"}\nmore notes', encoding="utf-8")
    before = notes.read_bytes()
    code, err = run_cli(capsys, questions_file(tmp_path), "--out", notes)
    assert code == 2 and "is not an expertmix answers file (line 1 is not JSON)" in err and "\n" not in err
    assert notes.read_bytes() == before
    one_line = tmp_path / "one.txt"
    one_line.write_text("a single line without newline", encoding="utf-8")
    assert run_cli(capsys, questions_file(tmp_path), "--out", one_line)[0] == 2
    assert one_line.read_text() == "a single line without newline"


@pytest.mark.parametrize("content, why", [
    ('[1, 2, 3]\n', "line 1 is not a JSON object with `id` and `answer`"),
    ('{"answer": "x"}\n', "line 1 is not a JSON object with `id` and `answer`"),
    ('{"id": 1, "question": "a questions file, not answers"}\n', "`id` and `answer`"),
    (b'\xff\xfe binary', "not UTF-8 text"),
])
def test_out_files_with_foreign_lines_are_one_line_errors(tmp_path, capsys, content, why):
    out = tmp_path / "a.jsonl"
    out.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run_cli(capsys, questions_file(tmp_path), "--out", out)
    assert code == 2 and why in err and "\n" not in err and "Traceback" not in err


def test_out_equal_to_the_input_and_directories_are_refused(tmp_path, capsys):
    q = questions_file(tmp_path)
    before = q.read_bytes()
    code, err = run_cli(capsys, q, "--out", q)
    assert code == 2 and "is the questions file itself" in err and q.read_bytes() == before
    code, err = run_cli(capsys, q, "--out", tmp_path)
    assert code == 2 and "is a directory" in err and "\n" not in err
    code, err = run_cli(capsys, tmp_path, "--out", tmp_path / "a.jsonl")
    assert code == 2 and "is a directory" in err and "\n" not in err


def test_a_bom_is_accepted_and_non_utf8_input_is_a_one_line_error(tmp_path, capsys):
    q = tmp_path / "bom.jsonl"
    q.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "question": "What is 2 + 2?"}).encode() + b"\n")
    out = tmp_path / "a.jsonl"
    summary = run_file(orch(), q, out, progress=False)
    assert summary["answered_now"] == 1 and json.loads(out.read_text())["id"] == "a"
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"id": 1, "question": "ok"}\n{"id": 2, "question": "caf\xe9"}\n')
    code, err = run_cli(capsys, bad, "--out", tmp_path / "b.jsonl")
    assert code == 2 and "latin1.jsonl:2: not UTF-8 text" in err


def test_a_question_no_model_can_take_gets_its_own_error_line_and_the_rest_are_answered(tmp_path, capsys):
    lines = [{"id": "ok1", "question": "What is 2 + 2?"}, {"id": "empty", "question": "  "},
             {"id": "ok2", "question": "What is 3 + 3?"}]
    q, out = questions_file(tmp_path, lines), tmp_path / "a.jsonl"
    code, err = run_cli(capsys, q, "--out", out)
    assert code == 1 and "1 of 3 questions failed" in err
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["ok1"]["status"] == rows["ok2"]["status"] == "ok" and rows["ok1"]["answer"]
    assert rows["empty"]["status"] == "error" and "question is empty" in rows["empty"]["error"]
    lines[1]["question"] = "What is 4 + 4?"  # the user fixes the line and reruns: only it is answered
    q.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    code, err = run_cli(capsys, q, "--out", out)
    assert code == 0 and '"answered_now": 1' in err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["empty", "ok1", "ok2"] and all(r["status"] == "ok" for r in rows)


def test_resume_appends_without_rewriting_a_clean_answers_file(tmp_path):
    q, out = questions_file(tmp_path), tmp_path / "a.jsonl"
    o = orch()
    run_file(o, q, out, chunk_size=1, progress=False)
    first = out.read_bytes()
    inode = os.stat(out).st_ino
    q.write_text(q.read_text() + json.dumps({"id": 9, "question": "What is 9 + 9?"}) + "\n")
    summary = run_file(o, q, out, chunk_size=1, progress=False)
    assert summary["answered_now"] == 1 and summary["skipped_already_done"] == 3
    assert out.read_bytes().startswith(first) and os.stat(out).st_ino == inode  # appended in place


def test_a_torn_last_line_is_dropped_by_an_atomic_rewrite(tmp_path):
    q, out = questions_file(tmp_path), tmp_path / "a.jsonl"
    run_file(orch(), q, out, progress=False)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    state = AnswersFile(out)
    assert state.stale and state.done == {"0", "1"}
    inode = os.stat(out).st_ino
    summary = run_file(orch(), q, out, progress=False)
    assert summary["answered_now"] == 1 and os.stat(out).st_ino != inode  # replaced by rename
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["0", "1", "2"]
    assert not list(tmp_path.glob(".a.jsonl.*.tmp"))


def test_answers_file_reader_does_not_modify_the_file(tmp_path):
    out = tmp_path / "a.jsonl"
    out.write_text('{"id": "1", "answer": "x", "status": "error"}\n')
    before = out.read_bytes()
    state = AnswersFile(out)
    assert state.stale and state.done == set() and out.read_bytes() == before
    with pytest.raises(InputError, match="is a directory"):
        AnswersFile(tmp_path)
