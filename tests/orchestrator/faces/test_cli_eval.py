"""`expertmix eval` end to end through the CLI on a fake dispatcher: outputs, table, report, resume."""

from __future__ import annotations

import json

import pytest

from orchestrator.faces.cli import main
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit


def test_eval_cli_writes_answers_summary_and_report_and_resumes(tmp_path, monkeypatch, capsys):
    import workers.dispatch

    fakes = []

    def fake_dispatcher(pool):
        fakes.append(FakeDispatcher(reply=lambda r: "Answer: 4" if r.model == "qwen-coder-0.5b" else "Answer: 5"))
        return fakes[-1]

    monkeypatch.setattr(workers.dispatch, "LocalDispatcher", fake_dispatcher)
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{n}", "question": f"What is {n} + 4 - {n}?", "answer": "4",
                                        "answer_type": "numeric"}) + "\n" for n in range(4)))
    out = tmp_path / "ev"
    argv = ["eval", "--data", str(data), "--expert", "math-tutor", "--expert", "generalist", "--oracle",
            "--pipeline", "ensemble-vote", "--out", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| expert:math-tutor | 1.000" in table and "| expert:generalist | 0.000" in table and "| oracle | 1.000" in table
    assert {p.name for p in out.iterdir()} == {"answers.jsonl", "summary.json", "summary.md", "report.html"}
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * (7 + 1)  # --oracle adds every registry expert
    assert max(n for _, _, n in fakes[0].batches) > 4  # systems' requests merged into one batch per model
    assert main(argv) == 0  # resume: nothing left
    assert fakes[1].batches == []
    capsys.readouterr()
    assert main(["eval", "--expert", "coder", "--out", str(out)]) != 0  # no task and no data
    assert "no items to evaluate (fix: pass --task NAME" in capsys.readouterr().err
