"""Answer a JSONL file of questions, resumably.

The whole input is validated before any model loads (a bad line fails the command with its line
number; nothing is half-accepted). Questions are answered in chunks; each finished chunk is
appended to the output and fsync'ed, so an interrupted run resumes where it stopped, skipping ids
already answered. Engines stay resident across chunks, so models still load once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from orchestrator.errors import InputError
from orchestrator.core import Question, check_question


def question_records(path: Path, *, require_id: bool = True) -> Iterator[tuple[str, dict[str, Any], Question]]:
    """``("file:line", raw record, Question)`` per non-blank line of a JSONL file ``{"id": ..., "question": ...}``.

    A bad line raises :class:`InputError` naming the file and line. Without ``require_id`` a
    missing id becomes the line number (routing files); extra fields stay in the raw record.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file", hint="pass a JSONL file with one {\"id\", \"question\"} object per line")
    needs = "`id` and `question`" if require_id else "a `question`"
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg})", hint="one JSON object per line") from None
            if not isinstance(obj, dict) or "question" not in obj or (require_id and "id" not in obj):
                raise InputError(f"{where}: each line needs {needs}", hint='e.g. {"id": "1", "question": "..."}')
            qid = str(obj.get("id", n))
            yield where, obj, Question(id=qid, text=check_question(obj["question"], where=where))


def read_questions(path: Path) -> list[Question]:
    """Parse and validate every line; ids are required and unique (resuming relies on them)."""
    questions: list[Question] = []
    seen: set[str] = set()
    for where, _, q in question_records(path):
        if q.id in seen:
            raise InputError(f"{where}: duplicate id {q.id!r}", hint="ids must be unique within a file")
        seen.add(q.id)
        questions.append(q)
    if not questions:
        raise InputError(f"{path}: no questions in the file")
    return questions


def finished_ids(out: Path) -> set[str]:
    """Ids already answered in ``out``; a torn last line (interrupted write) is dropped."""
    if not out.exists():
        return set()
    good, done = [], set()
    for line in out.read_text().splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if obj.get("status", "ok") == "ok":
            good.append(line)
            done.add(str(obj["id"]))
    out.write_text("".join(f"{g}\n" for g in good))
    return done


def run_file(orch: Any, questions_path: Path, out: Path, *, chunk_size: int = 64,
             budget: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Answer every question of ``questions_path`` not yet in ``out``. Returns a summary."""
    questions = read_questions(questions_path)
    done = finished_ids(out)
    todo = [q for q in questions if q.id not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    loads_before = sum(orch.model_loads().values())
    # Stable run ids per chunk: on the worker fleet, answers stored under (run, question, expert)
    # survive an interruption, so a rerun of the same command reuses them instead of regenerating.
    stem = hashlib.sha1(f"{questions_path.resolve()}|{out.resolve()}|{getattr(orch.pipeline, 'name', '')}".encode()).hexdigest()[:10]
    bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc="questions", unit="q",
               disable=not progress)
    with bar, out.open("a") as fh:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            run_id = f"file-{stem}-{chunk[0].id}"
            for result in orch.run(chunk, budget=budget, run_id=run_id):
                fh.write(result.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(chunk))
    return {"questions": len(questions), "answered_now": len(todo), "skipped_already_done": len(done & {q.id for q in questions}),
            "model_loads": sum(orch.model_loads().values()) - loads_before, "out": str(out)}
