"""Pipeline nodes that fuse experts INSIDE the models: ``token_fusion`` and ``latent_fusion``.

Both take the run's questions and routing decisions and generate one answer per question jointly
from the chosen experts (a fused group), so they replace an ``experts`` + ``aggregator`` pair.
The group's models must live in one process: the node hands :class:`~workers.fusion.group.FusedJob`
objects to the dispatcher's ``run_fused`` (the local dispatcher runs them in this process; the
fleet dispatcher sends each to a worker that serves ALL of the group's models).

YAML::

    - name: fuse
      type: token_fusion
      params: {k: 3, weights: router, top_k: 10, gate: null, max_tokens: 64}
    - name: fuse
      type: latent_fusion
      params: {fuser: ~/.expertmix/fusers/default, max_tokens: 64}

Weights (``weights``): ``router`` (the decision's scores), ``ppl`` (PackLLM: softmax of minus
each expert's mean NLL on the question, temperature ``tau``) or ``uniform``. ``gate: t`` fuses
only at steps where the primary's top probability is below ``t``. ``choices: auto`` answers a
question that ends in ``A. ..``/``B. ..`` option lines by exact per-option scoring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config import expertmix_home
from orchestrator.context import RunContext
from orchestrator.core import Aggregated, Node, Question, RoutingDecision
from orchestrator.errors import ConfigError, PipelineValidationError
from workers.fusion.group import FusedJob, FusedMember, run_fused_jobs

DEFAULT_FUSER = "fusers/default"
"""Where ``latent_fusion`` looks for a trained fuser by default (under ``$EXPERTMIX_HOME``)."""


class _FusionNode(Node):
    inputs = {"questions": "questions", "decisions": "decisions"}
    outputs = {"final": "final"}
    kind = "token"

    def __init__(self, name: str, k: int = 3, max_tokens: int | None = None, device: str = "auto",
                 choices: str = "auto") -> None:
        super().__init__(name)
        if k < 1 or (max_tokens is not None and max_tokens < 1):
            raise PipelineValidationError(f"node {name!r}: k and max_tokens must be >= 1", hint="use positive numbers")
        if choices not in ("auto", "off"):
            raise PipelineValidationError(f"node {name!r}: choices must be auto or off, got {choices!r}")
        self.k, self.max_tokens, self.device, self.choices = k, max_tokens, device, choices

    def run(self, ctx: RunContext, *, questions: list[Question], decisions: list[RoutingDecision]) -> dict[str, list[Any]]:
        jobs = [self._job(ctx, q, d) for q, d in zip(questions, decisions)]
        runner = getattr(ctx.dispatcher, "run_fused", None)
        if runner is None:
            ctx.notes.append(f"{self.name}: dispatcher {type(ctx.dispatcher).__name__} has no run_fused; fused groups ran in this process")
            results = run_fused_jobs(jobs, ctx.registry.model)
        else:
            results = runner(jobs, label=self.name, progress=ctx.progress)
        by_key = {r.key: r for r in results}
        final = []
        for q, job in zip(questions, jobs):
            r = by_key[job.key]
            members = ", ".join(f"{m.expert}({m.model})" for m in job.members)
            weights = f" weights {[round(w, 3) for w in r.weights]}" if r.weights else ""
            f = Aggregated(answer=r.text, aggregator=self.type_name, model=r.model,
                           notes=[f"{self.type_name}: group {members}{weights}", *r.notes])
            ctx.record(q.id, final=f.model_dump(), notes=list(f.notes), fused_decode_s=r.decode_s,
                       forward_s=r.forward_s)
            final.append(f)
        return {"final": final}

    def _members(self, ctx: RunContext, d: RoutingDecision) -> list[FusedMember]:
        scores: dict[str, float] = {}
        for c in d.experts:  # a repeated draw adds weight, not a second member
            scores[c.name] = scores.get(c.name, 0.0) + c.score
        ranked = sorted(scores, key=lambda e: -scores[e])[: self.k]
        return [FusedMember(expert=e, model=ctx.registry.expert(e).model, system=ctx.registry.expert(e).system_prompt,
                            weight=scores[e]) for e in ranked]

    def _limits(self, ctx: RunContext, members: list[FusedMember]) -> tuple[int, list[str]]:
        primary = ctx.registry.expert(members[0].expert)
        stops = list(dict.fromkeys(s for m in members for s in ctx.registry.expert(m.expert).sampling.stop))
        cap = ctx.budget.max_tokens if ctx.budget and ctx.budget.max_tokens else None
        mt = self.max_tokens or primary.sampling.max_tokens
        return (min(mt, cap) if cap else mt), stops

    def _job(self, ctx: RunContext, q: Question, d: RoutingDecision) -> FusedJob:
        raise NotImplementedError


class TokenFusionNode(_FusionNode):
    """Training-free token-level fusion (UniTE union of top-k, per-model KV caches)."""

    type_name = "token_fusion"

    def __init__(self, name: str, k: int = 3, weights: str = "router", tau: float = 1.0, top_k: int = 10,
                 gate: float | None = None, max_tokens: int | None = None, device: str = "auto",
                 choices: str = "auto") -> None:
        super().__init__(name, k=k, max_tokens=max_tokens, device=device, choices=choices)
        if weights not in ("router", "ppl", "uniform"):
            raise PipelineValidationError(f"node {name!r}: weights must be router, ppl or uniform, got {weights!r}")
        if top_k < 1 or tau <= 0 or (gate is not None and not 0 < gate <= 1):
            raise PipelineValidationError(f"node {name!r}: need top_k >= 1, tau > 0 and 0 < gate <= 1",
                                          hint="see docs/latent.md for the token_fusion settings")
        self.weights, self.tau, self.top_k, self.gate = weights, tau, top_k, gate

    def _job(self, ctx: RunContext, q: Question, d: RoutingDecision) -> FusedJob:
        members = self._members(ctx, d)
        max_tokens, stop = self._limits(ctx, members)
        return FusedJob(key=ctx.key(q.id, self.name), kind="token", question=q.text, members=members,
                        max_tokens=max_tokens, stop=stop, weights=self.weights, tau=self.tau, top_k=self.top_k,
                        gate=self.gate, choices=self.choices, device=self.device)


class LatentFusionNode(_FusionNode):
    """Learned latent fusion (Mixture of Thoughts): a trained fuser's primary reads its peers.

    The fuser fixes the group's models; the routing decision supplies each model's role (the
    best-scored chosen expert on that model, else the registry's first expert on it).
    """

    type_name = "latent_fusion"

    def __init__(self, name: str, fuser: str | None = DEFAULT_FUSER, max_tokens: int | None = None,
                 device: str = "auto", prompt_only: bool = False) -> None:
        super().__init__(name, k=8, max_tokens=max_tokens, device=device, choices="off")
        self.fuser_dir = _resolve(fuser) if fuser else None
        self.prompt_only = prompt_only
        self._models: list[str] | None = None

    def warm_up(self, ctx: RunContext) -> None:
        self._models = self._group_models(ctx)

    def _group_models(self, ctx: RunContext) -> list[str]:
        if self.fuser_dir is None:
            return []
        cfg_path = self.fuser_dir / "fuser.json"
        if not cfg_path.exists():
            raise ConfigError(f"node {self.name!r}: no trained fuser in {self.fuser_dir}",
                              hint=f"train one with `expertmix fuse train --out {self.fuser_dir}`, or set params.fuser")
        cfg = json.loads(cfg_path.read_text())
        models = [cfg["primary"], *cfg["peers"]]
        for m in models:
            ctx.registry.model(m)
        return models

    def _job(self, ctx: RunContext, q: Question, d: RoutingDecision) -> FusedJob:
        chosen = self._members(ctx, d)
        models = self._models if self._models is not None else self._group_models(ctx)
        if not models:     # untrained: the decision's distinct models, top-1 first
            models = list(dict.fromkeys(m.model for m in chosen))
        members = [self._role(ctx, model, chosen) for model in models]
        max_tokens, stop = self._limits(ctx, members)
        return FusedJob(key=ctx.key(q.id, self.name), kind="latent", question=q.text, members=members,
                        max_tokens=max_tokens, stop=stop, fuser_dir=str(self.fuser_dir) if self.fuser_dir else None,
                        prompt_only=self.prompt_only, device=self.device)

    @staticmethod
    def _role(ctx: RunContext, model: str, chosen: list[FusedMember]) -> FusedMember:
        for m in chosen:
            if m.model == model:
                return m
        expert = next((e for e in ctx.registry.experts.values() if e.model == model), None)
        if expert is None:
            raise ConfigError(f"latent fusion: no expert in the registry uses model {model!r}")
        return FusedMember(expert=expert.name, model=model, system=expert.system_prompt, weight=0.0)


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else expertmix_home() / p
