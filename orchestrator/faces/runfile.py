"""Answer a JSONL file of questions, resumably, without ever destroying a file the user owns.

The input's structure is validated before any model loads (a line that is not JSON, lacks
``id``/``question`` or repeats an id fails the command with its line number). A question whose
text no model can take (empty, too long, a lone surrogate, a control character) does not stop
the run: it gets its own ``status: "error"`` line with the reason, like a question whose
generation failed, and every other question is answered.

Questions are answered in chunks; each finished chunk is appended to the output and fsync'ed,
so an interrupted run resumes where it stopped, skipping ids already answered. ``--out`` must be
a new file or an expertmix answers file: anything else (a notes file, the input itself, a
directory) is refused untouched. Resuming appends; the file is rewritten (atomically: temp file
and rename) only to drop failed answers that will be retried or a line torn by an interruption.
Engines stay resident across chunks, so models still load once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from orchestrator.core import Question, Result, Trace, check_question
from orchestrator.errors import InputError
from orchestrator.files import write_atomic

_ANSWER_PREFIX = '{"id":'  # how every line expertmix writes begins (Result.model_dump_json)


def jsonl_objects(path: Path, *, needs: tuple[str, ...]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``("file:line", line number, object)`` per non-blank line holding a JSON object with ``needs``.

    A UTF-8 byte-order mark is accepted; a line that is not such an object raises a one-line
    :class:`InputError` naming the file and line.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file", hint='pass a JSONL file with one {"id", "question"} object per line')
    if path.is_dir():
        raise InputError(f"{path} is a directory", hint="pass a JSONL file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {exc.start})",
                         hint="save the file as UTF-8 JSONL") from None
    wanted = " and ".join(f"`{n}`" for n in needs)
    for n, line in enumerate(text.split("\n"), start=1):  # JSON strings may hold U+2028: not a line end here
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})", hint="one JSON object per line") from None
        if not isinstance(obj, dict) or any(k not in obj for k in needs):
            raise InputError(f"{where}: each line needs {wanted}", hint='e.g. {"id": "1", "question": "..."}')
        yield where, n, obj


def question_records(path: Path, *, require_id: bool = True) -> Iterator[tuple[str, dict[str, Any], Question]]:
    """``("file:line", raw record, Question)`` per non-blank line of a JSONL file ``{"id": ..., "question": ...}``.

    A bad line raises :class:`InputError` naming the file and line. Without ``require_id`` a
    missing id becomes the line number (routing files); extra fields stay in the raw record.
    """
    for where, n, obj in jsonl_objects(path, needs=("id", "question") if require_id else ("question",)):
        yield where, obj, Question(id=str(obj.get("id", n)), text=check_question(obj["question"], where=where))


def read_questions(path: Path) -> list[Question]:
    """Parse and validate every line; ids are required and unique (resuming relies on them)."""
    questions, rejected = read_run_input(path)
    if rejected:
        raise InputError(rejected[0].error)
    return questions


def read_run_input(path: Path) -> tuple[list[Question], list[Result]]:
    """The file's questions, and an error result for each line whose text no model can take."""
    questions: list[Question] = []
    rejected: list[Result] = []
    seen: set[str] = set()
    for where, _, obj in jsonl_objects(path, needs=("id", "question")):
        qid = str(obj["id"])
        if qid in seen:
            raise InputError(f"{where}: duplicate id {qid!r}", hint="ids must be unique within a file")
        seen.add(qid)
        try:
            questions.append(Question(id=qid, text=check_question(obj["question"], where=where)))
        except InputError as exc:
            rejected.append(rejected_result(qid, obj["question"], str(exc)))
    if not seen:
        raise InputError(f"{path}: no questions in the file")
    return questions, rejected


def rejected_result(qid: str, text: Any, error: str) -> Result:
    """The ``status: "error"`` result of a question refused before any model saw it."""
    shown = text.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(text, str) else repr(text)
    return Result(id=qid, question=shown, answer="", experts=[], aggregator=None, model_loads=0,
                  trace=Trace(pipeline=""), status="error", error=error)


class AnswersFile:
    """What an existing ``--out`` file holds, read without touching it.

    Raises :class:`InputError` unless the file is absent, empty or an expertmix answers file
    (every line a JSON object with ``id`` and ``answer``; only the very last line may be torn by
    an interruption).
    """

    def __init__(self, out: Path) -> None:
        self.path = out
        self.done: set[str] = set()
        self.keep: list[str] = []
        self.stale = False  # failed answers (retried now) or a torn last line: rewrite before appending
        if out.is_dir():
            raise InputError(f"--out {out} is a directory", hint="pass a file path, e.g. answers.jsonl")
        if out.exists():
            self._read()

    def _refuse(self, why: str) -> InputError:
        return InputError(f"--out {self.path} is not an expertmix answers file ({why}); it was left untouched",
                          hint="choose a new --out path (answers files hold one JSON result per line)")

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise self._refuse("not UTF-8 text") from None
        lines = text.split("\n")
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) and (line.startswith(_ANSWER_PREFIX) or _ANSWER_PREFIX.startswith(line)):
                    self.stale = True  # the torn tail of an interrupted write (no newline after it)
                    continue
                raise self._refuse(f"line {n} is not JSON") from None
            if not isinstance(obj, dict) or "id" not in obj or "answer" not in obj:
                raise self._refuse(f"line {n} is not a JSON object with `id` and `answer`")
            if obj.get("status", "ok") == "ok":
                self.keep.append(line)
                self.done.add(str(obj["id"]))
            else:
                self.stale = True

    def prepare(self) -> None:
        """Make the file ready for appending: atomically drop stale lines if there are any."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.stale:
            return
        write_atomic(self.path, lambda fh: fh.writelines(f"{line}\n".encode("utf-8") for line in self.keep))


def check_run_files(questions_path: Path, out: Path) -> tuple[list[Question], list[Result], AnswersFile]:
    """Read and check both files before any model loads; refuses an ``out`` it must not touch."""
    if out.exists() and questions_path.exists() and out.resolve() == questions_path.resolve():
        raise InputError(f"--out {out} is the questions file itself", hint="write the answers to another file")
    questions, rejected = read_run_input(questions_path)
    return questions, rejected, AnswersFile(out)


def run_file(orch: Any, questions_path: Path, out: Path, *, chunk_size: int = 64,
             budget: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Answer every question of ``questions_path`` not yet answered in ``out``. Returns a summary
    (``failed`` counts the questions whose line in ``out`` has ``status: "error"``)."""
    questions, rejected, answers = check_run_files(questions_path, out)
    todo = [q for q in questions if q.id not in answers.done]
    rejected = [r for r in rejected if r.id not in answers.done]
    answers.prepare()
    loads_before = sum(orch.model_loads().values())
    # Stable run ids per chunk: on the worker fleet, answers stored under (run, question, expert)
    # survive an interruption, so a rerun of the same command reuses them instead of regenerating.
    stem = hashlib.sha1(f"{questions_path.resolve()}|{out.resolve()}|{getattr(orch.pipeline, 'name', '')}".encode()).hexdigest()[:10]
    total = len(questions) + len(rejected)
    failed = len(rejected)
    bar = tqdm(total=total, initial=total - len(todo) - len(rejected), desc="questions", unit="q", disable=not progress)
    with bar, out.open("a", encoding="utf-8") as fh:
        _append(fh, rejected)
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            results = orch.run(chunk, budget=budget, run_id=f"file-{stem}-{chunk[0].id}")
            failed += sum(r.status == "error" for r in results)
            _append(fh, results)
            bar.update(len(chunk))
    return {"questions": total, "answered_now": len(todo), "rejected": len(rejected), "failed": failed,
            "skipped_already_done": len(answers.done & ({q.id for q in questions} | {r.id for r in rejected})),
            "model_loads": sum(orch.model_loads().values()) - loads_before, "out": str(out)}


def _append(fh: Any, results: list[Result]) -> None:
    for result in results:
        fh.write(result.model_dump_json() + "\n")
    fh.flush()
    os.fsync(fh.fileno())
