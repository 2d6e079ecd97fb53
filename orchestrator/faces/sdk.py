"""The Python SDK: ``Orchestrator.from_defaults().ask("...")``.

Async is written once (``aask``/``arun``); ``ask``/``run`` wrap it for sync callers. The result is
the same :class:`~orchestrator.core.Result` the CLI prints with ``--json``.

Example::

    from orchestrator import Orchestrator
    with Orchestrator.from_defaults() as orch:         # symbolic-moe pipeline, local vLLM engines
        result = orch.ask("What is 12 * 7?")
        print(result.answer, [e.name for e in result.experts], result.model_loads)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import InputError
from orchestrator.executor import execute
from orchestrator.faces.overrides import OverridingDispatcher, SamplingOverride
from orchestrator.pipeline import Pipeline
from orchestrator.core import Budget, Question, Result, check_question
from orchestrator.streaming import TokenStream
from workers.dispatch import make_dispatcher

T = TypeVar("T")
DEFAULT_PIPELINE = "symbolic-moe"
MAX_QUESTIONS_PER_CALL = 10_000


class Orchestrator:
    """Routes questions to experts, runs them batched per model, fuses the answers.

    Engines load lazily on first use and stay resident in the pool between calls (budget
    permitting); ``close()`` (or a ``with`` block) releases them.
    """

    def __init__(self, registry: ExpertRegistry, pipeline: Pipeline, *, executor: str = "local",
                 dispatcher: Any = None, seed: int = 0, progress: bool = False) -> None:
        self.registry = registry
        self.pipeline = pipeline
        self.compiled = pipeline.compile()  # validated and built once; routers keep what they load
        self.executor = executor
        self.dispatcher = dispatcher or make_dispatcher(executor, registry)
        self.seed = seed
        self.progress = progress
        self._lock = threading.Lock()  # one run at a time per orchestrator: engines are shared

    @classmethod
    def from_defaults(cls, pipeline: str = DEFAULT_PIPELINE, *, experts: str | Path | None = None,
                      executor: str = "local", **kwargs: Any) -> "Orchestrator":
        """The built-in registry (or ``experts`` YAML) and a built-in pipeline name or YAML path."""
        registry = ExpertRegistry.from_yaml(experts) if experts else ExpertRegistry.default()
        return cls(registry, Pipeline.load(pipeline), executor=executor, **kwargs)

    # ---- async API (the one implementation) ------------------------------------------------
    async def aask(self, question: str, *, id: str | None = None, budget: Any = None) -> Result:
        """Answer one question."""
        (result,) = await self.arun([Question.make(question, id=id)], budget=budget)
        return result

    async def arun(self, questions: Iterable[Question | str], *, budget: Any = None,
                   run_id: str | None = None, stream: TokenStream | None = None,
                   sampling: SamplingOverride | dict | None = None) -> list[Result]:
        """Answer many questions as one batched run (each model loaded once, one batch per model).

        ``stream`` receives each question's final answer text as it is generated
        (:mod:`orchestrator.streaming`). ``sampling`` (a
        :class:`~orchestrator.faces.overrides.SamplingOverride` or its dict) sets temperature,
        top_p, seed, stop and a max_tokens cap on every model call of the run.
        """
        qs = _as_questions(questions)
        if isinstance(sampling, dict):
            sampling = SamplingOverride(**sampling)
        return await asyncio.to_thread(self._run_blocking, qs, budget, run_id, stream, sampling)

    # ---- sync wrappers ---------------------------------------------------------------------
    def ask(self, question: str, *, id: str | None = None, budget: Any = None) -> Result:
        return _run_sync(self.aask(question, id=id, budget=budget))

    def run(self, questions: Iterable[Question | str], *, budget: Any = None, run_id: str | None = None,
            stream: TokenStream | None = None, sampling: SamplingOverride | dict | None = None) -> list[Result]:
        return _run_sync(self.arun(questions, budget=budget, run_id=run_id, stream=stream, sampling=sampling))

    def model_loads(self) -> dict[str, int]:
        return dict(self.dispatcher.model_loads())

    def close(self) -> None:
        self.dispatcher.close()

    def __enter__(self) -> "Orchestrator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_blocking(self, questions: list[Question], budget: Any, run_id: str | None,
                      stream: TokenStream | None = None, sampling: SamplingOverride | None = None) -> list[Result]:
        if isinstance(budget, dict):
            budget = Budget(**budget)
        dispatcher = OverridingDispatcher(self.dispatcher, sampling) if sampling is not None else self.dispatcher
        ctx = RunContext(registry=self.registry, dispatcher=dispatcher, seed=self.seed,
                         budget=budget, progress=self.progress, stream=stream)
        if run_id:
            ctx.run_id = run_id
        with self._lock:
            return execute(self.compiled, questions, ctx)


def _as_questions(items: Iterable[Question | str]) -> list[Question]:
    out: list[Question] = []
    for i, item in enumerate(items):
        if isinstance(item, Question):
            out.append(item.model_copy(update={"text": check_question(item.text, where=item.id)}))
        else:
            out.append(Question.make(item, id=f"q{i}"))
    if not out:
        raise InputError("no questions given", hint="pass at least one question")
    if len(out) > MAX_QUESTIONS_PER_CALL:
        raise InputError(f"{len(out)} questions in one call, more than {MAX_QUESTIONS_PER_CALL}",
                         hint="split the file, or use `expertmix run` which chunks and resumes")
    return out


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when an event loop is already running (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
