"""Text fusion: an aggregator LLM weighs the k answers and states one final answer (Symbolic-MoE / MoA).

Procedure per question: extract each expert's final answer in the question's format (a choice
letter, a number, yes/no; free-form questions keep the text), then

- every answer states the same final value (``pass_single``): keep the best-scored one, no call;
- else the aggregator model gets the question, each response with the final answer it states, the
  tally of those answers, and the format its reply must end with (``Answer: <value>``);
- the reply's own final answer is extracted; a reply that states none (cut off, off format) is
  replaced by the score-weighted vote's winner, and the trace says so.

All questions of a run go to the aggregator model as ONE batch. The model is the one pinned by
``model``, else Symbolic-MoE's validated choice (``aggregator.json`` in ``profiles``), else the
registry's ``aggregator_model`` (see :mod:`aggregators.model_choice`).

Example (YAML)::

    - name: aggregate
      type: aggregator
      params: {aggregator: synthesis, max_tokens: 256}
"""

from __future__ import annotations

from typing import Any

from aggregators.answers import KINDS, final_value, format_final, question_kind, tally
from aggregators.base import AGGREGATORS, Aggregated, AggregationItem
from aggregators.model_choice import aggregator_model
from orchestrator.context import RunContext
from orchestrator.core import Sampling
from orchestrator.errors import ConfigError
from orchestrator.prompts import FUSION_SYSTEM, build_request, fusion_user_prompt, strip_reasoning


@AGGREGATORS.register("synthesis")
class SynthesisAggregator:
    """An LLM fuses the experts' answers into one that ends with the question's final-answer format."""

    name = "synthesis"
    streams_answer = True  # its generated text is the answer (orchestrator.streaming)

    def __init__(self, model: str | None = None, max_tokens: int = 256, temperature: float = 0.0,
                 pass_single: bool = True, answer_type: str = "auto", profiles: str | None = None) -> None:
        if max_tokens < 1:
            raise ConfigError("synthesis aggregator: max_tokens must be >= 1")
        if answer_type not in KINDS:
            raise ConfigError(f"synthesis aggregator: unknown answer_type {answer_type!r}", hint=f"use one of {KINDS}")
        self.model, self.max_tokens, self.temperature, self.pass_single = model, max_tokens, temperature, pass_single
        self.answer_type, self.profiles = answer_type, profiles

    @property
    def passes_single_answer(self) -> bool:
        """A question with one distinct expert answer keeps it: that expert's tokens can stream."""
        return self.pass_single

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "pass_single": self.pass_single, "answer_type": self.answer_type, "profiles": self.profiles}

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        kinds = [self.answer_type if self.answer_type != "auto" else question_kind(it.question.text) for it in items]
        calls = [self._needs_call(item, kind) for item, kind in zip(items, kinds)]
        if not any(calls):  # every answer passes through: skip choosing the model (it reads a file)
            if self.model:
                ctx.registry.model(self.model)  # a pinned model the registry lacks still fails
            return [self._passed(item, kind) for item, kind in zip(items, kinds)]
        model_name, source = aggregator_model(self.model, ctx.registry, profiles=self.profiles)
        model = ctx.registry.model(model_name)
        sampling = Sampling(temperature=self.temperature, max_tokens=self.max_tokens)
        requests = {}
        for item, kind, call in zip(items, kinds, calls):
            if call:
                stated = [(a.text, final_value(a.text, kind)) for a in item.answers]
                user = fusion_user_prompt(item.question.text, stated, kind)
                key = ctx.key(item.question.id, "aggregate", self.name)
                requests[item.question.id] = build_request(key, model, FUSION_SYSTEM, user, sampling)
        done = ctx.dispatcher.run_batches({model_name: list(requests.values())}, label="aggregate",
                                          progress=ctx.progress) if requests else {}
        out = []
        for item, kind in zip(items, kinds):
            req = requests.get(item.question.id)
            if req is None:
                out.append(self._passed(item, kind))
            else:
                fused = self._fused(item, kind, done[req.key].text, model_name, source)
                out.append(fused.model_copy(update={"finish_reason": done[req.key].finish_reason}))
        return out

    def _needs_call(self, item: AggregationItem, kind: str) -> bool:
        if not self.pass_single:
            return True
        if kind == "text":
            return len({a.text.strip() for a in item.answers}) > 1
        cands = tally(item.answers, kind)
        return not (len(cands) == 1 and cands[0].count == len(item.answers))

    def _passed(self, item: AggregationItem, kind: str) -> Aggregated:
        best = max(item.answers, key=lambda a: a.score) if item.answers else None
        note = "synthesis skipped: a single distinct expert answer" if len(item.answers) <= 1 or kind == "text" \
            else f"synthesis skipped: all {len(item.answers)} experts agree"
        return Aggregated(answer=strip_reasoning(best.text) if best else "", aggregator=self.name, model=None, notes=[note],
                          finish_reason=best.finish_reason if best else None)

    def _fused(self, item: AggregationItem, kind: str, text: str, model: str, source: str) -> Aggregated:
        text = text.strip()
        notes = [f"aggregator model {model}: {source}"]
        if kind == "text" or final_value(text, kind) is not None:
            return Aggregated(answer=text, aggregator=self.name, model=model, notes=notes)
        cands = tally(item.answers, kind, by="score")
        if not cands:
            return Aggregated(answer=text, aggregator=self.name, model=model,
                              notes=[*notes, f"synthesis: neither the aggregator nor any expert stated a {kind} answer"])
        notes.append(f"synthesis: the aggregator stated no {kind} answer; used the score-weighted vote ({cands[0].value})")
        return Aggregated(answer=f"{text}\n\n{format_final(cands[0].value, kind)}", aggregator=self.name, model=model,
                          notes=notes)
