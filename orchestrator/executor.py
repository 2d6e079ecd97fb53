"""Runs a compiled pipeline over a batch of questions and builds one :class:`Result` per question.

Values travel per question ("rows"): the run's questions are rows ``(0,)``, ``(1,)``, ...; a
decomposer's sub-questions of row ``(i,)`` are rows ``(i, 0)``, ``(i, 1)``, .... Every port holds
a column ``{row: value}``. A node runs ONCE per run, on the rows that reached all its required
inputs (its sub-batch), so every model still gets one batch per node; a branch is a node whose
output keeps only some rows (:class:`~orchestrator.core.Selected`), a merge is an input fed by
several branches, and grouped inputs gather sub-question rows back under their question.

Failures stay with their question: a node that raises is retried by its policy, then run again on
halves of its sub-batch until the questions that fail alone are found; those get
``status: error`` with the reason and every other question goes on. Errors that are the run's
fault (configuration, budget, no live worker) are raised instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.compiled import NO_RETRY, CompiledPipeline, NodePolicy
from orchestrator.context import RunContext
from orchestrator.core import Completion, Question, Result, Selected, TraceStep, node_ports
from orchestrator.errors import BackendError, BudgetError, ConfigError, DispatchError, ExpertmixError
from orchestrator.streaming import announce, stream_plan, streaming_dispatcher
from orchestrator.tracing import build_results

log = logging.getLogger(__name__)

Row = tuple[int, ...]
RUN_LEVEL_ERRORS = (ConfigError, BudgetError, DispatchError)
# A bug in a node fails every question alike: halving its sub-batch would only repeat the calls.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, LookupError, AssertionError, NotImplementedError, ImportError)


class NodeTimeoutError(BackendError):
    """A node's attempt ran past its ``timeout_s``."""


@dataclass
class RunState:
    """Everything one run produced: port columns, per-(node, row) trace steps, failed rows."""

    compiled: CompiledPipeline
    ctx: RunContext
    questions: list[Question]
    columns: dict[tuple[str, str], dict[Row, Any]] = field(default_factory=dict)
    steps: dict[tuple[str, Row], TraceStep] = field(default_factory=dict)
    errors: dict[Row, str] = field(default_factory=dict)
    error_types: dict[Row, str] = field(default_factory=dict)
    qid: dict[Row, str] = field(default_factory=dict)
    streamed: frozenset[str] = frozenset()  # nodes whose tokens are the answer (orchestrator.streaming)


def execute(pipeline: Any, questions: list[Question], ctx: RunContext) -> list[Result]:
    """Run ``pipeline`` (a :class:`CompiledPipeline`, or a Pipeline compiled here) on ``questions``."""
    compiled = pipeline if isinstance(pipeline, CompiledPipeline) else pipeline.compile()
    if not questions:
        return []
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ConfigError("question ids repeat within one run", hint="give every question a unique id")
    for node in compiled.nodes.values():
        node.warm_up(ctx)
    loads_before = dict(ctx.dispatcher.model_loads())
    state = RunState(compiled, ctx, list(questions))
    if ctx.stream is not None:
        state.streamed = stream_plan(compiled)
    for name in compiled.order:
        if name == compiled.input_node:
            _store(state, name, "questions", {(i,): q for i, q in enumerate(questions)}, 0.0, 1)
        else:
            _run_node(state, name)
    after = ctx.dispatcher.model_loads()
    loads = {m: n - loads_before.get(m, 0) for m, n in after.items() if n - loads_before.get(m, 0) > 0}
    return build_results(state, loads)


# ---- one node ------------------------------------------------------------------------------------
def _run_node(state: RunState, name: str) -> None:
    rows = _eligible_rows(state, name)
    if not rows:
        return
    t0 = time.perf_counter()
    done, failed = _isolated(state, name, rows, state.compiled.policies[name], first=True)
    seconds = round(time.perf_counter() - t0, 4)
    node = state.compiled.nodes[name]
    _inputs, outputs, _opt = node_ports(type(node))
    columns: dict[str, dict[Row, Any]] = {port: {} for port in outputs}
    for sub_rows, out, node_ctx, attempts in done:
        tokens = _tokens_by_row(state, sub_rows, node_ctx)
        for port, spec in outputs.items():
            if port not in out:
                raise ConfigError(f"node {name!r} ({node.type_name}) returned no {port!r} output",
                                  hint="a node's run must return every port it declares in `outputs`")
            columns[port].update(_column(name, port, spec.children, sub_rows, out[port]))
        for row in sub_rows:
            part = node_ctx.parts.get(state.qid[row], {})
            step = _step(state, name, row, seconds, len(rows), attempts, part)
            step.prompt_tokens, step.completion_tokens = _add_tokens(tokens.get(row), part)
    for port, column in columns.items():
        _store(state, name, port, dict(sorted(column.items())), seconds, len(rows))
    for row, (exc, attempts) in failed.items():
        message = _error_line(name, state.compiled.types[name], exc)
        if row not in state.errors:
            state.errors[row], state.error_types[row] = message, error_code(exc)
        step = _step(state, name, row, seconds, len(rows), attempts, {})
        step.status, step.error = "error", message
        log.warning("question %s failed: %s", state.qid.get(row), message,
                    exc_info=None if isinstance(exc, ExpertmixError) else exc)


def error_code(exc: BaseException) -> str:
    """``InputError`` -> ``input_error``: the ``code`` the gateway puts in an OpenAI error body."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _error_line(name: str, type_name: str, exc: BaseException) -> str:
    """One line for the question's ``error``; an unexpected exception's text stays in the log
    (it may hold internals a gateway must not send to a client)."""
    if isinstance(exc, ExpertmixError):
        return f"node {name!r} ({type_name}): {type(exc).__name__}: {exc}"
    return f"node {name!r} ({type_name}): internal error ({type(exc).__name__}); the log has the traceback"


def _isolated(state: RunState, name: str, rows: list[Row], policy: NodePolicy, *, first: bool):
    """Run ``name`` on ``rows``; on failure, halve the sub-batch until failures are single rows."""
    once = policy if first else replace(policy, retry=NO_RETRY)  # the halves get one attempt each
    try:
        out, node_ctx, attempts = _attempts(state, name, rows, once)
        return [(rows, out, node_ctx, attempts)], {}
    except RUN_LEVEL_ERRORS:
        raise
    except _Failed as failure:
        if len(rows) == 1 or isinstance(failure.exc, (NodeTimeoutError, *PROGRAMMING_ERRORS)):
            return [], {r: (failure.exc, failure.attempts) for r in rows}
        mid = len(rows) // 2
        log.info("node %s failed on %d questions (%s); retrying halves", name, len(rows), failure.exc)
        left = _isolated(state, name, rows[:mid], policy, first=False)
        right = _isolated(state, name, rows[mid:], policy, first=False)
        return left[0] + right[0], {**left[1], **right[1]}


class _Failed(Exception):
    def __init__(self, exc: BaseException, attempts: int) -> None:
        super().__init__(str(exc))
        self.exc, self.attempts = exc, attempts


def _attempts(state: RunState, name: str, rows: list[Row], policy: NodePolicy):
    node = state.compiled.nodes[name]
    inputs = _gather(state, name, rows)
    for attempt in range(1, policy.retry.max_attempts + 1):
        dispatcher = streaming_dispatcher(state.ctx, state.ctx.dispatcher, name, state.streamed)
        node_ctx = replace(state.ctx, dispatcher=MeteredDispatcher(dispatcher), node=name, parts={})
        try:
            out = _call(lambda: node.run(node_ctx, **inputs), policy.timeout_s, name)
            announce(state.ctx, out)  # routing decisions reach a stream before the answer exists
            return out, node_ctx, attempt
        except RUN_LEVEL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 (a node's failure becomes its questions' error)
            if attempt == policy.retry.max_attempts or not policy.retry.retries(exc):
                raise _Failed(exc, attempt) from exc
            wait = policy.retry.delay(attempt)
            log.info("node %s attempt %d failed (%s); retrying in %.2fs", name, attempt, exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _call(fn, timeout_s: float | None, name: str) -> dict[str, Any]:
    """``fn()``, or :class:`NodeTimeoutError` after ``timeout_s`` (the abandoned call finishes in
    the background; in-process engines serve one batch at a time, so the next one waits for it)."""
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            box["err"] = exc

    worker = threading.Thread(target=target, name=f"node-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise NodeTimeoutError(f"node {name!r} ran past its timeout_s={timeout_s:g}", transient=True,
                               hint="raise timeout_s in the node's params, or shrink the batch")
    if "err" in box:
        raise box["err"]
    return box["out"]


# ---- rows and columns ------------------------------------------------------------------------------
def _feeds(state: RunState, name: str, port: str) -> dict[Row, Any]:
    merged: dict[Row, Any] = {}
    for src, sport in state.compiled.wiring[name].get(port, []):
        merged.update(state.columns.get((src, sport), {}))
    return merged


def _children(column: dict[Row, Any], row: Row) -> list[Row]:
    return sorted(r for r in column if len(r) == len(row) + 1 and r[:-1] == row)


def _eligible_rows(state: RunState, name: str) -> list[Row]:
    """Rows that reached every required input (a grouped input needs all of a row's sub-questions)."""
    inputs, _outputs, optional = node_ports(type(state.compiled.nodes[name]))
    sets = []
    for port, spec in inputs.items():
        if port in optional:
            continue
        column = _feeds(state, name, port)
        sets.append({r[:-1] for r in column} if spec.children else set(column))
    rows = set.intersection(*sets) if sets else set()
    for row in sorted(rows):  # a question whose sub-question failed fails with that reason
        bad = next((r for r in state.errors if len(r) > len(row) and r[:len(row)] == row), None)
        if bad is not None and row not in state.errors:
            state.errors[row] = f"sub-question {state.qid.get(bad, bad)!r}: {state.errors[bad]}"
            state.error_types[row] = state.error_types[bad]
    return sorted(r for r in rows if r not in state.errors)


def _gather(state: RunState, name: str, rows: list[Row]) -> dict[str, list[Any]]:
    inputs, _outputs, optional = node_ports(type(state.compiled.nodes[name]))
    values: dict[str, list[Any]] = {}
    for port, spec in inputs.items():
        if port in optional and port not in state.compiled.wiring[name]:
            continue  # the node's default applies
        column = _feeds(state, name, port)
        if spec.children:
            values[port] = [[column[c] for c in _children(column, r)] for r in rows]
        else:
            values[port] = [column.get(r) for r in rows]
    return values


def _column(name: str, port: str, children: bool, rows: list[Row], value: Any) -> dict[Row, Any]:
    if isinstance(value, Selected):
        _check_len(name, port, rows, value.values)
        _check_len(name, port, rows, value.keep)
        return {r: v for r, v, keep in zip(rows, value.values, value.keep) if keep}
    _check_len(name, port, rows, value)
    if children:
        return {(*r, j): v for r, kids in zip(rows, value) for j, v in enumerate(kids)}
    return dict(zip(rows, value))


def _check_len(name: str, port: str, rows: list[Row], values: Any) -> None:
    if not isinstance(values, list) or len(values) != len(rows):
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise ConfigError(f"node {name!r} returned {got} values on {port!r} for {len(rows)} questions",
                          hint="a node returns one value per question it was given, in order")


def _store(state: RunState, name: str, port: str, column: dict[Row, Any], seconds: float, batch: int) -> None:
    state.columns[(name, port)] = column
    for row, value in column.items():
        if isinstance(value, Question):
            known = state.qid.setdefault(row, value.id)
            if known != value.id and len(row) > 1:
                raise ConfigError(f"node {name!r}: sub-question ids clash ({known!r} vs {value.id!r})")
    if name == state.compiled.input_node:
        for row in column:
            _step(state, name, row, seconds, batch, 1, {})


def _step(state: RunState, name: str, row: Row, seconds: float, batch: int, attempts: int, part: dict) -> TraceStep:
    step = TraceStep(node=name, type=state.compiled.types[name], question=state.qid.get(row, ""), level=len(row),
                     seconds=seconds, batch=batch, attempts=attempts, part=part)
    state.steps[(name, row)] = step
    return step


# ---- tokens per question ----------------------------------------------------------------------------
class MeteredDispatcher:
    """The run's dispatcher as one node sees it: every completion is kept, so the executor can
    put each question's prompt and completion tokens on that node's trace step."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.completions: list[Completion] = []

    def run_batches(self, groups, *, label: str = "experts", progress: bool = False) -> dict[str, Completion]:
        done = self.inner.run_batches(groups, label=label, progress=progress)
        self.completions.extend(done.values())
        return done

    def model_loads(self) -> dict[str, int]:
        return self.inner.model_loads()

    def close(self) -> None:  # the run owns the dispatcher, never a node
        raise ConfigError("a node must not close the run's dispatcher")

    def __getattr__(self, attr: str) -> Any:  # joint-generation backends may offer more
        return getattr(self.inner, attr)


def _tokens_by_row(state: RunState, rows: list[Row], node_ctx: RunContext) -> dict[Row, tuple[int, int]]:
    """Completions are keyed ``run/question id/...`` (``ctx.key``): credit each to its question."""
    by_id = {state.qid[r]: r for r in rows}
    prefix = state.ctx.run_id + "/"
    out: dict[Row, tuple[int, int]] = {}
    for comp in node_ctx.dispatcher.completions:
        parts = comp.key[len(prefix):].split("/") if comp.key.startswith(prefix) else []
        spans = ("/".join(parts[i:j]) for i in range(len(parts)) for j in range(len(parts), i, -1))
        row = next((by_id[q] for q in spans if q in by_id), None)
        if row is not None:
            p, c = out.get(row, (0, 0))
            out[row] = (p + comp.prompt_tokens, c + comp.completion_tokens)
    return out


def _add_tokens(metered: tuple[int, int] | None, part: dict) -> tuple[int, int]:
    """Metered tokens plus any a node reports itself (a joint-generation node calling its own engine)."""
    p, c = metered or (0, 0)
    return p + int(part.get("prompt_tokens", 0)), c + int(part.get("completion_tokens", 0))
