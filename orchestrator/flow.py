"""Nodes that change which questions go where: cascades (``escalate``) and Decomposed Prompting
(``decompose`` + ``compose``).

``escalate`` splits a sub-batch in two branches by confidence; the branches join again at an input
that merges (``output.final``). ``decompose`` turns each question into sub-questions that flow
through any nodes (a router, experts) as rows of their own, batched like questions; ``compose``
gathers each question's sub-question answers back (a grouped input) and an LLM writes the answer.

Example (YAML, the built-in ``cascade``)::

    - {name: escalate, type: escalate, params: {threshold: 0.67}}
    edges:
      - {from: agree.final, to: escalate.final}
      - {from: escalate.final, to: output.final}          # sure: the cheap answer stands
      - {from: escalate.questions, to: router.questions}  # unsure: k=3 experts + synthesis
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.context import RunContext
from orchestrator.core import (
    NODE_TYPES,
    Aggregated,
    Completion,
    ExpertAnswer,
    Finals,
    Node,
    Question,
    Questions,
    Sampling,
    Selected,
    SubAnswers,
    SubQuestions,
)
from orchestrator.errors import PipelineValidationError
from orchestrator.prompts import (
    COMPOSE_SYSTEM,
    DECOMPOSE_SYSTEM,
    build_request,
    compose_user_prompt,
    decompose_user_prompt,
    strip_reasoning,
)

_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*])\s*(.+?)\s*$")


@NODE_TYPES.register("escalate")
class EscalateNode(Node):
    """A cascade step: where the incoming answer's confidence (e.g. the vote's agreement) is at
    least ``threshold``, it is final (``final`` output); the other questions continue on the
    ``questions`` output to stronger nodes. A ``final`` without a confidence escalates.
    """

    type_name = "escalate"
    outputs = {"final": Finals, "questions": Questions}

    def __init__(self, name: str, threshold: float = 0.67) -> None:
        super().__init__(name)
        if not 0.0 <= threshold <= 1.0:
            raise PipelineValidationError(f"node {name!r}: threshold must be within [0, 1], got {threshold}",
                                          hint="e.g. 0.67: escalate unless two of three samples agree")
        self.threshold = threshold

    def run(self, ctx: RunContext, *, questions: Questions, final: Finals) -> dict[str, Any]:
        sure = []
        for q, f in zip(questions, final):
            ok = f.confidence is not None and f.confidence >= self.threshold
            sure.append(ok)
            ctx.record(q.id, escalated=not ok, confidence=f.confidence, threshold=self.threshold,
                       **({} if f.confidence is not None else {"notes": [f"{self.name}: no confidence; escalated"]}))
        return {"final": Selected(list(final), sure), "questions": Selected(list(questions), [not s for s in sure])}


class _LlmNode(Node):
    """A node that prompts one model (default: the registry's aggregator model) once per question."""

    def __init__(self, name: str, model: str | None = None, max_tokens: int = 160, temperature: float = 0.0) -> None:
        super().__init__(name)
        if max_tokens < 1:
            raise PipelineValidationError(f"node {name!r}: max_tokens must be >= 1", hint="e.g. max_tokens: 160")
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature

    def _generate(self, ctx: RunContext, prompts: dict[str, tuple[str, str]], step: str) -> tuple[str, dict[str, Completion]]:
        """``{question id: (system, user)}`` -> ``(model, {question id: completion})`` in ONE batch."""
        model_name = self.model or ctx.registry.aggregator_model or ctx.registry.used_models()[0]
        model = ctx.registry.model(model_name)
        sampling = Sampling(temperature=self.temperature, max_tokens=self.max_tokens)
        requests = {qid: build_request(ctx.key(qid, step), model, system, user, sampling)
                    for qid, (system, user) in prompts.items()}
        done = ctx.dispatcher.run_batches({model_name: list(requests.values())}, label=self.name,
                                          progress=ctx.progress) if requests else {}
        return model_name, {qid: done[r.key] for qid, r in requests.items()}


@NODE_TYPES.register("decompose")
class DecomposeNode(_LlmNode):
    """Decomposed Prompting's decomposer: an LLM splits each question into at most ``max_parts``
    sub-questions (one batch for the run). Each sub-question becomes a row of its own, with id
    ``<question id>/<n>``; a reply with no usable line keeps the question whole (noted).
    """

    type_name = "decompose"
    outputs = {"questions": SubQuestions}

    def __init__(self, name: str, max_parts: int = 3, **llm: Any) -> None:
        super().__init__(name, **llm)
        if max_parts < 1:
            raise PipelineValidationError(f"node {name!r}: max_parts must be >= 1", hint="e.g. max_parts: 3")
        self.max_parts = max_parts

    def run(self, ctx: RunContext, *, questions: Questions) -> dict[str, Any]:
        prompts = {q.id: (DECOMPOSE_SYSTEM, decompose_user_prompt(q.text, self.max_parts)) for q in questions}
        model, replies = self._generate(ctx, prompts, "decompose")
        out = []
        for q in questions:
            parts = parse_subquestions(replies[q.id].text, self.max_parts)
            notes = [] if parts else [f"{self.name}: no sub-questions in the reply; kept the question whole"]
            parts = parts or [q.text]
            subs = [Question(id=f"{q.id}/{j + 1}", text=t) for j, t in enumerate(parts)]
            ctx.record(q.id, subquestions=parts, decomposer=model, notes=notes)
            out.append(subs)
        return {"questions": out}


def parse_subquestions(reply: str, max_parts: int) -> list[str]:
    """Numbered or bulleted lines of ``reply`` (reasoning before ``</think>`` dropped), at most ``max_parts``."""
    lines = [m.group(1) for line in strip_reasoning(reply).splitlines() if (m := _NUMBERED.match(line))]
    usable = [ln for ln in lines if len(ln.split()) >= 2]
    return list(dict.fromkeys(usable))[:max_parts]


@NODE_TYPES.register("compose")
class ComposeNode(_LlmNode):
    """Decomposed Prompting's composer: each question with its sub-questions' answers (the
    top-scored expert's, per sub-question) goes to an LLM that writes the final answer; one batch.
    A question kept whole (one sub-question equal to it) passes its answer through unchanged.
    """

    type_name = "compose"
    outputs = {"final": Finals}

    def run(self, ctx: RunContext, *, questions: Questions, subquestions: SubQuestions,
            answers: SubAnswers) -> dict[str, Any]:
        parts: dict[str, list[tuple[str, str]]] = {}
        best: dict[str, list[ExpertAnswer | None]] = {}
        for q, subs, per_sub in zip(questions, subquestions, answers):
            best[q.id] = [max(a, key=lambda x: x.score) if a else None for a in per_sub]
            parts[q.id] = [(s.text, b.text if b else "") for s, b in zip(subs, best[q.id])]
        prompts = {q.id: (COMPOSE_SYSTEM, compose_user_prompt(q.text, parts[q.id]))
                   for q in questions if not _whole(q, parts[q.id])}
        model, replies = self._generate(ctx, prompts, "compose")
        finals = []
        for q in questions:
            if q.id in replies:
                f = Aggregated(answer=replies[q.id].text.strip(), aggregator="compose", model=model,
                               finish_reason=replies[q.id].finish_reason)
            else:
                whole = best[q.id][0] if best[q.id] else None
                f = Aggregated(answer=strip_reasoning(parts[q.id][0][1]), aggregator="compose",
                               finish_reason=whole.finish_reason if whole else None,
                               notes=["compose skipped: the question was not decomposed"])
            ctx.record(q.id, final=f.model_dump(), notes=list(f.notes))
            finals.append(f)
        return {"final": finals}


def _whole(q: Question, parts: list[tuple[str, str]]) -> bool:
    return len(parts) == 1 and parts[0][0].strip() == q.text.strip()
