"""Batch jobs after OpenAI's Batch API: ``/v1/files`` and ``/v1/batches``.

A client uploads a JSONL file of chat-completion requests (``purpose=batch``; each line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``), creates a batch
on it, polls ``GET /v1/batches/{id}`` (``status``, ``request_counts``) and downloads the results
(``output_file_id``, ``error_file_id``) with ``GET /v1/files/{id}/content``. Each line runs exactly
like a ``POST /v1/chat/completions`` of its body (the chat service's ``answer``): merged into runs
with concurrent requests on local engines, or sent to the fleet with ``--executor celery``.

Everything lives on disk under the batch directory (``--batch-dir``, ``$EXPERTMIX_BATCH_DIR``,
default ``~/.local/state/expertmix/batches``), never only in memory: ``files/<id>.json`` (the file
record) and ``files/<id>.jsonl`` (its bytes), ``batches/<id>.json`` (the batch record, rewritten
atomically), ``batches/<id>.output.jsonl`` / ``.errors.jsonl`` (one line appended per finished
request). A gateway that restarts resumes every unfinished batch and runs only the lines that
have no result yet. Cancelling stops lines from starting and drops the answers of the lines in
flight; what finished before stays in the output file.

Limits (a 400 or 413 naming the problem): a file of at most ``MAX_FILE_BYTES`` and
``MAX_REQUESTS`` lines, every line valid JSON with a unique ``custom_id`` and a chat request body
without ``stream``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from fastapi import File, Form, HTTPException, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from orchestrator.errors import ExpertmixError, InputError, OverloadedError
from orchestrator.faces.gateway.errors import error_body, status_of
from orchestrator.faces.gateway.schema import ChatCompletionRequest
from orchestrator.files import write_atomic

log = logging.getLogger("orchestrator.gateway")

BATCH_DIR_ENV = "EXPERTMIX_BATCH_DIR"
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_REQUESTS = 10_000
MAX_ERRORS_SHOWN = 5
CHAT_URL = "/v1/chat/completions"
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
_ID = re.compile(r"^(file-|batch_)[0-9a-f]{24}$")


def default_batch_dir() -> Path:
    """``$EXPERTMIX_BATCH_DIR``, else ``$XDG_STATE_HOME/expertmix/batches`` (``~/.local/state/...``)."""
    if os.environ.get(BATCH_DIR_ENV):
        return Path(os.environ[BATCH_DIR_ENV]).expanduser()
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "expertmix" / "batches"


class NotFound(InputError):
    """An id that names no file or batch here (HTTP 404)."""

    status = 404


# ---- input validation ----------------------------------------------------------------------------
def parse_requests(content: bytes) -> list[dict[str, Any]]:
    """The lines of a batch input file, checked; raises InputError naming the first bad lines."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the batch file is not UTF-8 (byte {exc.start})", hint="upload a UTF-8 JSONL file") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError("the batch file has no requests", hint="one JSON request per line")
    if len(lines) > MAX_REQUESTS:
        raise InputError(f"the batch file has {len(lines)} requests, more than {MAX_REQUESTS}",
                         hint="split it into several batches")
    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in lines:
        why = _line_problem(line, seen, out)
        if why:
            problems.append(f"line {number}: {why}")
    if problems:
        shown = "; ".join(problems[:MAX_ERRORS_SHOWN]) + (f"; and {len(problems) - MAX_ERRORS_SHOWN} more"
                                                          if len(problems) > MAX_ERRORS_SHOWN else "")
        raise InputError(f"the batch file has {len(problems)} bad line(s): {shown}",
                         hint='each line: {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", '
                              '"body": {"model": "expertmix", "messages": [...]}}')
    return out


def _line_problem(line: str, seen: set[str], out: list[dict[str, Any]]) -> str | None:
    try:
        item = json.loads(line)
    except ValueError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(item, dict):
        return "not a JSON object"
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
        return "`custom_id` must be a non-empty string of at most 512 characters"
    if custom_id in seen:
        return f"custom_id {custom_id!r} repeats"
    if item.get("method", "POST") != "POST" or item.get("url", CHAT_URL) != CHAT_URL:
        return f"only POST {CHAT_URL} is supported"
    body = item.get("body")
    if not isinstance(body, dict):
        return "`body` must be a chat completion request object"
    if body.get("stream"):
        return "`stream` cannot be used in a batch"
    try:
        ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"body.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    seen.add(custom_id)
    out.append({"custom_id": custom_id, "body": body})
    return None


# ---- the store (disk) ----------------------------------------------------------------------------
class BatchStore:
    """Files and batches under one directory; JSON records are replaced atomically.

    Example::

        store = BatchStore(Path("/tmp/batches"))
        record = store.save_file(b'{"custom_id": "r1", "body": {...}}\\n', "in.jsonl", "batch")
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)  # created on the first write, so an unused gateway leaves no trace

    def _ensure(self) -> None:
        for sub in ("files", "batches"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # files
    def save_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        self._ensure()
        record = _file_record(len(content), filename, purpose)
        (self.root / "files" / f"{record['id']}.jsonl").write_bytes(content)
        _write_json(self.root / "files" / f"{record['id']}.json", record)
        return record

    def register_file(self, path: Path, filename: str, purpose: str) -> dict[str, Any]:
        """A record for a file the gateway wrote (a batch's output), served from where it lies."""
        record = _file_record(path.stat().st_size, filename, purpose)
        record["path"] = str(path.relative_to(self.root))
        _write_json(self.root / "files" / f"{record['id']}.json", record)
        return record

    def file(self, file_id: str) -> dict[str, Any]:
        record = _read_json(self.root / "files" / f"{_checked(file_id, 'file')}.json")
        if record is None:
            raise NotFound(f"no file {file_id!r}", hint="upload one with POST /v1/files")
        return record

    def file_content(self, file_id: str) -> bytes:
        record = self.file(file_id)
        path = self.root / record["path"] if "path" in record else self.root / "files" / f"{file_id}.jsonl"
        return path.read_bytes() if path.exists() else b""

    def public(self, record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k != "path"}

    # batches
    def create_batch(self, record: dict[str, Any]) -> dict[str, Any]:
        self._ensure()
        _write_json(self._batch_path(record["id"]), record)
        return record

    def batch(self, batch_id: str) -> dict[str, Any]:
        record = _read_json(self._batch_path(_checked(batch_id, "batch")))
        if record is None:
            raise NotFound(f"no batch {batch_id!r}", hint="GET /v1/batches lists them")
        record["request_counts"] = self.counts(batch_id, record["request_counts"]["total"])
        return record

    def update_batch(self, batch_id: str, **fields: Any) -> dict[str, Any]:
        record = _read_json(self._batch_path(batch_id)) or {}
        record.update(fields)
        _write_json(self._batch_path(batch_id), record)
        return record

    def batches(self) -> list[dict[str, Any]]:
        ids = [p.name[: -len(".json")] for p in (self.root / "batches").glob("batch_*.json")]
        records = [self.batch(i) for i in ids]
        return sorted(records, key=lambda r: r["created_at"], reverse=True)

    def append(self, batch_id: str, kind: str, line: dict[str, Any]) -> None:
        with self.results_path(batch_id, kind).open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def results_path(self, batch_id: str, kind: str) -> Path:
        return self.root / "batches" / f"{batch_id}.{kind}.jsonl"

    def finished_ids(self, batch_id: str) -> set[str]:
        return {line["custom_id"] for kind in ("output", "errors") for line in self._lines(batch_id, kind)}

    def counts(self, batch_id: str, total: int) -> dict[str, int]:
        return {"total": total, "completed": len(self._lines(batch_id, "output")),
                "failed": len(self._lines(batch_id, "errors"))}

    def _lines(self, batch_id: str, kind: str) -> list[dict[str, Any]]:
        path = self.results_path(batch_id, kind)
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:  # a line cut by a crash mid-write is not a result: that request runs again
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def _batch_path(self, batch_id: str) -> Path:
        return self.root / "batches" / f"{batch_id}.json"


def _file_record(size: int, filename: str, purpose: str) -> dict[str, Any]:
    return {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": size, "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed", "status_details": None}


def _checked(any_id: str, kind: str) -> str:
    if not _ID.match(any_id) or not any_id.startswith(kind):
        raise NotFound(f"no {kind} {any_id[:64]!r}", hint=f"{kind} ids look like {kind}{'-' if kind == 'file' else '_'}<24 hex digits>")
    return any_id


def _write_json(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, lambda fh: fh.write(json.dumps(record, ensure_ascii=False).encode("utf-8")))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


# ---- running batches -----------------------------------------------------------------------------
CompleteFn = Callable[..., Any]  # async (req, *, request_id) -> chat.completion dict (the chat service)


class BatchRunner:
    """Runs batches in the gateway's event loop, ``concurrency`` lines at a time, and resumes the
    unfinished ones when the gateway starts."""

    def __init__(self, store: BatchStore, complete: CompleteFn, *, concurrency: int = 16, observer: Any = None) -> None:
        self.store, self.complete, self.concurrency, self.observer = store, complete, concurrency, observer
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancel: dict[str, asyncio.Event] = {}

    async def resume(self) -> list[str]:
        """Start every batch a previous gateway left unfinished; returns their ids."""
        unfinished = [b["id"] for b in self.store.batches() if b["status"] in ACTIVE]
        for batch_id in unfinished:
            log.info("resuming batch %s", batch_id)
            self.start(batch_id)
        return unfinished

    def create(self, input_file_id: str, endpoint: str, completion_window: str,
               metadata: dict[str, str] | None) -> dict[str, Any]:
        """Check the request and its file, record the batch and start it."""
        if endpoint != CHAT_URL:
            raise InputError(f"endpoint {endpoint!r} is not supported", hint=f"use {CHAT_URL}")
        if completion_window != "24h":
            raise InputError(f"completion_window {completion_window!r} is not supported", hint='use "24h"')
        record = self.store.file(input_file_id)
        if record["purpose"] != "batch":
            raise InputError(f"file {input_file_id} has purpose {record['purpose']!r}, not 'batch'",
                             hint="upload the requests with purpose=batch")
        total = len(parse_requests(self.store.file_content(input_file_id)))
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": endpoint, "errors": None,
                 "input_file_id": input_file_id, "completion_window": completion_window, "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": total, "completed": 0, "failed": 0}, "metadata": metadata}
        self.store.create_batch(batch)
        self.start(batch["id"])
        return self.store.batch(batch["id"])

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self.store.batch(batch_id)
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            self.store.update_batch(batch_id, status="cancelling", cancelling_at=int(time.time()))
            self._flag(batch_id).set()
            if batch_id not in self._tasks:  # nothing runs it (a failed start): settle it now
                self._finish(batch_id, "cancelled")
        return self.store.batch(batch_id)

    def start(self, batch_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(batch_id), name=f"batch-{batch_id}")
        self._tasks[batch_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(batch_id, None))

    async def stop(self) -> None:
        """Gateway shutdown: stop the runners; their batches stay unfinished on disk and resume later."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- one batch -------------------------------------------------------------------------------
    async def _run(self, batch_id: str) -> None:
        batch = self.store.batch(batch_id)
        flag = self._flag(batch_id)
        if batch["status"] == "cancelling":
            flag.set()
        else:
            self.store.update_batch(batch_id, status="in_progress", in_progress_at=batch["in_progress_at"] or int(time.time()))
        lines = parse_requests(self.store.file_content(batch["input_file_id"]))
        done = self.store.finished_ids(batch_id)
        todo = [line for line in lines if line["custom_id"] not in done]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(line: dict[str, Any]) -> None:
            async with gate:
                if not flag.is_set():
                    await self._line(batch_id, line, flag)

        try:
            await asyncio.gather(*(one(line) for line in todo))
        except Exception as exc:  # noqa: BLE001 (a runner bug fails the batch visibly, never silently)
            log.exception("batch %s failed", batch_id)
            self.store.update_batch(batch_id, errors={"object": "list", "data": [
                {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "line": None}]})
            self._finish(batch_id, "failed")
            return
        self._finish(batch_id, "cancelled" if flag.is_set() else "completed")

    async def _line(self, batch_id: str, line: dict[str, Any], flag: asyncio.Event) -> None:
        req = ChatCompletionRequest.model_validate(line["body"])
        request_id = f"{batch_id}/{line['custom_id']}"[:128]
        entry: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"]}
        while True:
            try:
                body = await self.complete(req, request_id=request_id)
            except OverloadedError as exc:  # interactive traffic first: wait for room, then go on
                await asyncio.sleep(exc.retry_after_s)
                continue
            except ExpertmixError as exc:
                if flag.is_set():
                    return
                status = status_of(exc)
                entry.update(response={"status_code": status, "request_id": request_id,
                                       "body": error_body(str(exc), status, exc)}, error=None)
                self.store.append(batch_id, "errors", entry)
                return
            break
        if flag.is_set():  # cancelled while it ran: the batch ends with what was kept before the cancel
            return
        if self.observer is not None:
            self.observer.answered(body)
        entry.update(response={"status_code": 200, "request_id": request_id, "body": body}, error=None)
        self.store.append(batch_id, "output", entry)

    def _finish(self, batch_id: str, status: str) -> None:
        now = int(time.time())
        self.store.update_batch(batch_id, status="finalizing", finalizing_at=now)
        files = {}
        for kind, field in (("output", "output_file_id"), ("errors", "error_file_id")):
            path = self.store.results_path(batch_id, kind)
            if path.exists():
                files[field] = self.store.register_file(path, f"{batch_id}_{kind}.jsonl", "batch_output")["id"]
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "failed": "failed_at"}[status]
        self.store.update_batch(batch_id, status=status, **{stamp: now}, **files)
        log.info("batch %s %s", batch_id, status)

    def _flag(self, batch_id: str) -> asyncio.Event:
        return self._cancel.setdefault(batch_id, asyncio.Event())


# ---- HTTP routes (thin adapters) -----------------------------------------------------------------
class BatchCreate(BaseModel):
    """``POST /v1/batches``."""

    input_file_id: str
    endpoint: str = CHAT_URL
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def add_batch_routes(app: Any, runner: BatchRunner) -> None:
    """``/v1/files`` and ``/v1/batches`` on ``app`` (FastAPI)."""
    store = runner.store

    def found(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/v1/files")
    async def upload_file(file: UploadFile = File(...), purpose: str = Form(...)) -> dict[str, Any]:
        if purpose != "batch":
            raise InputError(f"purpose {purpose!r} is not supported", hint="upload batch input with purpose=batch")
        content = await file.read(MAX_FILE_BYTES + 1)
        if len(content) > MAX_FILE_BYTES:
            raise InputError(f"the file is larger than {MAX_FILE_BYTES} bytes", hint="split it into several batches")
        parse_requests(content)  # a bad file is refused now, naming its lines, not when the batch runs
        return store.public(store.save_file(content, file.filename or "batch.jsonl", purpose))

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str) -> dict[str, Any]:
        return store.public(found(lambda: store.file(file_id)))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        return Response(found(lambda: store.file_content(file_id)), media_type="application/jsonl")

    @app.post("/v1/batches")
    async def create_batch(req: BatchCreate) -> dict[str, Any]:
        return found(lambda: runner.create(req.input_file_id, req.endpoint, req.completion_window, req.metadata))

    @app.get("/v1/batches")
    async def list_batches(limit: int = 20) -> dict[str, Any]:
        data = store.batches()[: max(1, min(limit, 100))]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(store.batches()) > len(data)}

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str) -> dict[str, Any]:
        return found(lambda: store.batch(batch_id))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> dict[str, Any]:
        return found(lambda: runner.cancel(batch_id))


BATCH_ROUTES = {("POST", "/v1/files"), ("GET", "/v1/files/{file_id}"), ("GET", "/v1/files/{file_id}/content"),
                ("POST", "/v1/batches"), ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}"),
                ("POST", "/v1/batches/{batch_id}/cancel")}
