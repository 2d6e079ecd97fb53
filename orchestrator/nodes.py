"""The built-in node types, registered by name in :data:`~orchestrator.core.NODE_TYPES` (the YAML
allowlist) through the ``expertmix.nodes`` entry point group, like third-party node types.

Every node works on a whole sub-batch at once: each port carries one value per question it was
given, in question order. That is what lets the ``experts`` node send every model ONE batch.
A node's inputs are its ``run`` keyword parameters (a default makes one optional); it records its
own part of each question's trace with ``ctx.record``.

Port types: ``questions`` (Question), ``decisions`` (RoutingDecision), ``answers``
(list[ExpertAnswer]), ``final`` (Aggregated). Branching, decomposition and cascades live in
:mod:`orchestrator.flow`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.context import RunContext
from orchestrator.core import (
    NODE_TYPES,
    AggregationItem,
    Answers,
    Decisions,
    ExpertAnswer,
    Finals,
    GenerationRequest,
    MergedFinals,
    Node,
    Question,
    Questions,
    RoutingDecision,
    Sampling,
    group_by_model,
    make_aggregator,
    make_router,
)
from orchestrator.errors import ConfigError, PipelineValidationError
from orchestrator.prompts import expert_request, references_prompt


@NODE_TYPES.register("input")
class InputNode(Node):
    """The run's questions enter here (the executor feeds ``questions``)."""

    type_name = "input"
    inputs = {}
    outputs = {"questions": Questions}

    def run(self, ctx: RunContext) -> dict[str, list[Any]]:
        raise RuntimeError("the executor feeds the input node")


@NODE_TYPES.register("output")
class OutputNode(Node):
    """The run's final answers leave here; ``final`` may be fed by several branches (each question
    arrives on one of them)."""

    type_name = "output"

    def run(self, ctx: RunContext, *, final: MergedFinals) -> dict[str, list[Any]]:
        return {}


@NODE_TYPES.register("router")
class RouterNode(Node):
    """Picks experts per question. ``router`` names a registered router; other params go to it
    (``k`` is the fan-out width)."""

    type_name = "router"
    outputs = {"decisions": Decisions}

    def __init__(self, name: str, router: str = "keyword", **params: Any) -> None:
        super().__init__(name)
        self.router_name = router
        try:
            self.router = make_router(router, **params)
        except TypeError as exc:
            raise PipelineValidationError(f"node {name!r}: bad params for router {router!r}: {exc}",
                                          hint="check the router's settings in docs/routers.md") from None

    def warm_up(self, ctx: RunContext) -> None:
        self.router.warm_up(ctx)

    def run(self, ctx: RunContext, *, questions: Questions) -> dict[str, list[Any]]:
        decisions: list[RoutingDecision] = self.router.route(questions, ctx)
        if len(decisions) != len(questions):
            raise ConfigError(f"router {self.router_name!r} returned {len(decisions)} decisions for {len(questions)} questions")
        for q, d in zip(questions, decisions):
            ctx.record(q.id, routing=d.model_dump(), notes=list(d.notes))
        return {"decisions": decisions}


@NODE_TYPES.register("experts")
class ExpertsNode(Node):
    """Fan-out: every chosen expert answers its question. All calls of the run are grouped per model
    and each model gets one batch.

    ``max_tokens`` lowers every expert's limit (budgets are caps: the expert's own ``max_tokens``,
    this node's and the request budget's ``max_tokens``, the smallest wins). An expert drawn twice
    (Symbolic-MoE draws with replacement) adds weight with ``repeats: weight`` (default: one call,
    the scores summed) or, with ``repeats: sample``, is sampled once per draw at
    ``sample_temperature`` (self-consistency). ``samples: n`` samples every chosen expert n times.
    ``references`` (optional input) are a previous round's answers that each expert reads before
    answering (Mixture-of-Agents layer 2+).
    """

    type_name = "experts"
    outputs = {"answers": Answers}

    def __init__(self, name: str, max_tokens: int | None = None, repeats: str = "weight", samples: int = 1,
                 sample_temperature: float = 0.7) -> None:
        super().__init__(name)
        if max_tokens is not None and max_tokens < 1:
            raise PipelineValidationError(f"node {name!r}: max_tokens must be >= 1", hint="remove it or set a positive number")
        if repeats not in ("weight", "sample"):
            raise PipelineValidationError(f"node {name!r}: unknown repeats {repeats!r}", hint="use 'weight' or 'sample'")
        if samples < 1 or sample_temperature <= 0:
            raise PipelineValidationError(f"node {name!r}: samples must be >= 1 and sample_temperature > 0",
                                          hint="e.g. samples: 5, sample_temperature: 0.7")
        self.max_tokens, self.repeats, self.samples, self.sample_temperature = max_tokens, repeats, samples, sample_temperature

    def run(self, ctx: RunContext, *, questions: Questions, decisions: Decisions,
            references: Answers | None = None) -> dict[str, list[Any]]:
        refs = references or [None] * len(questions)
        plan: list[list[tuple[str, float, GenerationRequest]]] = []
        for q, d, ref in zip(questions, decisions, refs):
            draws: dict[str, list[float]] = {}
            for choice in d.experts:
                draws.setdefault(choice.name, []).append(choice.score)
            plan.append([(e, sum(s), self._request(ctx, q, e, self._n(len(s)), ref)) for e, s in draws.items()])
        requests = [r for per_q in plan for _, _, r in per_q]
        done = ctx.dispatcher.run_batches(group_by_model(requests), label=self.name, progress=ctx.progress)
        answers = []
        for q, per_q, ref in zip(questions, plan, refs):
            row = []
            for e, score, r in per_q:
                comp = done[r.key]
                texts = comp.texts if r.sampling.n > 1 and comp.texts else [comp.text]
                row.extend(ExpertAnswer(expert=e, model=r.model, text=t, score=score / len(texts),
                                        completion_tokens=comp.completion_tokens // len(texts),
                                        finish_reason=comp.finish_reason) for t in texts)
            ctx.record(q.id, answers=[a.model_dump() for a in row], **({"references": len(ref)} if ref else {}))
            answers.append(row)
        return {"answers": answers}

    def _n(self, draws: int) -> int:
        return self.samples * (draws if self.repeats == "sample" else 1)

    def _request(self, ctx: RunContext, q: Question, expert_name: str, n: int,
                 refs: list[ExpertAnswer] | None) -> GenerationRequest:
        expert = ctx.registry.expert(expert_name)
        caps = [expert.sampling.max_tokens, self.max_tokens, getattr(ctx.budget, "max_tokens", None)]
        update: dict[str, Any] = {"max_tokens": min(c for c in caps if c is not None)}
        if n > 1:
            update.update(n=n, temperature=max(expert.sampling.temperature, self.sample_temperature),
                          seed=ctx.seed if expert.sampling.seed is None else expert.sampling.seed)
        sampling: Sampling = expert.sampling.model_copy(update=update)
        text = references_prompt(q.text, [a.text for a in refs]) if refs else q.text
        return expert_request(ctx.key(q.id, "expert", expert_name), expert, ctx.registry.model(expert.model),
                              text, sampling=sampling, context=q.context)


@NODE_TYPES.register("aggregator")
class AggregatorNode(Node):
    """Fan-in: fuses each question's expert answers into one. ``aggregator`` names the merge rule
    (``synthesis``, ``vote``, ...); other params go to it."""

    type_name = "aggregator"
    outputs = {"final": Finals}

    def __init__(self, name: str, aggregator: str = "synthesis", **params: Any) -> None:
        super().__init__(name)
        self.aggregator_name = aggregator
        try:
            self.aggregator = make_aggregator(aggregator, **params)
        except TypeError as exc:
            raise PipelineValidationError(f"node {name!r}: bad params for aggregator {aggregator!r}: {exc}",
                                          hint="check the aggregator's settings in docs/pipelines.md") from None

    def run(self, ctx: RunContext, *, questions: Questions, answers: Answers) -> dict[str, list[Any]]:
        items = [AggregationItem(question=q, answers=a) for q, a in zip(questions, answers)]
        finals = self.aggregator.aggregate(items, ctx)
        for q, f in zip(questions, finals):
            ctx.record(q.id, final=f.model_dump(), notes=list(f.notes))
        return {"final": finals}
