"""Contract checks a plug-in author runs on their router, aggregator, backend or node type, and the
fake dispatcher they run them with (no model is called). expertmix's own tests use the same checks.

Each ``check_*`` raises ``AssertionError`` naming what broke, so it works in pytest or anywhere::

    from orchestrator.config import ExpertRegistry
    from orchestrator.context import RunContext
    from orchestrator.testing import FakeDispatcher, check_aggregator

    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher())
    check_aggregator(MyAggregator(), ctx)      # in your package's test suite
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

from orchestrator.context import RunContext
from orchestrator.core import (
    SCORED,
    Aggregated,
    AggregationItem,
    Budget,
    Completion,
    ExpertAnswer,
    GenerationRequest,
    Question,
    RoutingDecision,
    Sampling,
    Selected,
    node_ports,
)

CONTRACT_QUESTIONS = [
    "What is 15% of 240?",
    "Write a Python function that reverses a linked list.",
    "What are the symptoms of iron deficiency anemia?",
    "Write a short poem about the sea.",
]


class FakeDispatcher:
    """A fake dispatcher for tests: records every batch; answers with ``reply(request)``.

    A reply longer than the request's ``max_tokens`` (counted in words) is cut there with
    ``finish_reason="length"``, as a model would be; otherwise ``"stop"``. ``loads`` counts a
    model's first batch, like a pool that never evicts. A scoring request (``continuations``) gets
    ``score(prompt, continuation)`` for each (default: minus the continuation's length).
    """

    def __init__(self, reply: Callable[[GenerationRequest], str] | None = None,
                 score: Callable[[str, str], float] | None = None) -> None:
        self.reply = reply or (lambda r: f"Answer: 84 ({r.model})")
        self.score = score or (lambda prompt, continuation: -float(len(continuation)))
        self.batches: list[tuple[str, str, int]] = []  # (label, model, size)
        self.loads: Counter[str] = Counter()
        self.closed = False

    def run_batches(self, groups, *, label: str = "experts", progress: bool = False) -> dict[str, Completion]:
        out = {}
        for model, reqs in groups.items():
            if not reqs:
                continue
            self.batches.append((label, model, len(reqs)))
            if model not in self.loads:
                self.loads[model] += 1
            for r in reqs:
                if r.continuations is not None:
                    out[r.key] = Completion(key=r.key, model=model, text="", finish_reason=SCORED,
                                            scores=[self.score(r.prompt or "", c) for c in r.continuations])
                    continue
                words = self.reply(r).split(" ")
                cut = len(words) > r.sampling.max_tokens
                out[r.key] = Completion(key=r.key, model=model, text=" ".join(words[:r.sampling.max_tokens]),
                                        completion_tokens=3, finish_reason="length" if cut else "stop")
        return out

    def model_loads(self) -> dict[str, int]:
        return dict(self.loads)

    def close(self) -> None:
        self.closed = True


class RecordingDispatcher:
    """Wraps a real dispatcher and logs every batch as ``(node label, model, requests)``: how
    tests check "one batch per model per node" and what each model was asked."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[tuple[str, str, list[GenerationRequest]]] = []

    def run_batches(self, groups, *, label: str = "experts", progress: bool = False) -> dict[str, Completion]:
        self.batches += [(label, m, list(g)) for m, g in groups.items() if g]
        return self.inner.run_batches(groups, label=label, progress=progress)

    def model_loads(self) -> dict[str, int]:
        return self.inner.model_loads()

    def close(self) -> None:
        self.inner.close()


def contract_questions() -> list[Question]:
    return [Question(id=f"q{i}", text=t) for i, t in enumerate(CONTRACT_QUESTIONS)]


def check_router(router: Any, ctx: RunContext) -> list[RoutingDecision]:
    """One decision per question in order, registered experts only, deterministic, honours
    ``Budget.max_experts``, JSON-able ``config()``. Returns the decisions."""
    questions = contract_questions()
    router.warm_up(ctx)
    decisions = router.route(questions, ctx)
    assert [d.question_id for d in decisions] == [q.id for q in questions], "one decision per question, in order"
    for d in decisions:
        assert d.router == router.name, f"decision names router {d.router!r}, not {router.name!r}"
        assert d.experts and all(e.name in ctx.registry.experts for e in d.experts), f"unknown expert in {d.names}"
    again = router.route(questions, ctx)
    assert [d.model_dump() for d in again] == [d.model_dump() for d in decisions], "not deterministic under one seed"
    budget, ctx.budget = ctx.budget, Budget(max_experts=1)
    try:
        assert all(len(set(d.names)) == 1 for d in router.route(questions, ctx)), "max_experts=1 not honoured"
    finally:
        ctx.budget = budget
    _json_config(router)
    return decisions


def check_aggregator(aggregator: Any, ctx: RunContext) -> list[Aggregated]:
    """One :class:`Aggregated` per item, in order, naming the aggregator; JSON-able ``config()``."""
    items = [AggregationItem(question=q, answers=[
        ExpertAnswer(expert="generalist", model="smollm2-135m", text="Answer: 36", score=0.6),
        ExpertAnswer(expert="coder", model="qwen-coder-0.5b", text="Answer: 36", score=0.4)])
        for q in contract_questions()]
    out = aggregator.aggregate(items, ctx)
    assert len(out) == len(items), f"{len(out)} results for {len(items)} items"
    for f in out:
        assert isinstance(f, Aggregated) and isinstance(f.answer, str), f"not an Aggregated: {f!r}"
        assert f.aggregator == aggregator.name, f"result names {f.aggregator!r}, not {aggregator.name!r}"
        assert f.confidence is None or 0.0 <= f.confidence <= 1.0, f"confidence {f.confidence} outside [0, 1]"
    _json_config(aggregator)
    return out


def check_backend(backend: Any) -> list[Completion]:
    """A loaded backend answers a batch in order, copies each key, returns ``n`` samples."""
    model = backend.spec.name
    requests = [GenerationRequest(key=f"contract/{i}", model=model, messages=[{"role": "user", "content": t}],
                                  prompt=None if backend.spec.chat else t,
                                  sampling=Sampling(max_tokens=8, n=2 if i == 0 else 1, temperature=0.7 if i == 0 else 0.0))
                for i, t in enumerate(CONTRACT_QUESTIONS)]
    out = backend.generate(requests)
    assert [c.key for c in out] == [r.key for r in requests], "completions must come back in request order, keys copied"
    assert len(out[0].texts) == 2, f"n=2 gave {len(out[0].texts)} samples"
    assert all(isinstance(c.text, str) and c.completion_tokens >= 0 and c.prompt_tokens >= 0 for c in out)
    return out


def check_node(node: Any, ctx: RunContext, inputs: dict[str, list[Any]]) -> dict[str, Any]:
    """``run`` takes the declared inputs, returns every declared output with one value per
    question (or a :class:`Selected`), and records JSON-able trace parts."""
    declared, outputs, optional = node_ports(type(node))
    missing = set(declared) - set(inputs) - set(optional)
    assert not missing, f"check_node needs values for the required inputs {sorted(missing)}"
    n = len(next(iter(inputs.values())))
    out = node.run(ctx, **inputs)
    assert set(out) == set(outputs), f"returned ports {sorted(out)}, declared {sorted(outputs)}"
    for port, value in out.items():
        values = value.values if isinstance(value, Selected) else value
        assert isinstance(values, list) and len(values) == n, f"{port!r}: {len(values)} values for {n} questions"
    json.dumps(ctx.parts)
    return out


def _json_config(component: Any) -> None:
    cfg = component.config()
    assert json.loads(json.dumps(cfg)) == cfg, "config() must be JSON-able"
