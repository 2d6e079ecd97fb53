"""A fused group job: one question answered JOINTLY by several experts whose models share a process.

:class:`FusedJob` is JSON-able (it travels to a fleet worker unchanged); :func:`run_fused_jobs`
is the one domain function that answers jobs, in whichever process holds all the group's models
(the local dispatcher's, or a fleet worker that serves every model of the group).

``kind: token`` runs training-free token fusion (or, for a multiple-choice question with
``A. ...`` option lines, the exact per-option scoring path); ``kind: latent`` runs a trained (or,
with no ``fuser_dir``, untrained = primary-only) Mixture-of-Thoughts fuser.

Example::

    >>> job = FusedJob(key="r/q0/fuse", kind="token", question="What is 2+2?",
    ...                members=[FusedMember(expert="math-tutor", model="qwen-coder-0.5b", weight=1.0)])
    >>> job.models
    ['qwen-coder-0.5b']
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, Field

from orchestrator.config import ModelSpec
from orchestrator.errors import ConfigError
from orchestrator.prompts import LETTERS, split_choices

WeightMode = Literal["router", "ppl", "uniform"]


class FusedMember(BaseModel):
    expert: str
    model: str
    system: str | None = None
    weight: float = 1.0


class FusedJob(BaseModel):
    """One question for one fused group (``members[0]`` is the primary)."""

    key: str
    kind: Literal["token", "latent"]
    question: str
    members: list[FusedMember]
    max_tokens: int = 64
    stop: list[str] = Field(default_factory=list)
    weights: WeightMode = "router"
    tau: float = 1.0
    top_k: int = 10
    gate: float | None = None
    choices: Literal["auto", "off"] = "auto"
    fuser_dir: str | None = None
    prompt_only: bool = False
    device: str = "auto"

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(m.model for m in self.members))


class FusedResult(BaseModel):
    key: str
    text: str
    model: str
    weights: list[float]
    notes: list[str] = Field(default_factory=list)
    decode_s: float = 0.0
    forward_s: dict[str, float] = Field(default_factory=dict)


def run_fused_jobs(jobs: list[FusedJob], spec_of: Callable[[str], ModelSpec]) -> list[FusedResult]:
    """Answer every job in this process (each model loads once per process, then stays);
    ``spec_of(name)`` gives a model's spec (``registry.model``). Torch's thread cap holds only
    while they run (:func:`~workers.fusion.lm.torch_threads`)."""
    from workers.fusion.lm import torch_threads

    with torch_threads():
        return [_run_one(job, spec_of) for job in jobs]


def _run_one(job: FusedJob, spec_of: Callable[[str], ModelSpec]) -> FusedResult:
    from workers.fusion import lm as lm_mod

    if not job.members:
        raise ConfigError(f"fused job {job.key!r} has no experts")
    lms = [lm_mod.load_lm(spec_of(m.model), job.device) for m in job.members]
    if job.kind == "latent":
        return _run_latent(job, lms)
    return _run_token(job, lms)


def _weights(job: FusedJob, lms: list, question: str) -> list[float]:
    from workers.fusion.token_fusion import normalise, perplexity_weights, prompt_nll

    if job.weights == "uniform" or len(lms) == 1:
        return normalise([1.0] * len(lms))
    if job.weights == "router":
        return normalise([m.weight for m in job.members])
    nlls = []
    for lm, m in zip(lms, job.members):
        text, span = lm.render(m.system, question)
        nlls.append(prompt_nll(lm, text, span))
    return perplexity_weights(nlls, job.tau)


def _run_token(job: FusedJob, lms: list) -> FusedResult:
    from workers.fusion.token_fusion import Member, choice_scores, fuse_choices, fuse_generate

    mc = split_choices(job.question) if job.choices == "auto" else None
    question = mc[0] if mc else job.question
    weights = _weights(job, lms, question)
    if mc:
        per_model = [choice_scores(lm, lm.prompt_ids(m.system, question), mc[1]) for lm, m in zip(lms, job.members)]
        fused = fuse_choices(per_model, weights)
        best = max(range(len(fused)), key=fused.__getitem__)
        return FusedResult(key=job.key, text=f"{LETTERS[best]}. {mc[1][best]}", model=lms[0].name, weights=weights,
                           notes=[f"token fusion: exact multiple-choice scoring of {len(mc[1])} options by {len(lms)} models"])
    members = [Member(lm, lm.prompt_ids(m.system, question), w) for lm, m, w in zip(lms, job.members, weights)]
    out = fuse_generate(members, max_tokens=job.max_tokens, top_k=job.top_k, gate=job.gate, stop=job.stop)
    notes = [f"token fusion: {out.fused_steps}/{out.steps} steps fused over {len(lms)} models"
             + (f", {out.paused_steps} inside multi-byte characters" if out.paused_steps else "")]
    return FusedResult(key=job.key, text=out.text.strip(), model=lms[0].name, weights=weights, notes=notes,
                       decode_s=round(out.decode_s, 4), forward_s={k: round(v, 4) for k, v in out.forward_s.items()})


def _run_latent(job: FusedJob, lms: list) -> FusedResult:
    from workers.fusion.mot import LatentFuser
    from workers.fusion.mot_decode import latent_generate

    if len(lms) < 2 and not job.fuser_dir:   # nothing to fuse: the primary alone, and the trace says so
        res = _run_token(job.model_copy(update={"choices": "off"}), lms)
        return res.model_copy(update={"notes": ["latent fusion: one model routed and no trained fuser: the primary alone"]})
    by_name = {lm.name: lm for lm in lms}
    if job.fuser_dir:
        fuser = LatentFuser.load(Path(job.fuser_dir).expanduser(), by_name)
    else:
        fuser = LatentFuser(lms[0], lms[1:], prompt_only=job.prompt_only)
    try:
        systems = {m.model: m.system for m in job.members}
        out = latent_generate(fuser, systems, job.question, max_tokens=job.max_tokens, stop=job.stop)
    finally:
        fuser.close()
    note = "latent fusion: " + (f"trained fuser {job.fuser_dir}" if job.fuser_dir else "UNTRAINED fuser (zero gate: the primary alone)")
    return FusedResult(key=job.key, text=out.text.strip(), model=fuser.primary.name, weights=[], notes=[note],
                       decode_s=round(out.decode_s, 4), forward_s={k: round(v, 4) for k, v in out.forward_s.items()})
