"""Runs a validated pipeline over a batch of questions and builds one :class:`Result` per question.

Nodes run in topological order, each once for the whole batch; the trace records per-node wall
times (shared by the batch), routing, expert answers and the model loads the run caused.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.pipeline import Pipeline
from orchestrator.core import ExpertChoice, NodeTiming, Question, Result, Trace

log = logging.getLogger(__name__)


def execute(pipeline: Pipeline, questions: list[Question], ctx: RunContext,
            nodes: dict[str, Any] | None = None) -> list[Result]:
    """Run ``pipeline`` on ``questions`` with ``ctx``; one result per question, in order.

    ``nodes`` (from ``pipeline.instantiate()``) lets a caller that runs the same pipeline many
    times keep its routers' loaded profiles and classifiers instead of rebuilding them per run.
    """
    if not questions:
        return []
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ConfigError("question ids repeat within one run", hint="give every question a unique id")
    nodes = nodes if nodes is not None else pipeline.instantiate()
    for node in nodes.values():
        node.warm_up(ctx)
    loads_before = dict(ctx.dispatcher.model_loads())
    values: dict[tuple[str, str], list[Any]] = {}
    timings: list[NodeTiming] = []
    for name in pipeline.execution_order():
        node = nodes[name]
        t0 = time.perf_counter()
        if node.type_name == "input":
            out = {"questions": list(questions)}
        else:
            inputs = {dst: values[(src, port)] for src, port, dst in pipeline.in_edges(name)}
            out = node.run(ctx, **inputs)
        timings.append(NodeTiming(node=name, type=node.type_name, seconds=round(time.perf_counter() - t0, 4)))
        values.update({(name, port): v for port, v in out.items()})
    loads = _delta(loads_before, ctx.dispatcher.model_loads())
    return _results(pipeline, nodes, values, questions, timings, loads, ctx.notes)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {m: n - before.get(m, 0) for m, n in after.items() if n - before.get(m, 0) > 0}


def _last_of_type(pipeline: Pipeline, nodes: dict[str, Any], type_name: str) -> str | None:
    order = [n for n in pipeline.execution_order() if nodes[n].type_name == type_name]
    return order[-1] if order else None


def _results(pipeline, nodes, values, questions, timings, loads, run_notes) -> list[Result]:
    router = _last_of_type(pipeline, nodes, "router")
    experts = _last_of_type(pipeline, nodes, "experts")
    out_node = pipeline.nodes_of_type("output")[0]
    (src, port, _), = pipeline.in_edges(out_node)
    finals = values[(src, port)]
    decisions = values.get((router, "decisions")) if router else None
    answers = values.get((experts, "answers")) if experts else None
    results = []
    for i, q in enumerate(questions):
        d = decisions[i] if decisions else None
        f = finals[i]
        trace = Trace(
            pipeline=pipeline.name,
            router=d.router if d else None,
            skills=d.skills if d else [],
            category=d.category if d else None,
            confidence=d.confidence if d else None,
            aggregator=f.aggregator,
            aggregator_model=f.model,
            timings=timings,
            model_loads=loads,
            answers=answers[i] if answers else [],
            notes=[*run_notes, *(d.notes if d else []), *f.notes],  # run notes: fallbacks any node took
        )
        chosen = [ExpertChoice(name=c.name, score=round(c.score, 6)) for c in d.experts] if d else []
        results.append(Result(id=q.id, question=q.text, answer=f.answer, experts=chosen,
                              aggregator=f.aggregator, model_loads=sum(loads.values()), trace=trace))
    return results
