"""Training and scoring a :class:`~workers.fusion.mot.LatentFuser` on multiple-choice data.

Each item's options are scored as continuations of the question (log-likelihood per byte under
the fused primary); the loss is cross-entropy over the options against the gold one. The peers
are frozen, so their hidden states at the interaction depths are computed ONCE per (item, option)
and cached; each step then runs only the primary (gradients flow through its frozen layers above
the first interaction point into the interaction layers, nothing else trains).

Example::

    >>> report = train_fuser(fuser, items, TrainConfig(epochs=1), out_dir="fuser/")   # doctest: +SKIP
    >>> report["seconds"], report["losses"][-1]                                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from pydantic import BaseModel

from workers.fusion.align import Encoded, encode_pair
from aggregators.latent.data import McItem
from workers.fusion.mot import LatentFuser, visible

log = logging.getLogger(__name__)

MC_SYSTEM = "Answer the question."
"""The one system prompt every model gets when scoring options (base models: a preamble)."""


class TrainConfig(BaseModel):
    epochs: int = 1
    lr: float = 1e-3
    scale: float = 8.0            # options' per-byte log-likelihoods are multiplied by this in the CE
    accumulate: int = 4           # items per optimiser step
    max_seconds: float = 540.0    # stop (and save) when the budget is spent
    seed: int = 0
    check_every: int = 40         # with dev items: score them every this many training items


@dataclass
class PeerCache:
    """Frozen peer states of one item: ``states[j][i]`` is [C, S_j, d_j], ``ends[j]`` is [C, S_j]."""

    states: list[list[torch.Tensor]]
    ends: list[torch.Tensor]


def _pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (n - len(s)) for s in seqs])


def peer_cache(fuser: LatentFuser, item: McItem) -> PeerCache:
    """Every peer's hidden states (at its interaction depths) for every option of ``item``."""
    states, ends = [], []
    for peer, hidden_idx in zip(fuser.peers, fuser.peer_hidden):
        encs = [encode_pair(peer, MC_SYSTEM, item.question, c) for c in item.choices]
        ids = _pad([e.ids for e in encs], peer.tokenizer.pad_token_id or 0).to(peer.device)
        mask = _pad([[1] * len(e.ids) for e in encs], 0).to(peer.device)
        with torch.no_grad():
            out = peer.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        states.append([out.hidden_states[h].to(torch.bfloat16) for h in hidden_idx])
        ends.append(_pad([e.ends for e in encs], 10**9).to(peer.device))  # padding: never visible
    return PeerCache(states=states, ends=ends)


def option_scores(fuser: LatentFuser, item: McItem, cache: PeerCache | None, fused: bool = True) -> torch.Tensor:
    """[C] per-byte log-likelihood of each option under the (fused) primary; differentiable."""
    p = fuser.primary
    encs: list[Encoded] = [encode_pair(p, MC_SYSTEM, item.question, c) for c in item.choices]
    ids = _pad([e.ids for e in encs], p.tokenizer.pad_token_id or 0).to(p.device)
    mask = _pad([[1] * len(e.ids) for e in encs], 0).to(p.device)
    decoder = p.model.get_decoder()
    if fused and cache is not None:
        p_ends = _pad([e.ends for e in encs], -1).to(p.device)
        allowed = visible(p_ends, torch.cat(cache.ends, dim=1))
        fuser._ctx = ([[s.float() for s in per] for per in cache.states], allowed)
    try:
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        fuser._ctx = None
    head = p.model.get_output_embeddings()
    scores = []
    for c, (e, choice) in enumerate(zip(encs, item.choices)):
        pos = torch.arange(e.n_prompt - 1, len(e.ids) - 1, device=p.device)
        logits = _softcap(p, head(hidden[c, pos]).float())[:, : p.table.size]
        target = torch.tensor(e.ids[e.n_prompt:], device=p.device)
        lp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()
        scores.append(lp / max(1, len(choice.encode("utf-8"))))
    return torch.stack(scores)


def _softcap(lm: Any, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(lm.model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def picks_gold(fuser: LatentFuser, item: McItem, cache: PeerCache | None, *, fused: bool = True) -> bool:
    """Whether the (fused, else lone) primary scores ``item``'s gold option highest."""
    with torch.no_grad():
        return int(torch.argmax(option_scores(fuser, item, cache, fused=fused))) == item.gold


def dev_accuracy(fuser: LatentFuser, items: Sequence[McItem], caches: Sequence[PeerCache]) -> float:
    """Accuracy of the fused primary on ``items`` (their peer caches precomputed)."""
    return sum(picks_gold(fuser, it, c) for it, c in zip(items, caches)) / len(items) if items else 0.0


def train_fuser(fuser: LatentFuser, items: Sequence[McItem], cfg: TrainConfig, *, progress: bool = True,
                caches: list[PeerCache] | None = None, dev: Sequence[McItem] = ()) -> dict[str, Any]:
    """Train the interaction layers on ``items``; returns losses, timings and sizes.

    With ``dev`` items (never trained on), the fused primary is scored on them before training (the
    zero gates: exactly the primary), every ``cfg.check_every`` items and at the end; the best state
    is kept, ties to the earliest. So a run that only hurts on ``dev`` ends as the primary itself
    (``report["dev"]["kept_after_items"] == 0``), never as a fuser worse than its primary there."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if caches is None:
        caches = [peer_cache(fuser, it) for it in tqdm(items, desc="caching peer states", disable=not progress)]
    dev_caches = [peer_cache(fuser, it) for it in tqdm(dev, desc="caching dev peer states", disable=not progress)]
    cache_s = time.perf_counter() - t0
    checks: list[dict[str, float]] = []
    best: dict[str, Any] = {}

    def check(seen: int) -> None:
        if not dev:
            return
        fuser.interactions.eval()
        acc = dev_accuracy(fuser, dev, dev_caches)
        fuser.interactions.train()
        checks.append({"items": seen, "dev_acc": round(acc, 4)})
        if not best or acc > best["acc"]:
            best.update(acc=acc, items=seen, state=copy.deepcopy(fuser.interactions.state_dict()))

    opt = torch.optim.AdamW(fuser.interactions.parameters(), lr=cfg.lr, weight_decay=0.0)
    order = list(range(len(items)))
    losses: list[float] = []
    stopped = False
    bar = tqdm(total=cfg.epochs * len(items), desc="training fuser", disable=not progress)
    fuser.interactions.train()
    check(0)
    for _ in range(cfg.epochs):
        random.Random(cfg.seed + len(losses)).shuffle(order)
        for n, i in enumerate(order):
            scores = option_scores(fuser, items[i], caches[i])
            loss = torch.nn.functional.cross_entropy(cfg.scale * scores[None], torch.tensor([items[i].gold]))
            (loss / cfg.accumulate).backward()
            losses.append(float(loss.detach()))
            if (n + 1) % cfg.accumulate == 0:
                opt.step()
                opt.zero_grad()
            if len(losses) % cfg.check_every == 0:
                check(len(losses))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if time.perf_counter() - t0 > cfg.max_seconds:
                stopped = True
                break
        if stopped:
            break
    opt.step()
    opt.zero_grad()
    bar.close()
    report: dict[str, Any] = {}
    if dev:
        if not checks or checks[-1]["items"] != len(losses):
            check(len(losses))
        fuser.interactions.load_state_dict(best["state"])
        report["dev"] = {"items": len(dev), "primary_acc": checks[0]["dev_acc"], "kept_acc": round(best["acc"], 4),
                         "kept_after_items": best["items"], "checks": checks}
        if best["items"] == 0:
            log.warning("fuse train: no checkpoint beat the primary alone on %d dev items (%.3f); the saved fuser "
                        "is the untrained one, i.e. exactly the primary", len(dev), best["acc"])
    fuser.interactions.eval()
    return {"losses": losses, "seconds": round(time.perf_counter() - t0, 1), "cache_seconds": round(cache_s, 1),
            "items": len(items), "steps": len(losses), "stopped_on_budget": stopped,
            "trainable_parameters": fuser.trainable_parameters(), **report}


def evaluate(fuser: LatentFuser, items: Sequence[McItem], *, progress: bool = True) -> dict[str, Any]:
    """Accuracy of the fused primary and of the primary alone on ``items``, with 95% CIs."""
    from tqdm import tqdm

    fused_ok, alone_ok = [], []
    for it in tqdm(items, desc="scoring", disable=not progress):
        fused_ok.append(picks_gold(fuser, it, peer_cache(fuser, it)))
        alone_ok.append(picks_gold(fuser, it, None, fused=False))
    return {"items": len(items), "fused": accuracy_ci(fused_ok), "primary": accuracy_ci(alone_ok)}


def accuracy_ci(correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy with a 95% Wilson interval."""
    n = len(correct)
    if n == 0:
        return {"acc": 0.0, "lo": 0.0, "hi": 0.0, "n": 0}
    p, z = sum(correct) / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"acc": round(p, 4), "lo": round(centre - half, 4), "hi": round(centre + half, 4), "n": n}


def plot_losses(losses: Sequence[float], path: str | Path, title: str = "fuser training loss") -> Path:
    """Loss curve (raw and a 20-step running mean) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.3, label="per item")
    w = 20
    if len(losses) >= w:
        run = [sum(losses[i - w:i]) / w for i in range(w, len(losses) + 1)]
        ax.plot(range(w - 1, len(losses)), run, label=f"running mean ({w})")
    ax.set_xlabel("item")
    ax.set_ylabel("cross-entropy over options")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
