"""Training-free token-level fusion across different tokenizers (UniTE-style), and exact
multiple-choice fusion.

Decoding (:func:`fuse_generate`): the primary expert (router top-1) proposes, the peers vote.
At every step each model gives its next-token distribution under ITS OWN prompt template; the
candidates are the union of every model's top-k token strings (as bytes), each mapped to one
token of the primary (exact bytes, else the first token of the primary's encoding of them).
Every model scores every candidate the same way in its own vocabulary, the scores are
normalised over the candidates per model (UniTE) and averaged with per-question weights; the
best candidate is committed. The committed TEXT (bytes) is the source of truth: the primary
appends its token; a peer re-encodes the text, crops its KV cache to the longest common prefix
of ids and feeds only the suffix (:class:`~workers.fusion.lm.Stream`).

Optional gate (GaC / SAFE): ``gate=t`` fuses only at steps where the primary's top probability
is below ``t``; otherwise the primary's token is taken and the peers are not run (they catch up
lazily at the next fused step).

Multiple choice (:func:`fuse_choices`) needs no alignment: each option is scored by each model
under its own tokenizer (log-likelihood per byte) and the scores are averaged with the weights.

Example::

    >>> from workers.fusion.token_fusion import Member, fuse_generate   # doctest: +SKIP
    >>> out = fuse_generate([Member(qwen, qwen_ids, 0.6), Member(smol, smol_ids, 0.4)], max_tokens=32)  # doctest: +SKIP
    >>> out.text, out.fused_steps                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from workers.fusion.lm import LocalLM, Stream, valid_prefix
from workers.fusion.vocab import STOP
from orchestrator.errors import ConfigError


@dataclass
class Member:
    """One expert in a fused group: its model, its own prompt ids and its weight."""

    lm: LocalLM
    prompt_ids: list[int]
    weight: float = 1.0


@dataclass
class FusedOutput:
    text: str
    token_ids: list[int]                    # the primary's ids of the answer
    steps: int = 0
    fused_steps: int = 0                    # steps where the peers were consulted
    paused_steps: int = 0                   # steps inside a cut multi-byte character (primary alone)
    finish_reason: str = "length"
    decode_s: float = 0.0
    forward_s: dict[str, float] = field(default_factory=dict)
    fed_tokens: dict[str, int] = field(default_factory=dict)


def normalise(weights: Sequence[float]) -> list[float]:
    """Weights that sum to one (all-zero or negative -> uniform)."""
    w = [max(0.0, float(x)) for x in weights]
    total = sum(w)
    return [x / total for x in w] if total > 0 else [1.0 / len(w)] * len(w)


def perplexity_weights(nlls: Sequence[float], tau: float = 1.0) -> list[float]:
    """PackLLM-sim: softmax(-log ppl / tau) over the experts' mean NLL on the prompt."""
    if tau <= 0:
        raise ConfigError("token fusion: tau must be > 0", hint="use e.g. tau: 1.0")
    m = max(-x / tau for x in nlls)
    e = [math.exp(-x / tau - m) for x in nlls]
    return normalise(e)


def prompt_nll(lm: LocalLM, prompt_text: str, span: tuple[int, int]) -> float:
    """Mean negative log-likelihood (nats per token) of the tokens of ``span`` in ``prompt_text``."""
    import torch

    ids, offsets = lm.encode_offsets(prompt_text, prompt=True)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0].float()
    logp = torch.log_softmax(logits[:, : lm.table.size], dim=-1)
    picked = [i for i, (s, e) in enumerate(offsets) if i > 0 and s >= span[0] and e <= span[1] and e > s]
    if not picked:
        return 0.0
    idx = torch.tensor(picked, device=lm.device)
    nll = -logp[idx - 1].gather(1, torch.tensor([ids[i] for i in picked], device=lm.device)[:, None])
    return float(nll.mean())


class CandidateMap:
    """Bytes -> token id in one model: exact match, else the first token of encoding the bytes.

    Lookups are memoised per model, so a string costs a tokenizer call once per process.
    """

    def __init__(self, lm: LocalLM) -> None:
        self.lm = lm
        self._memo: dict[bytes, int | None] = {}

    def id_of(self, key: bytes) -> int | None:
        if key == STOP:
            return None
        hit = self.lm.table.lookup.get(key)
        if hit is not None:
            return hit
        if key not in self._memo:
            try:
                text = key.decode("utf-8")
            except UnicodeDecodeError:
                self._memo[key] = None
            else:
                ids = self.lm.encode(text)
                self._memo[key] = ids[0] if ids else None
        return self._memo[key]


_MAPS: dict[int, CandidateMap] = {}


def candidate_map(lm: LocalLM) -> CandidateMap:
    if id(lm) not in _MAPS:
        _MAPS[id(lm)] = CandidateMap(lm)
    return _MAPS[id(lm)]


def unite_step(lms: Sequence[LocalLM], probs: Sequence[Any], weights: Sequence[float], top_k: int) -> int | None:
    """One UniTE step: the primary (``lms[0]``) token id to commit, or ``None`` to stop.

    Candidates: the primary's own top-k ids, then each peer's top-k strings mapped to a primary id.
    """
    import torch

    primary = candidate_map(lms[0])
    keys: list[bytes] = []
    pids: list[int] = []             # -1 stands for STOP
    for j, (lm, p) in enumerate(zip(lms, probs)):
        for i in torch.topk(p, top_k).indices.tolist():
            k = lm.table.key(i)
            if k is None:
                continue
            pid = -1 if k == STOP else (i if j == 0 else primary.id_of(k))
            if pid is None:
                continue
            k = STOP if pid == -1 else lms[0].table.token_bytes[pid]
            if k not in keys:
                keys.append(k)
                pids.append(pid)
    fused = weights[0] * _scores(lms[0], probs[0], keys, pids)
    for lm, p, w in zip(lms[1:], probs[1:], weights[1:]):
        fused += w * _scores(lm, p, keys, [candidate_map(lm).id_of(k) for k in keys])
    best = pids[int(torch.argmax(fused))]
    return None if best == -1 else best


def _scores(lm: LocalLM, p: Any, keys: list[bytes], ids: list[int | None]) -> Any:
    """``lm``'s probability of each candidate (its ids given), normalised over the candidates."""
    import torch

    idx = torch.tensor([i if i is not None and i >= 0 else 0 for i in ids], device=p.device)
    s = p[idx].float().cpu()
    for j, (k, i) in enumerate(zip(keys, ids)):
        if k == STOP:
            s[j] = float(p[lm.table.stop_ids].sum()) if lm.table.stop_ids else 0.0
        elif i is None:
            s[j] = 0.0
        elif k in lm.table.same_bytes:      # every id that spells these bytes
            s[j] = float(p[lm.table.same_bytes[k]].sum())
    total = float(s.sum())
    return s / total if total > 0 else s


def fuse_generate(members: Sequence[Member], *, max_tokens: int = 64, top_k: int = 10,
                  gate: float | None = None, stop: Sequence[str] = ()) -> FusedOutput:
    """Greedy joint decoding of one answer; ``members[0]`` is the primary."""
    if not members:
        raise ConfigError("token fusion needs at least one expert")
    t0 = time.perf_counter()
    lms = [m.lm for m in members]
    weights = normalise([m.weight for m in members])
    streams = [m.lm.stream(m.prompt_ids) for m in members]
    probs = streams[0].advance_to(members[0].prompt_ids).probs
    lead = lms[0].answer_lead.encode()
    out = FusedOutput(text="", token_ids=[])
    for _ in range(max_tokens):
        committed = lms[0].table.text_bytes(out.token_ids)
        choice = _choose(lms, streams, probs, committed, weights, top_k, gate, out)
        out.steps += 1
        if choice is None or choice in lms[0].table.special_ids:
            out.finish_reason = "stop"
            break
        out.token_ids.append(choice)
        text = valid_prefix(_strip_lead(lms[0].table.text_bytes(out.token_ids), lead))
        if any(s and s in text for s in stop):
            out.finish_reason = "stop"
            break
        probs = streams[0].advance_to(streams[0].ids + [choice]).probs
    out.text = _cut_stops(valid_prefix(_strip_lead(lms[0].table.text_bytes(out.token_ids), lead)), stop)
    out.decode_s = time.perf_counter() - t0
    for lm, s in zip(lms, streams):
        out.forward_s[lm.name] = out.forward_s.get(lm.name, 0.0) + s.forward_s
        out.fed_tokens[lm.name] = out.fed_tokens.get(lm.name, 0) + s.fed_total
    return out


def _choose(lms, streams: list[Stream], probs, committed: bytes, weights, top_k, gate, out: FusedOutput) -> int | None:
    if len(lms) == 1 or (gate is not None and float(probs.max()) >= gate):
        return _primary_choice(lms[0], probs)
    if valid_prefix(committed).encode() != committed:   # inside a multi-byte character
        out.paused_steps += 1
        return _primary_choice(lms[0], probs)
    peer_probs = [_follow(s, streams[0], committed, lms[0]) for s in streams[1:]]
    out.fused_steps += 1
    return unite_step(lms, [probs, *peer_probs], weights, top_k)


def _follow(peer: Stream, primary: Stream, committed: bytes, lead_lm: LocalLM):
    """A peer with the primary's vocabulary takes the primary's ids as they are (no re-tokenizing
    drift); any other peer re-encodes the committed text and crops to the common prefix."""
    if peer.lm.table.signature == lead_lm.table.signature and peer.lm.answer_lead == lead_lm.answer_lead:
        return peer.advance_to(peer.prompt_ids + primary.ids[len(primary.prompt_ids):]).probs
    return peer.sync(committed, lead_lm.answer_lead).probs


def _primary_choice(lm: LocalLM, probs) -> int | None:
    i = int(probs.argmax())
    return None if i in lm.table.stop_ids else i


def _strip_lead(raw: bytes, lead: bytes) -> bytes:
    return raw[len(lead):] if lead and raw.startswith(lead) else raw


def _cut_stops(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


# ---- multiple choice: exact per-model scoring, fused scores -----------------------------------
def choice_scores(lm: LocalLM, prompt_ids: list[int], choices: Sequence[str]) -> list[float]:
    """Log-likelihood per byte of each choice as the continuation of ``prompt_ids`` (own tokenizer).

    The prompt is run once; each choice is fed on top of its cache, then the cache is cropped back.
    """
    import torch

    stream = lm.stream(prompt_ids)
    first = stream.advance_to(prompt_ids)
    scores = []
    for choice in choices:
        text = lm.answer_lead + choice
        ids = lm.encode(text)
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids], device=lm.device), past_key_values=stream.cache,
                              use_cache=True).logits[0].float()
        stream.cache.crop(-len(ids))
        logits[:, lm.table.banned_ids] = float("-inf")
        logp = torch.log_softmax(logits[:, : lm.table.size], dim=-1)
        lp = float(torch.log(first.probs[ids[0]].clamp_min(1e-30)))
        if len(ids) > 1:
            lp += float(logp[:-1].gather(1, torch.tensor(ids[1:], device=lm.device)[:, None]).sum())
        scores.append(lp / max(1, len(choice.encode("utf-8"))))
    return scores


def fuse_choices(per_model: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """Weighted sum of per-model choice scores (log-linear pool, per-byte normalised)."""
    w = normalise(weights)
    n = len(per_model[0])
    return [sum(wj * s[c] for wj, s in zip(w, per_model)) for c in range(n)]
