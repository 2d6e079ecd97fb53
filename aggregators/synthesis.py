"""Text fusion: an aggregator LLM reads the k answers and synthesises one (Symbolic-MoE / MoA).

All questions of a run go to the aggregator model as ONE batch.

Example (YAML)::

    - name: aggregate
      type: aggregator
      params: {aggregator: synthesis, model: qwen-coder-0.5b, max_tokens: 192}
"""

from __future__ import annotations

from typing import Any

from aggregators.base import AGGREGATORS, Aggregated, AggregationItem
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.prompts import SYNTHESIS_SYSTEM, build_request, strip_reasoning, synthesis_user_prompt
from orchestrator.core import Sampling


@AGGREGATORS.register("synthesis")
class SynthesisAggregator:
    """An LLM synthesises the final answer from the experts' answers.

    ``model`` defaults to the registry's ``aggregator_model``. With ``pass_single`` (default), a
    question that got a single distinct answer keeps it unchanged instead of spending a call.
    """

    name = "synthesis"

    def __init__(self, model: str | None = None, max_tokens: int = 192, temperature: float = 0.0,
                 pass_single: bool = True) -> None:
        if max_tokens < 1:
            raise ConfigError("synthesis aggregator: max_tokens must be >= 1")
        self.model, self.max_tokens, self.temperature, self.pass_single = model, max_tokens, temperature, pass_single

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "pass_single": self.pass_single}

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        model_name = self.model or ctx.registry.aggregator_model or ctx.registry.used_models()[0]
        model = ctx.registry.model(model_name)
        sampling = Sampling(temperature=self.temperature, max_tokens=self.max_tokens)
        requests = {}
        for item in items:
            if self._needs_call(item):
                key = ctx.key(item.question.id, "aggregate", self.name)
                user = synthesis_user_prompt(item.question.text, [a.text for a in item.answers])
                requests[item.question.id] = build_request(key, model, SYNTHESIS_SYSTEM, user, sampling)
        done = ctx.dispatcher.run_batches({model_name: list(requests.values())}, label="aggregate",
                                          progress=ctx.progress) if requests else {}
        out = []
        for item in items:
            req = requests.get(item.question.id)
            if req is None:
                only = item.answers[0].text if item.answers else ""
                out.append(Aggregated(answer=strip_reasoning(only), aggregator=self.name, model=None,
                                      notes=["synthesis skipped: a single distinct expert answer"]))
            else:
                out.append(Aggregated(answer=done[req.key].text.strip(), aggregator=self.name, model=model_name))
        return out

    def _needs_call(self, item: AggregationItem) -> bool:
        distinct = {a.text.strip() for a in item.answers}
        return not (self.pass_single and len(distinct) <= 1)
