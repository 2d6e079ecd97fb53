"""Select: the best of the experts' distinct final answers is picked (no rewriting).

Per question the k answers are grouped by their extracted final answer (:func:`~aggregators.answers.tally`);
one answer agreed by all passes through without a call. Otherwise (``method``):

- ``judge`` (default): the judge model sees the question and one representative response per
  candidate (with its support) and replies ``Best: <n>``. A reply that names no valid candidate
  falls back to the score-weighted vote, and the trace says so.
- ``loglik``: for multiple-choice and yes/no questions, each candidate's option text is scored by
  the aggregator model's log-likelihood after the question (zero-shot cloze ``Question: ...
  Answer:``, per character, as lm-eval-harness's ``acc_norm``); the most likely candidate wins, so
  the model chooses among the experts' answers without generating. Needs a local engine (vLLM
  prompt log-probabilities); other questions, hosted aggregator models and prompts too long for
  the model's context use the judge.

The chosen candidate's best-scored response is the answer, unchanged.

Example (YAML)::

    - name: aggregate
      type: aggregator
      params: {aggregator: select, max_tokens: 128}                  # judge
    - name: aggregate
      type: aggregator
      params: {aggregator: select, method: loglik}
"""

from __future__ import annotations

import re
from typing import Any

from aggregators.answers import KINDS, Candidate, question_kind, tally
from aggregators.base import AGGREGATORS, Aggregated, AggregationItem
from aggregators.model_choice import aggregator_model
from orchestrator.context import RunContext
from orchestrator.core import GenerationRequest, Sampling, can_score
from orchestrator.errors import ConfigError
from orchestrator.prompts import LETTERS, MAX_RESPONSE_CHARS, build_request, split_choices, strip_reasoning

JUDGE_SYSTEM = ("You are a strict judge. Several candidate answers to a question follow; exactly one final answer "
                "is correct. Check the reasoning of each and pick the correct one.")
METHODS = ("judge", "loglik")
_INSTRUCTION = re.compile(r"(answer|give|respond|reply)\b", re.IGNORECASE)  # a trailing answer-format line
_BEST = re.compile(r"best\s*(?:candidate)?\s*[:=]?\s*(?:candidate\s*)?#?\(?(\d+)\)?", re.IGNORECASE)


def judge_prompt(question: str, cands: list[Candidate], k: int) -> str:
    """The judge's user turn: numbered candidates with their final answer and support."""
    parts = [f"Question: {question.strip()}"]
    for i, c in enumerate(cands):
        body = strip_reasoning(c.texts[0])
        body = body if len(body) <= MAX_RESPONSE_CHARS else "..." + body[-MAX_RESPONSE_CHARS:]
        parts.append(f"Candidate {i + 1} (final answer {c.value}; given by {c.count} of {k} experts):\n{body}")
    parts.append(f"Which candidate's final answer is correct? Think briefly, then end with: Best: <1-{len(cands)}>")
    return "\n\n".join(parts)


def cloze_continuations(question: str, kind: str, cands: list[Candidate],
                        max_model_len: int) -> tuple[str, list[str]] | None:
    """``(context, continuations)`` to score the candidates of a multiple-choice or yes/no question
    by log-likelihood, or None when they cannot be (another kind, options not listed ``A. ..``, or a
    context that may not fit the model: about 2 characters per token, conservatively)."""
    head, _, last = question.strip().rpartition("\n\n")
    if head and len(last) < 120 and _INSTRUCTION.match(last):  # "Answer with the letter ...": not the stem
        question = head
    if kind == "choice":
        split = split_choices(question)
        if split is None:
            return None
        stem, options = split
        idx = [LETTERS.find(c.value) for c in cands]
        if any(i < 0 or i >= len(options) for i in idx):
            return None
        continuations = [" " + options[i] for i in idx]
    elif kind == "boolean":
        stem, continuations = question.strip(), [" " + c.value for c in cands]
    else:
        return None
    context = f"Question: {stem.strip()}\nAnswer:"
    if len(context) + max(map(len, continuations)) > 2 * max_model_len:
        return None
    return context, continuations


@AGGREGATORS.register("select")
class SelectAggregator:
    """An LLM judge chooses among the distinct final answers; the chosen response passes unchanged."""

    name = "select"

    def __init__(self, model: str | None = None, max_tokens: int = 128, answer_type: str = "auto",
                 profiles: str | None = None, method: str = "judge") -> None:
        if method not in METHODS:
            raise ConfigError(f"select aggregator: unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
        if max_tokens < 1:
            raise ConfigError("select aggregator: max_tokens must be >= 1")
        if answer_type not in KINDS or answer_type == "text":
            raise ConfigError(f"select aggregator: answer_type {answer_type!r} is not supported",
                              hint="use auto, choice, number, boxed or boolean (free-form answers: use synthesis)")
        self.model, self.max_tokens, self.answer_type, self.profiles = model, max_tokens, answer_type, profiles
        self.method = method

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "answer_type": self.answer_type,
                "profiles": self.profiles, "method": self.method}

    def aggregate(self, items: list[AggregationItem], ctx: RunContext) -> list[Aggregated]:
        model_name, source = aggregator_model(self.model, ctx.registry, profiles=self.profiles)
        model = ctx.registry.model(model_name)
        sampling = Sampling(temperature=0.0, max_tokens=self.max_tokens)
        plans, requests = [], {}
        for item in items:
            kind = self.answer_type if self.answer_type != "auto" else question_kind(item.question.text)
            cands = tally(item.answers, kind, by="score") if kind != "text" else []
            plans.append(cands)
            if len(cands) > 1:
                key = ctx.key(item.question.id, "aggregate", self.name)
                scoring = (cloze_continuations(item.question.text, kind, cands, model.max_model_len)
                           if self.method == "loglik" and can_score(model.backend, where=f"model {model_name!r}") else None)
                if scoring is not None:
                    context, continuations = scoring
                    requests[item.question.id] = GenerationRequest(
                        key=key, model=model_name, prompt=context, continuations=continuations,
                        sampling=Sampling(temperature=0.0, max_tokens=1))
                else:
                    user = judge_prompt(item.question.text, cands, len(item.answers))
                    requests[item.question.id] = build_request(key, model, JUDGE_SYSTEM, user, sampling)
        done = ctx.dispatcher.run_batches({model_name: list(requests.values())}, label="aggregate",
                                          progress=ctx.progress) if requests else {}
        out = []
        for item, cands in zip(items, plans):
            req = requests.get(item.question.id)
            if req is None:
                out.append(self._without_judge(item, cands))
                continue
            notes = [f"aggregator model {model_name}: {source}"]
            if req.continuations is not None:
                out.append(self._by_likelihood(cands, req.continuations, done[req.key].scores, model_name, notes))
                continue
            reply = done[req.key].text
            picks = [int(n) for n in _BEST.findall(reply) if 1 <= int(n) <= len(cands)]
            if picks:
                chosen = cands[picks[-1] - 1]
                notes.append(f"select: judge picked candidate {picks[-1]} ({chosen.value}) of {len(cands)}")
            else:
                chosen = cands[0]
                notes.append(f"select: the judge named no candidate; used the score-weighted vote ({chosen.value})")
            out.append(Aggregated(answer=chosen.texts[0], aggregator=self.name, model=model_name, notes=notes,
                                  finish_reason=chosen.finish_reasons[0]))
        return out

    def _by_likelihood(self, cands: list[Candidate], continuations: list[str], scores: list[float], model: str,
                       notes: list[str]) -> Aggregated:
        """The candidate whose option the aggregator model finds likeliest (per character)."""
        norm = [lp / max(1, len(c)) for lp, c in zip(scores, continuations)]
        best = max(range(len(cands)), key=lambda i: (norm[i], -i))
        chosen = cands[best]
        shown = ", ".join(f"{c.value} {n:.3f}" for c, n in zip(cands, norm))
        notes.append(f"select: log-likelihood per character under {model} picked {chosen.value} ({shown})")
        return Aggregated(answer=chosen.texts[chosen.best()], aggregator=self.name, model=model, notes=notes,
                          finish_reason=chosen.finish_reasons[chosen.best()])

    def _without_judge(self, item: AggregationItem, cands: list[Candidate]) -> Aggregated:
        if cands:
            return Aggregated(answer=cands[0].texts[0], aggregator=self.name, finish_reason=cands[0].finish_reasons[0],
                              notes=[f"select: one final answer ({cands[0].value}); no judge call"])
        best = max(item.answers, key=lambda a: a.score) if item.answers else None
        return Aggregated(answer=best.text.strip() if best else "", aggregator=self.name,
                          finish_reason=best.finish_reason if best else None,
                          notes=["select: no extractable answer; used the top-scored expert's answer"])
