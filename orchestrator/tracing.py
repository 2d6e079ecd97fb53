"""A question's trace, from the steps that produced its answer.

Each node records its own part of a question's trace (``ctx.record(question_id, ...)``): a router
its ``routing``, an experts node its ``answers``, an aggregator its ``final``, a decomposer its
``subquestions``, an escalation its ``escalated`` flag. The executor adds timings and tokens.
The trace of a question keeps only the steps on the path that produced its answer: walking back
from the output along the edges that carried this question (and its sub-questions), so a node on
a branch the question never took is not in it. The summary fields (``router``, ``experts``,
``aggregator``, ...) come from those parts by name, never from a node's type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.core import ExpertAnswer, ExpertChoice, NodeTiming, Result, Trace, TraceStep, node_ports

if TYPE_CHECKING:
    from orchestrator.executor import RunState

Row = tuple[int, ...]


def build_results(state: "RunState", loads: dict[str, int]) -> list[Result]:
    """One :class:`Result` per question of the run, in order."""
    out_node = state.compiled.output_node
    (port, _spec), = node_ports(type(state.compiled.nodes[out_node]))[0].items()
    finals: dict[Row, Any] = {}
    for src, sport in state.compiled.wiring[out_node].get(port, []):
        finals.update(state.columns.get((src, sport), {}))
    return [_result(state, (i,), q, finals.get((i,)), loads) for i, q in enumerate(state.questions)]


def path_steps(state: "RunState", node: str, row: Row) -> list[TraceStep]:
    """The steps that fed ``row`` at ``node``, in execution order (sub-questions after their question)."""
    seen: set[tuple[str, Row]] = set()
    _walk(state, node, row, seen)
    rank = {n: i for i, n in enumerate(state.compiled.order)}
    keys = sorted((k for k in seen if k in state.steps), key=lambda k: (rank[k[0]], k[1]))
    return [state.steps[k] for k in keys]


def _walk(state: "RunState", node: str, row: Row, seen: set[tuple[str, Row]]) -> None:
    if (node, row) in seen:
        return
    seen.add((node, row))
    inputs, _outputs, _opt = node_ports(type(state.compiled.nodes[node]))
    for port, feeds in state.compiled.wiring[node].items():
        for src, sport in feeds:
            column = state.columns.get((src, sport), {})
            expands = state.compiled.output_port(src, sport).children
            wanted = sorted(r for r in column if len(r) == len(row) + 1 and r[:-1] == row) if inputs[port].children else (
                [row] if row in column else [])
            for r in wanted:
                _walk(state, src, r[:-1] if expands else r, seen)


def _result(state: "RunState", row: Row, question, final, loads: dict[str, int]) -> Result:
    failed = state.errors.get(row)
    if final is None and failed is None:
        failed = ("no answer reached the output: the branches of this pipeline dropped the question "
                  "(every branch must end at the output node)")
    if final is not None:
        steps = path_steps(state, state.compiled.output_node, row)
    else:
        steps = _failure_path(state, row)
    routing = _pick(steps, "routing")
    answers = _pick(steps, "answers")
    trace = Trace(
        pipeline=state.compiled.name,
        router=routing[0]["router"] if routing else None,
        skills=list(dict.fromkeys(s for d in routing for s in d.get("skills", []))),
        category=routing[-1].get("category") if len(routing) == 1 else None,
        confidence=routing[-1].get("confidence") if len(routing) == 1 else None,
        aggregator=final.aggregator if final is not None else None,
        aggregator_model=final.model if final is not None else None,
        timings=[NodeTiming(node=s.node, type=s.type, seconds=s.seconds) for s in _one_per_node(steps)],
        model_loads=loads,
        answers=[ExpertAnswer(**a) for per_step in answers for a in per_step],
        notes=[*state.ctx.notes, *(n for s in steps for n in s.part.get("notes", []))],
        steps=steps,
        prompt_tokens=sum(s.prompt_tokens for s in steps),
        completion_tokens=sum(s.completion_tokens for s in steps),
    )
    common = dict(id=question.id, question=question.text, model_loads=sum(loads.values()), trace=trace)
    if failed is not None:
        return Result(**common, answer="", experts=[], aggregator=None, status="error", error=failed,
                      error_type=state.error_types.get(row, "pipeline_error"))
    return Result(**common, answer=final.answer, experts=_experts(routing), aggregator=final.aggregator,
                  finish_reason=final.finish_reason)


def _failure_path(state: "RunState", row: Row) -> list[TraceStep]:
    """Steps up to the one that failed (this question's, or one of its sub-questions')."""
    failed = [k for k, s in state.steps.items() if s.status == "error" and k[1][:len(row)] == row]
    keys: set[tuple[str, Row]] = set()
    for node, r in failed:
        keys.update(_keys_of(state, node, r))
    rank = {n: i for i, n in enumerate(state.compiled.order)}
    return [state.steps[k] for k in sorted(keys, key=lambda k: (rank[k[0]], k[1])) if k in state.steps]


def _keys_of(state: "RunState", node: str, row: Row) -> set[tuple[str, Row]]:
    seen: set[tuple[str, Row]] = set()
    _walk(state, node, row, seen)
    return seen


def _pick(steps: list[TraceStep], key: str) -> list[Any]:
    """The part ``key`` of the last step of the question itself that recorded it; when only its
    sub-questions recorded one (a decomposition), each sub-question's last."""
    own = [s for s in steps if key in s.part and s.level == 1]
    if own:
        return [own[-1].part[key]]
    last: dict[str, Any] = {}
    for s in steps:
        if key in s.part:
            last[s.question] = s.part[key]
    return list(last.values())


def _experts(routing: list[dict[str, Any]]) -> list[ExpertChoice]:
    best: dict[str, float] = {}
    for decision in routing:
        for e in decision["experts"]:
            best[e["name"]] = max(best.get(e["name"], float("-inf")), e["score"])
    return [ExpertChoice(name=n, score=round(s, 6)) for n, s in best.items()]


def _one_per_node(steps: list[TraceStep]) -> list[TraceStep]:
    seen: dict[str, TraceStep] = {}
    for s in steps:
        seen.setdefault(s.node, s)
    return list(seen.values())
