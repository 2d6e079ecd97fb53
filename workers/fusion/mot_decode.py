"""Greedy decoding with a :class:`~workers.fusion.mot.LatentFuser`: lockstep, cached, causal.

The primary decodes with its KV cache; at each step every peer follows the committed text the way
token fusion's peers do (re-encode, crop the KV cache AND the cached hidden states to the longest
common prefix, feed the suffix) and the primary's new token attends to the peers' states whose
text ends at or before its own. With ``prompt_only`` (Cache-to-Cache style) the peers run on the
prompt only and every decoding step is the primary alone.

Example::

    >>> out = latent_generate(fuser, {"qwen-coder-0.5b": "Be brief."}, "What is 2+2?", max_tokens=16)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from workers.fusion.align import continuation_ends, encode_prompt
from workers.fusion.lm import Stream, adapt, valid_prefix
from workers.fusion.mot import LatentFuser, visible
from workers.fusion.token_fusion import FusedOutput, _cut_stops, _strip_lead


@dataclass
class _PeerMemory:
    stream: Stream
    prompt_ends: list[int]
    states: list[torch.Tensor]                 # per point [S, d]
    ends: list[int] = field(default_factory=list)

    def update(self, new_hidden: list[torch.Tensor], cropped: int, ends: list[int]) -> None:
        keep = len(self.stream.ids) - len(new_hidden[0]) if new_hidden else len(self.stream.ids)
        self.states = [torch.cat([s[:keep], h], dim=0) for s, h in zip(self.states, new_hidden)] if new_hidden else self.states
        self.ends = ends


@contextmanager
def _active(fuser: LatentFuser, peers: Sequence[_PeerMemory], primary_ends: list[int]) -> Iterator[None]:
    states = [[s[None] for s in m.states] for m in peers]
    p = torch.tensor([primary_ends], device=fuser.primary.device)
    allowed = visible(p, torch.tensor([[e for m in peers for e in m.ends]], device=fuser.primary.device))
    fuser._ctx = (states, allowed)
    try:
        yield
    finally:
        fuser._ctx = None


def latent_generate(fuser: LatentFuser, systems: dict[str, str | None], question: str, *, max_tokens: int = 64,
                    stop: Sequence[str] = ()) -> FusedOutput:
    """One greedy answer from the fused group; ``systems`` gives each model's system prompt."""
    t0 = time.perf_counter()
    p = fuser.primary
    pe = encode_prompt(p, systems.get(p.name), question)
    peers = [_start_peer(fuser, j, systems.get(peer.name), question) for j, peer in enumerate(fuser.peers)]
    primary = p.stream(pe.ids)
    with _active(fuser, peers, pe.ends):
        probs = primary.advance_to(pe.ids).probs
    lead = p.answer_lead.encode()
    out = FusedOutput(text="", token_ids=[])
    for _ in range(max_tokens):
        choice = int(probs.argmax())
        out.steps += 1
        if choice in p.table.stop_ids or choice in p.table.special_ids:
            out.finish_reason = "stop"
            break
        out.token_ids.append(choice)
        text = valid_prefix(p.table.text_bytes(out.token_ids))
        if any(s and s in text for s in stop):
            out.finish_reason = "stop"
            break
        if fuser.prompt_only:
            probs = primary.advance_to(primary.ids + [choice]).probs
            continue
        for m in peers:
            _follow(m, text, p.answer_lead, pe.question_chars)
        out.fused_steps += 1
        with _active(fuser, peers, [pe.question_chars + len(text)]):
            probs = primary.advance_to(primary.ids + [choice]).probs
    out.text = _cut_stops(valid_prefix(_strip_lead(p.table.text_bytes(out.token_ids), lead)), stop)
    out.decode_s = time.perf_counter() - t0
    out.forward_s = {p.name: primary.forward_s, **{m.stream.lm.name: m.stream.forward_s for m in peers}}
    out.fed_tokens = {p.name: primary.fed_total, **{m.stream.lm.name: m.stream.fed_total for m in peers}}
    return out


def _start_peer(fuser: LatentFuser, j: int, system: str | None, question: str) -> _PeerMemory:
    peer = fuser.peers[j]
    enc = encode_prompt(peer, system, question)
    stream = peer.stream(enc.ids, hidden_layers=tuple(fuser.peer_hidden[j]))
    step = stream.advance_to(enc.ids)
    return _PeerMemory(stream=stream, prompt_ends=enc.ends, states=[h for h in step.new_hidden], ends=list(enc.ends))


def _follow(m: _PeerMemory, text: str, from_lead: str, question_chars: int) -> None:
    """Move a peer to the committed ``text``: crop ids, cache and hidden states; feed the rest."""
    mine = adapt(text, from_lead, m.stream.lm.answer_lead)
    c_ids, c_ends = continuation_ends(m.stream.lm, mine, question_chars, len(mine) - len(text)) if mine else ([], [])
    step = m.stream.advance_to(m.stream.prompt_ids + c_ids)
    m.update(step.new_hidden, step.cropped, m.prompt_ends + c_ends)
